"""One labelled collection split into train / val / test: seeded, stratified by class (every class in every split),
written as a file a run keeps (``split.json``) so that resuming and evaluating use exactly the same images."""

from __future__ import annotations

import json
import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence

from ..errors import ConfigError
from ..plumbing import write_json

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class DataSplit:
    """Which images (paths relative to ``root``) belong to which split, and the class order of the labels."""

    root: str
    classes: list[str]
    train: list[str]
    val: list[str]
    test: list[str]
    seed: int
    val_fraction: float
    test_fraction: float

    def files(self, split: str) -> list[str]:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return list(getattr(self, split))

    def save(self, path: str | os.PathLike) -> Path:
        """Write the split as JSON (atomically)."""
        return write_json(path, {"kind": "bagnet data split", **asdict(self)})

    @classmethod
    def load(cls, path: str | os.PathLike) -> "DataSplit":
        """Read a split file written by :meth:`save`; a clear error when it is not one."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise ConfigError(f"cannot read the data split {path}: {err}") from None
        if not isinstance(data, dict) or data.get("kind") != "bagnet data split":
            raise ConfigError(f"{path} is not a bagnet data split (split.json of a training run)")
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        missing = sorted(set(cls.__dataclass_fields__) - set(fields))
        if missing:
            raise ConfigError(f"{path}: the data split lacks {missing}")
        return cls(**fields)


def stratified_split(labels: Sequence[int], classes: Sequence[str], val_fraction: float, test_fraction: float,
                     seed: int) -> dict[str, list[int]]:
    """Indices of each split: within each class, a seeded shuffle, then ``round(n · test_fraction)`` images for test
    and ``round(n · val_fraction)`` for val (at least one each when the fraction is above 0), the rest for train. A
    class too small to appear in every split it is asked for is a :class:`ConfigError` naming it."""
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise ConfigError(f"val_fraction and test_fraction must be in [0, 1) and leave training images, got "
                          f"{val_fraction} and {test_fraction}", "val_fraction")
    rng = random.Random(seed)
    out: dict[str, list[int]] = {s: [] for s in SPLITS}
    by_class: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(int(label), []).append(i)
    for c in range(len(classes)):
        members = by_class.get(c, [])
        rng.shuffle(members)
        n_test = _count(len(members), test_fraction)
        n_val = _count(len(members), val_fraction)
        if n_test + n_val >= len(members):
            need = 1 + (val_fraction > 0) + (test_fraction > 0)
            raise ConfigError(f"class {classes[c]!r} has {len(members)} images: too few for a train/val/test split "
                              f"with val_fraction {val_fraction} and test_fraction {test_fraction} (every class "
                              f"needs at least {need}, one in each split)", "val_fraction")
        out["test"] += members[:n_test]
        out["val"] += members[n_test:n_test + n_val]
        out["train"] += members[n_test + n_val:]
    return {s: sorted(v) for s, v in out.items()}


def _count(n: int, fraction: float) -> int:
    return 0 if fraction <= 0 else max(1, round(n * fraction))


def split_folder(root: str | os.PathLike, val_fraction: float, test_fraction: float, seed: int,
                 classes: Optional[Sequence[str]] = None) -> DataSplit:
    """A :class:`DataSplit` of one folder of class folders (``root/CLASS/IMAGE``), classes in ``classes``' order
    (default: sorted folder names)."""
    from .folders import ImageFolderDataset

    root = Path(root)
    folder = ImageFolderDataset(root, classes=classes)
    labels = [t for _, t in folder.samples]
    parts = stratified_split(labels, folder.classes, val_fraction, test_fraction, seed)
    rel = [os.path.relpath(p, root) for p, _ in folder.samples]
    return DataSplit(str(root.resolve()), list(folder.classes), *([rel[i] for i in parts[s]] for s in SPLITS), seed=seed,
                     val_fraction=val_fraction, test_fraction=test_fraction)
