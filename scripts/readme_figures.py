"""Render the measured figures of README.md and docs/*.md — tables, the sentences that quote them, and single
figures inside prose — from the result files, so that no measured number in the documentation is typed by hand.

Two kinds of rendered parts:

- blocks, between ``<!-- figures: SOURCE [VIEW] -->`` and ``<!-- /figures -->``: SOURCE names the file (or folder)
  they are rendered from and VIEW which part (a table by default, ``notes`` for the sentences beside it); the
  renderers live in ``figures_benchmarks.py`` (benchmarks/results/*.json) and ``figures_results.py`` (the shipped
  models' files, docs/results);
- inline figures, ``<!--fig EXPR-->VALUE<!--/fig-->``: VALUE is re-rendered as the Python expression EXPR, evaluated
  with the page's data files (declared once per page as ``<!-- figures-data: NAME=PATH ... -->``, JSON loaded) and
  the formatting helpers of ``INLINE_HELPERS`` (``pct(x)`` → "79.5", ``pts(a, b)`` → points between two shares, …).

``stray_figures`` finds measured quantities (a number with a unit of time, share, ratio, rate, size or work — "5 s",
"12 seconds", "3.5x", "20.7-fold", "300 MB", "16.26 GMAC", "1.3e-06", also inside `code spans` of prose) typed
outside rendered parts: in README.md's sections that report measurements (which must all exist: a renamed section
is an error, not a hole) and everywhere in docs/*.md. The check fails on them as on a stale page.

Usage:  python scripts/readme_figures.py           # rewrite the rendered parts of README.md and docs/*.md
        python scripts/readme_figures.py --check   # exit 1 and show what differs or is typed by hand
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from pathlib import Path
from typing import Any, Callable

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
    ("docs/results/attribution/comparison.csv", "table"): fr.attribution_table,
    ("docs/results/robust/bagnet33", "table"): fr.certify_table,
    ("docs/results/robust/bagnet17", "table"): fr.certify_table,
    ("docs/results/robust/attack", "table"): fr.attack_table,
    ("docs/results/imagenet-estimate.json", "table"): fr.imagenet_estimate,
    ("benchmarks/results/forward.json", "table"): fb.forward_table,
    ("benchmarks/results/forward.json", "notes"): fb.forward_notes,
    ("benchmarks/results/train.json", "table"): fb.train_table,
    ("benchmarks/results/train.json", "notes"): fb.train_notes,
    ("benchmarks/results/memory.json", "table"): fb.memory_table,
    ("benchmarks/results/memory.json", "notes"): fb.memory_notes,
    ("benchmarks/results/interactions.json", "table"): fb.interactions_table,
    ("benchmarks/results/interactions-224.json", "table"): fb.interactions_table,
    ("docs/results/shortcut.json", "table"): fr.shortcut_strategies,
    ("docs/results/transfer.json", "table"): fr.transfer_sweep,
    ("docs/results/transfer-25.json", "table"): fr.transfer_sweep,
    ("docs/results/transfer.json", "summary"): fr.transfer_summary,
    ("docs/results/transfer-25.json", "summary"): fr.transfer_summary,
    ("docs/results/transfer-50.json", "table"): fr.transfer_sweep,
    ("docs/results/transfer-50.json", "summary"): fr.transfer_summary,
    ("docs/results/sparsity-128px.json", "table"): fr.sparsity_table,
    ("docs/results/sparsity-20epochs.json", "table"): fr.sparsity_table,
    ("docs/results/sparsity-imagenette.json", "table"): fr.sparsity_table,
    ("docs/results/sparsity-canvas.json", "table"): fr.sparsity_table,
    ("docs/results/sparsity-canvas-precise-bn.json", "table"): fr.sparsity_table,
    ("docs/results/sparsity-photo.json", "table"): fr.sparsity_table,
    ("docs/results/sparsity-photo-56.json", "table"): fr.sparsity_table,
    ("docs/results/sparsity-photo-56-16epochs.json", "table"): fr.sparsity_table,
    ("docs/results/sparsity-photo-56-32epochs.json", "table"): fr.sparsity_table,
    ("docs/results/sparsity-photo-56-precise-bn.json", "table"): fr.sparsity_table,
    ("docs/results/sparsity-continued.json", "table"): fr.sparsity_table,
    ("docs/results/sparsity-freeze-bn.json", "table"): fr.sparsity_table,
    ("docs/results/sparsity-60epochs.json", "table"): fr.sparsity_table,
    ("benchmarks/results/index.json", "table"): fb.index_table,
    ("benchmarks/results/index.json", "notes"): fb.index_notes,
    ("benchmarks/results", "index-imagenet"): fb.index_imagenet,
    ("benchmarks/results/report.json", "table"): fb.report_table,
}

# README sections whose measured figures must all be rendered (each must exist); docs/*.md pages are guarded whole.
# Numbers in code blocks and in rendered parts are exempt. A measured quantity: a number followed by a unit of time,
# share, ratio, rate, size or work, or any number in scientific notation; a bound (≤ 1.2×) states a target or a
# tolerance, not a measurement, and so does a number in the same `code span` as a command-line flag (a setting).
MEASURED_SECTIONS = ("Heatmaps: exact per-pixel evidence", "Devices: CPU and GPU", "Models that ship",
                     "Certified robustness to adversarial stickers", "Experiments", "Benchmarks")
DOCS = "docs/*.md"
UNIT = (r"(?:%|×(?!\s?\d)|x\b|-?fold\b|µs\b|us\b|ms\b|s\b|sec(?:ond)?s?\b|min(?:ute)?s?\b|h\b|hours?\b|days?\b"
        r"|img/s|images?/s|[kKMGT]i?B\b|bytes\b|[GT]?FLOP/s|[GT]?FLOPs?\b|[kKMGT]?MAC(?:s|/s)?\b|points\b)")
NUMBER = r"\d+(?:,\d{3})*(?:\.\d+)?(?:[eE][-+−]?\d+)?(?:\s?[–-]\s?\d+(?:\.\d+)?)?"
QUANTITY = re.compile(r"(?<![\w.\-/])(?<![≤≥<>] )(?<![≤≥<>])(?:" + NUMBER + r"\s?" + UNIT
                      + r"|\d+(?:\.\d+)?[eE][-+−]?\d+)")
INLINE = re.compile(r"(?<!`)<!--fig (?P<expr>.+?)-->(?P<body>.*?)<!--/fig-->", re.S)  # not in a `code span`
DATA = re.compile(r"<!-- figures-data: (?P<pairs>[^>]*?) -->")


def _pct(x: float, digits: int = 1) -> str:
    return f"{100 * x:.{digits}f}"


def _num(x: float, digits: int = 1) -> str:
    return f"{x:.{digits}f}"


#: What an inline figure's expression can use besides the page's data: formatting helpers and a few builtins.
INLINE_HELPERS: dict[str, Callable] = {
    "pct": _pct,                                                        # share → percent: pct(0.795) = "79.5"
    "pts": lambda a, b, digits=1: _pct(a - b, digits),                  # difference of two shares, in points
    "num": _num,                                                        # num(1.857, 2) = "1.86"
    "ratio": lambda a, b, digits=2: _num(a / b, digits),                # a / b
    "sci": lambda x, digits=1: f"{x:.{digits}e}",                        # sci(3e-7, 0) = "3e-07"
    "row": lambda rows, **match: _row(rows, **match),                   # row(rows, model="vgg11", method="x")
    "abs": abs, "min": min, "max": max, "len": len, "sum": sum, "round": round, "int": int, "sorted": sorted,
    "str": str, "float": float, "zip": zip, "range": range, "enumerate": enumerate,
}


# Renderers that also need the shell example just above their part (its source, as the documentation tests see it).
EXAMPLE_RENDERERS: dict[str, Callable[[Path, str], str]] = {
    "docs/results/example-times.json": fr.example_times,
}
FENCE = re.compile(r"(?ms)^```bash\n(.*?)^```")


def render(text: str, page: str = "README.md") -> str:
    """``text`` with every figures block and inline figure re-rendered from its source."""
    def replace(match: re.Match) -> str:
        key = (match.group("source"), match.group("view") or "table")
        if key[0] in EXAMPLE_RENDERERS:
            blocks = FENCE.findall(text[:match.start()])
            if not blocks:
                raise SystemExit(f"{page}: figures {key[0]!r} must follow a bash example")
            return match.group(1) + "\n" + EXAMPLE_RENDERERS[key[0]](ROOT / key[0], blocks[-1]) + "\n" + \
                match.group(5)
        if key not in RENDERERS:
            raise SystemExit(f"{page}: no renderer for figures {' '.join(key)!r}; known: "
                             f"{sorted(' '.join(k) for k in RENDERERS)}")
        return match.group(1) + "\n" + RENDERERS[key](ROOT / key[0]) + "\n" + match.group(5)

    return render_inline(BLOCK.sub(replace, text), page)


def page_data(text: str, page: str) -> dict[str, Any]:
    """The data files a page declares (``<!-- figures-data: NAME=PATH ... -->``), loaded (JSON), by name."""
    data: dict[str, Any] = {}
    for match in DATA.finditer(text):
        for pair in match.group("pairs").split():
            name, _, rel = pair.partition("=")
            path = ROOT / rel
            if not name.isidentifier() or not rel or not path.is_file():
                raise SystemExit(f"{page}: figures-data {pair!r} must be NAME=PATH of an existing file")
            data[name] = json.loads(path.read_text()) if path.suffix == ".json" else _csv_rows(path)
    return data


def _csv_rows(path: Path) -> list[dict[str, Any]]:
    """A CSV file's rows as dicts, numbers as floats."""
    import csv

    def value(text: str) -> Any:
        try:
            return float(text)
        except ValueError:
            return text

    return [{k: value(v) for k, v in row.items()} for row in csv.DictReader(path.open())]


