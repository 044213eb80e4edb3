"""Render the README's figures — tables and the sentences that quote them — from the result files, so that no
measured number in README.md is typed by hand.

Each rendered part sits between ``<!-- figures: SOURCE [VIEW] -->`` and ``<!-- /figures -->``; SOURCE names the file
(or folder) it is rendered from and VIEW which part (a table by default, ``notes`` for the sentences beside it).
The renderers live in ``figures_benchmarks.py`` (benchmarks/results/*.json) and ``figures_results.py`` (the shipped
models' files, docs/results). ``stray_figures`` finds measured quantities (a number with a unit: s, %, ×, img/s,
GiB, …) typed outside those parts in the sections that report measurements; the check fails on them too.

Usage:  python scripts/readme_figures.py           # rewrite the rendered parts of README.md
        python scripts/readme_figures.py --check   # exit 1 and show what differs if README.md is stale
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import figures_benchmarks as fb  # noqa: E402
import figures_results as fr  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BLOCK = re.compile(r"(<!-- figures: (?P<source>\S+)(?: (?P<view>[\w-]+))? -->\n)(?P<body>.*?)(<!-- /figures -->)",
                   re.S)

RENDERERS: dict[tuple[str, str], Callable[[Path], str]] = {
    ("docs/results", "table"): fr.results_brief,
    ("docs/results/robust", "table"): fr.robust_brief,
    ("src/bagnet/weights", "table"): fr.shipped_table,
    ("src/bagnet/weights", "notes"): fr.shipped_notes,
    ("benchmarks/results/heatmap.json", "table"): fb.heatmap_table,
    ("benchmarks/results/heatmap.json", "notes"): fb.heatmap_notes,
    ("benchmarks/results/device-cpu.json", "notes"): fb.device_cpu_notes,
    ("benchmarks/results", "gpu"): fb.gpu_figures,
    ("benchmarks/results/forward.json", "table"): fb.forward_table,
    ("benchmarks/results/forward.json", "notes"): fb.forward_notes,
    ("benchmarks/results/train.json", "table"): fb.train_table,
    ("benchmarks/results/train.json", "notes"): fb.train_notes,
    ("benchmarks/results/memory.json", "table"): fb.memory_table,
    ("benchmarks/results/memory.json", "notes"): fb.memory_notes,
    ("benchmarks/results/interactions.json", "table"): fb.interactions_table,
    ("benchmarks/results/interactions-224.json", "table"): fb.interactions_table,
}

# Sections whose measured figures must all be rendered; numbers in code, in `code spans` and in rendered parts are
# exempt. A measured quantity: a number followed by a unit of time, share, ratio, rate or size; a bound (≤ 1.2×)
# states a target or a tolerance, not a measurement.
MEASURED_SECTIONS = ("Heatmaps: exact per-pixel evidence", "Devices: CPU and GPU", "Models that ship",
                     "Certified robustness to adversarial stickers", "Experiments", "Benchmarks")
QUANTITY = re.compile(r"(?<![\w.\-])(?<![≤≥<>] )(?<![≤≥<>])\d+(?:,\d{3})*(?:\.\d+)?(?:[–-]\d+(?:\.\d+)?)?\s?"
                      r"(?:%|×(?!\s?\d)|s\b|ms\b|min\b|h\b|img/s|images/s|GiB|MiB|GB|[GT]FLOP/s|TMAC/s|points\b)")


# Renderers that also need the shell example just above their part (its source, as the documentation tests see it).
EXAMPLE_RENDERERS: dict[str, Callable[[Path, str], str]] = {
    "docs/results/example-times.json": fr.example_times,
}
FENCE = re.compile(r"(?ms)^```bash\n(.*?)^```")


def render(text: str) -> str:
    """``text`` with every figures part re-rendered from its source."""
    def replace(match: re.Match) -> str:
        key = (match.group("source"), match.group("view") or "table")
        if key[0] in EXAMPLE_RENDERERS:
            blocks = FENCE.findall(text[:match.start()])
            if not blocks:
                raise SystemExit(f"README.md: figures {key[0]!r} must follow a bash example")
            return match.group(1) + "\n" + EXAMPLE_RENDERERS[key[0]](ROOT / key[0], blocks[-1]) + "\n" + \
                match.group(5)
        if key not in RENDERERS:
            raise SystemExit(f"README.md: no renderer for figures {' '.join(key)!r}; known: "
                             f"{sorted(' '.join(k) for k in RENDERERS)}")
        return match.group(1) + "\n" + RENDERERS[key](ROOT / key[0]) + "\n" + match.group(5)

    return BLOCK.sub(replace, text)


def stray_figures(text: str) -> list[str]:
    """Measured quantities typed by hand in the sections that report measurements: 'SECTION: …context…'."""
    found = []
    for section in re.split(r"(?m)^(?=## )", text):
        title = section.splitlines()[0][3:].strip() if section.startswith("## ") else ""
        if title not in MEASURED_SECTIONS:
            continue
        prose = BLOCK.sub("", section)
        prose = re.sub(r"(?ms)^```.*?^```", "", prose)     # code blocks
        prose = re.sub(r"`[^`\n]*`", "``", prose)           # code spans
        prose = re.sub(r"<!--.*?-->", "", prose, flags=re.S)
        for m in QUANTITY.finditer(prose):
            context = prose[max(0, m.start() - 40):m.end() + 20].replace("\n", " ")
            found.append(f"{title}: …{context}…")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when README.md is stale")
    args = parser.parse_args()
    text = README.read_text()
    new = render(text)
    stray = stray_figures(new)
    if args.check:
        status = 0
        if new != text:
            sys.stdout.writelines(difflib.unified_diff(text.splitlines(True), new.splitlines(True), "README.md",
                                                       "rendered"))
            status = 1
        if stray:
            print("measured figures typed outside <!-- figures --> parts (render them from a results file):\n  "
                  + "\n  ".join(stray))
            status = 1
        return status
    README.write_text(new)
    if stray:
        print("warning: measured figures typed outside <!-- figures --> parts:\n  " + "\n  ".join(stray),
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
