"""Runs the Python examples of README.md and docs/*.md as tests (Sybil), in order, one namespace per document, in a
fresh working folder. Examples that need Imagenette get a tiny stand-in (ten classes, a few synthetic images per
class, the official archive's layout) when the real copy is not where bagnet looks for it, so they run anywhere."""

from __future__ import annotations

import os
from pathlib import Path

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
    from bagnet.data import default_data_root

    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="bagnet-docs-"))
    namespace["_tmp"] = tmp
    namespace["_cwd"], namespace["_env"] = os.getcwd(), os.environ.get("BAGNET_DATA")
    if not (default_data_root() / "imagenette2-160" / "val").is_dir():
        _standin_imagenette(tmp / "data")
        os.environ["BAGNET_DATA"] = str(tmp / "data")
    os.chdir(tmp)


def _teardown(namespace: dict) -> None:
    import shutil

    os.chdir(namespace["_cwd"])
    shutil.rmtree(namespace["_tmp"], ignore_errors=True)
    if namespace["_env"] is None:
        os.environ.pop("BAGNET_DATA", None)
    else:
        os.environ["BAGNET_DATA"] = namespace["_env"]


if Sybil is not None:
    pytest_collect_file = Sybil(
        parsers=[PythonCodeBlockParser(), SkipParser()], patterns=["README.md", "docs/*.md"],
        setup=_setup, teardown=_teardown,
    ).pytest()