def _row(rows: list[dict[str, Any]], **match: Any) -> dict[str, Any]:
    """The one row of a table (a CSV's rows, a result's list of dicts) whose fields equal ``match``."""
    found = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
    if len(found) != 1:
        raise ValueError(f"{len(found)} rows match {match}")
    return found[0]


def render_inline(text: str, page: str = "README.md") -> str:
    """``text`` with every ``<!--fig EXPR-->VALUE<!--/fig-->`` re-rendered as EXPR evaluated on the page's data."""
    if not INLINE.search(text):
        return text
    namespace = {**INLINE_HELPERS, **page_data(text, page)}

    def replace(match: re.Match) -> str:
        expr = match.group("expr").strip()
        try:
            value = eval(expr, {"__builtins__": {}, **namespace})  # noqa: S307 - the project's own pages
        except Exception as err:
            raise SystemExit(f"{page}: inline figure {expr!r} failed: {type(err).__name__}: {err}") from None
        return f"<!--fig {match.group('expr')}-->{value}<!--/fig-->"

    return INLINE.sub(replace, text)


def missing_sections(text: str, sections: tuple[str, ...] = MEASURED_SECTIONS) -> list[str]:
    """Guarded section titles that no longer head a section of ``text`` (renamed or removed: guard them again)."""
    titles = {line[3:].strip() for line in text.splitlines() if line.startswith("## ")}
    return [title for title in sections if title not in titles]


