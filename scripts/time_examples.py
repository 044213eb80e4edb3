"""Time every shell example of README.md as printed, on the real data, and write docs/results/example-times.json.

The document's examples run in order exactly as the documentation tests run them (Sybil, the same parsers; Python
blocks in one namespace, bash blocks through ``bash -e`` in one fresh folder with ``configs/`` linked in), but on the
real Imagenette (``$BAGNET_DATA``, else ``../shared/data`` beside the checkout) and without the tests' image cap.
Each bash command's wall time comes from bash's own trace (``set -x`` with ``$EPOCHREALTIME`` in ``PS4``, set
by the script).
``scripts/readme_figures.py`` then writes the time under each timed block (a ``docs/results/example-times.json``
figures part after it); a block edited since it was timed makes that check fail until this script runs again.

Usage:  python scripts/time_examples.py [--doc README.md] [--json docs/results/example-times.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from runinfo import run_info  # noqa: E402

TRACE = re.compile(r"^\+ (?P<t>\d+\.\d+) (?P<cmd>.*)$")
# Set inside the script: bash does not take PS4 from the environment when it runs as root.
PROLOGUE = "PS4='+ ${EPOCHREALTIME} '; set -x\n"


def command_times(trace: str, end: float, data_root: str = "") -> list[dict]:
    """[{command, seconds}] of the top-level commands in a ``bash -x`` trace whose PS4 is '+ $EPOCHREALTIME ';
    ``data_root`` (this machine's data folder, which bash expands into the trace) is written as ``$BAGNET_DATA``."""
    starts = [(float(m["t"]), m["cmd"].replace(data_root, "$BAGNET_DATA") if data_root else m["cmd"])
              for m in map(TRACE.match, trace.splitlines()) if m]
    out = []
    for i, (t, cmd) in enumerate(starts):
        stop = starts[i + 1][0] if i + 1 < len(starts) else end
        out.append({"command": cmd, "seconds": round(stop - t, 2)})
    return out


def main() -> int:
    from sybil import Sybil
    from sybil.parsers.markdown import CodeBlockParser, PythonCodeBlockParser, SkipParser

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--doc", type=Path, default=ROOT / "README.md")
    parser.add_argument("--json", type=Path, default=ROOT / "docs" / "results" / "example-times.json")
    args = parser.parse_args()
    if "BAGNET_DATA" not in os.environ and (ROOT.parent / "shared" / "data").is_dir():
        os.environ["BAGNET_DATA"] = str(ROOT.parent / "shared" / "data")
    data = Path(os.environ.get("BAGNET_DATA", "~/.cache/bagnet/data")).expanduser() / "imagenette2-160"
    if not (data / "val").is_dir():
        raise SystemExit(f"time_examples: the examples are timed on the real Imagenette; none at {data} "
                         f"(set BAGNET_DATA or run `bagnet fetch imagenette`)")
    examples: list[dict] = []

    def timed_bash(example) -> None:
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        env.pop("BAGNET_MAX_IMAGES", None)
        line = example.line
        print(f"{args.doc.name}:{line}: running", file=sys.stderr, flush=True)
        start = time.time()
        done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", PROLOGUE + example.parsed], env=env,
                              capture_output=True, text=True)
        end = time.time()
        if done.returncode != 0:
            raise SystemExit(f"{args.doc.name}:{line}: exit {done.returncode}\n{done.stderr[-3000:]}")
        commands = command_times(done.stderr, end, os.environ.get("BAGNET_DATA", ""))
        examples.append({"document": args.doc.name, "line": line, "source": example.parsed,
                         "seconds": round(end - start, 2), "commands": commands})
        print("  " + ", ".join(f"{c['command'][:40]} {c['seconds']:.1f} s" for c in commands), file=sys.stderr)

    sybil = Sybil(parsers=[PythonCodeBlockParser(), CodeBlockParser(language="bash", evaluator=timed_bash),
                           SkipParser()], patterns=[args.doc.name])
    document = sybil.parse(args.doc.resolve())
    work = Path(tempfile.mkdtemp(prefix="bagnet-times-"))
    (work / "configs").symlink_to(ROOT / "configs")
    cwd = os.getcwd()
    os.chdir(work)
    try:
        for example in document.examples():
            example.evaluate()
    finally:
        os.chdir(cwd)
        shutil.rmtree(work, ignore_errors=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    info = run_info()
    counts = {split: sum(1 for f in (data / split).rglob("*") if f.is_file()) for split in ("train", "val")}
    args.json.write_text(json.dumps({"run": info, "data": f"Imagenette2-160 ({counts['train']} train / "
                                                          f"{counts['val']} val images)",
                                     "examples": examples}, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {args.json} ({len(examples)} shell examples)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
