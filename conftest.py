"""Runs the examples of README.md and docs/*.md as tests (Sybil): Python blocks in one namespace per document and
bash blocks through ``bash -e``, in order, in a fresh working folder (with ``configs/`` linked in). Examples that need
Imagenette get a tiny stand-in (ten classes, a few synthetic images per class, the official archive's layout), so
they run anywhere and fast; shell commands run with ``BAGNET_MAX_IMAGES=4`` (the documented cap on every
``--limit``). A block preceded by ``<!-- skip: next -->`` is not run; the text beside it says why."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
# The repository's tests find the project's shared data by saying where it is (bagnet itself never derives a data
# path from where it is installed): ../shared/data beside the checkout, unless BAGNET_DATA says otherwise.
if "BAGNET_DATA" not in os.environ and (ROOT.parent / "shared" / "data").is_dir():
    os.environ["BAGNET_DATA"] = str(ROOT.parent / "shared" / "data")

try:
    from sybil import Sybil
    from sybil.parsers.markdown import PythonCodeBlockParser, SkipParser
except ImportError:  # pragma: no cover - sybil is a dev dependency
    Sybil = None


def _standin_imagenette(root: Path) -> None:
    import numpy as np
    from PIL import Image

    from bagnet.data import IMAGENETTE_TABLE

    rng = np.random.default_rng(0)
    for split, count in (("train", 8), ("val", 6)):
        for label, (wnid, _, _) in enumerate(IMAGENETTE_TABLE):
            folder = root / "imagenette2-160" / split / wnid
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 255, (160, 160, 3), dtype=np.uint8) // 2 + 12 * label
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{wnid}_{i}.JPEG")


def _setup(namespace: dict) -> None:
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="bagnet-docs-"))
    namespace["_tmp"] = tmp
    namespace["_cwd"], namespace["_env"] = os.getcwd(), os.environ.get("BAGNET_DATA")
    _standin_imagenette(tmp / "data")
    os.environ["BAGNET_DATA"] = str(tmp / "data")
    (tmp / "configs").symlink_to(ROOT / "configs")
    os.chdir(tmp)


def _teardown(namespace: dict) -> None:
    import shutil

    os.chdir(namespace["_cwd"])
    shutil.rmtree(namespace["_tmp"], ignore_errors=True)
    if namespace["_env"] is None:
        os.environ.pop("BAGNET_DATA", None)
    else:
        os.environ["BAGNET_DATA"] = namespace["_env"]


def _run_bash(example) -> None:
    """A bash block, as a user would type it in the document's folder, with this Python's bin/ first on PATH."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "BAGNET_MAX_IMAGES": "4", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", example.parsed], cwd=os.getcwd(), env=env,
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise AssertionError(f"exit {done.returncode}\n--- stdout\n{done.stdout[-2000:]}\n--- stderr\n"
                             f"{done.stderr[-3000:]}")


if Sybil is not None:
    from sybil.parsers.markdown import CodeBlockParser

    pytest_collect_file = Sybil(
        parsers=[PythonCodeBlockParser(), CodeBlockParser(language="bash", evaluator=_run_bash), SkipParser()],
        patterns=["README.md", "docs/*.md"],
        setup=_setup, teardown=_teardown,
    ).pytest()