def stray_figures(text: str, sections: tuple[str, ...] | None = MEASURED_SECTIONS) -> list[str]:
    """Measured quantities typed by hand: 'SECTION: …context…'. ``sections``: the guarded section titles (None: the
    whole text, as for the docs pages)."""
    found = []
    for section in re.split(r"(?m)^(?=## )", text):
        title = section.splitlines()[0][3:].strip() if section.startswith("## ") else ""
        if sections is not None and title not in sections:
            continue
        prose = BLOCK.sub("", section)
        prose = INLINE.sub("", prose)
        prose = re.sub(r"(?ms)^```.*?^```", "", prose)     # code blocks
        prose = re.sub(r"`[^`\n]*(?:--[\w-]|\w=)[^`\n]*`", "``", prose)  # code spans with a flag or name=: settings
        prose = re.sub(r"<!--.*?-->", "", prose, flags=re.S)
        for m in QUANTITY.finditer(prose):
            context = prose[max(0, m.start() - 40):m.end() + 20].replace("\n", " ")
            found.append(f"{title or '(top)'}: …{context}…")
    return found


def pages() -> list[tuple[Path, tuple[str, ...] | None]]:
    """The guarded pages: README.md (its measured sections) and every docs page (whole)."""
    return [(README, MEASURED_SECTIONS)] + [(p, None) for p in sorted(ROOT.glob(DOCS))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when a page is stale or holds a "
                                                             "measured figure typed by hand")
    args = parser.parse_args()
    status = 0
    for path, sections in pages():
        name = str(path.relative_to(ROOT))
        text = path.read_text()
        new = render(text, name)
        problems = stray_figures(new, sections)
        if sections is not None:
            problems += [f"guarded section {title!r} is missing (renamed? update MEASURED_SECTIONS)"
                         for title in missing_sections(new, sections)]
        if args.check and new != text:
            sys.stdout.writelines(difflib.unified_diff(text.splitlines(True), new.splitlines(True), name, "rendered"))
            status = 1
        elif not args.check and new != text:
            path.write_text(new)
        if problems:
            print(f"{name}: measured figures typed outside rendered parts (render them from a results file):\n  "
                  + "\n  ".join(problems), file=sys.stdout if args.check else sys.stderr)
            status = 1 if args.check else status
    return status


if __name__ == "__main__":
    sys.exit(main())
