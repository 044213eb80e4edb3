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
    source: str = "folder"  # folder: root/CLASS/IMAGE; csv: root is a label table (path,label[,group][,split])
    groups: Optional[dict[str, int]] = None  # a table with groups: how many groups each split holds
    window: Optional[list[float]] = None  # the intensity window 16-bit and float images are read with (low, high)

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
        missing = sorted({"root", "classes", "train", "val", "test", "seed"} - set(fields))
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


def grouped_split(labels: Sequence[int], groups: Sequence[str], classes: Sequence[str], val_fraction: float,
                  test_fraction: float, seed: int) -> dict[str, list[int]]:
    """Like :func:`stratified_split`, but whole groups (a patient's images, a site's) go to one split: each group
    counts for the class most of its images have; within each class, groups in a seeded order fill test, then val,
    up to that class's share of images, the rest train. A class missing from a split asked for is a ConfigError."""
    members: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    by_class: dict[int, list[str]] = {}
    for g, idx in members.items():
        counts: dict[int, int] = {}
        for i in idx:
            counts[int(labels[i])] = counts.get(int(labels[i]), 0) + 1
        by_class.setdefault(max(sorted(counts), key=lambda c: counts[c]), []).append(g)
    rng = random.Random(seed)
    out: dict[str, list[int]] = {s: [] for s in SPLITS}
    for c in sorted(by_class):
        names = sorted(by_class[c])
        rng.shuffle(names)
        images = sum(len(members[g]) for g in names)
        targets = {"test": _count(images, test_fraction), "val": _count(images, val_fraction)}
        for g in names:
            split = next((s for s in ("test", "val") if targets[s] > 0), "train")
            out[split] += members[g]
            if split != "train":
                targets[split] -= len(members[g])
    for split in SPLITS:
        if split == "test" and test_fraction == 0 or split == "val" and val_fraction == 0:
            continue
        present = {int(labels[i]) for i in out[split]}
        absent = [classes[c] for c in range(len(classes)) if c not in present]
        if absent:
            raise ConfigError(f"no group of class(es) {absent} is left for the {split} split: the groups are too few "
                              f"or too large for val_fraction {val_fraction} and test_fraction {test_fraction}; "
                              f"every class needs a group in every split", "val_fraction")
    return {s: sorted(v) for s, v in out.items()}


def split_table(table: str | os.PathLike, val_fraction: float, test_fraction: float, seed: int,
                classes: Optional[Sequence[str]] = None) -> DataSplit:
    """A :class:`DataSplit` of a label table (:func:`bagnet.data.folders.read_label_table`): its own ``split``
    column when it has one (checked: every class in train and val, no group in two splits), else by whole groups
    when it has a ``group`` column, else stratified by image."""
    from .folders import CsvDataset

    table = Path(table)
    data = CsvDataset(table, classes=classes)
    rows, labels = data.rows, data.targets
    groups = [r.group for r in rows]
    if any(r.split for r in rows):
        if not all(r.split for r in rows):
            line = next(r.line for r in rows if not r.split)
            raise ConfigError(f"{table}, line {line}: the split column is empty here but set elsewhere", "data")
        parts = {s: [i for i, r in enumerate(rows) if r.split == s] for s in SPLITS}
        _check_hand_split(table, rows, labels, data.categories, parts)
    elif all(groups):
        parts = grouped_split(labels, groups, data.categories, val_fraction, test_fraction, seed)  # type: ignore[arg-type]
    elif any(groups):
        line = next(r.line for r in rows if not r.group)
        raise ConfigError(f"{table}, line {line}: the group column is empty here but set elsewhere", "data")
    else:
        parts = stratified_split(labels, data.categories, val_fraction, test_fraction, seed)
    counts = {s: len({groups[i] for i in parts[s]}) for s in SPLITS} if all(groups) else None
    return DataSplit(str(table.resolve()), list(data.categories), *([rows[i].path for i in parts[s]] for s in SPLITS),
                     seed=seed, val_fraction=val_fraction, test_fraction=test_fraction, source="csv", groups=counts)


def _check_hand_split(table: Path, rows: Sequence, labels: Sequence[int], classes: Sequence[str],
                      parts: dict[str, list[int]]) -> None:
    where: dict[str, dict[str, int]] = {}
    for r in rows:
        if r.group:
            where.setdefault(r.group, {}).setdefault(r.split, r.line)
    spread = {g: s for g, s in where.items() if len(s) > 1}
    if spread:
        g, s = next(iter(spread.items()))
        raise ConfigError(f"{table}: group {g!r} is in the splits {', '.join(sorted(s))} (lines "
                          f"{', '.join(str(v) for v in s.values())}); a group's images (one patient) must stay in one "
                          f"split ({len(spread)} groups are spread)", "data")
    for split in ("train", "val"):
        present = {labels[i] for i in parts[split]}
        absent = [classes[c] for c in range(len(classes)) if c not in present]
        if absent:
            raise ConfigError(f"{table}: the {split} split has no image of class(es) {absent}", "data")


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
