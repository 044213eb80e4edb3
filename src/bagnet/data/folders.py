"""Folder datasets and batches: ImageFolder data that hands unreadable files on as :class:`Skipped` markers, the
collate function that drops them from a batch (and images a transform made non-finite), and the log that names each
skipped file once.

Unreadable images never stop a long run: datasets return a :class:`Skipped` marker in their place, the collate
function drops it from the batch and hands it to the caller, which reports each path once and counts them.
"""

from __future__ import annotations

import functools
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import torch
from PIL import Image
from torch import Tensor
from torchvision import datasets

from ..errors import ConfigError
from .images import IMAGE_EXTENSIONS, MAX_DATASET_ASPECT, ImageReadError, PathLike, load_image


@dataclass(frozen=True)
class Skipped:
    """Stands in a batch for a sample that could not be loaded."""

    path: str
    reason: str


@dataclass
class Batch:
    """A collated batch: images (B, 3, H, W), labels (B,), indices into the dataset, and the skipped samples."""

    images: Tensor
    labels: Tensor
    indices: Tensor
    skipped: list[Skipped]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def pin_memory(self) -> "Batch":
        """The batch in page-locked memory (DataLoader's ``pin_memory=True``: faster, asynchronous GPU copies)."""
        return Batch(self.images.pin_memory(), self.labels.pin_memory(), self.indices, self.skipped)


def pin_for(device: Any) -> bool:
    """Whether loaders feeding ``device`` should pin their batches: only for CUDA."""
    return device is not None and torch.device(device).type == "cuda"


class ImageFolderDataset(datasets.ImageFolder):
    """torchvision's ImageFolder (one sub-folder per class) that returns :class:`Skipped` for bad files.

    ``dataset[i]`` is ``(image, label, i)`` or ``Skipped``; ``categories`` holds readable class names. Labels follow
    ``classes`` when given (graded labels: none, mild, severe), else the sorted folder names; ``samples`` keeps only
    those files (paths relative to ``root``); ``window`` scales 16-bit and float images (:func:`window_to_8bit`).
    """

    def __init__(
        self,
        root: PathLike,
        transform: Optional[Callable[[Image.Image], Any]] = None,
        categories: Optional[Sequence[str]] = None,
        samples: Optional[Sequence[str]] = None,
        classes: Optional[Sequence[str]] = None,
        window: Optional[tuple[float, float]] = None,
    ) -> None:
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"dataset folder {root} does not exist")
        self._order = None if classes is None else [str(c) for c in classes]
        self.loader_fn = dataset_loader(window)
        super().__init__(str(root), transform=transform, loader=self.loader_fn, is_valid_file=_is_image_file)
        if samples is not None:
            keep = {str(root / s) for s in samples}
            self.samples = [s for s in self.samples if s[0] in keep]
            self.imgs = self.samples
            self.targets = [t for _, t in self.samples]
            if len(self.samples) != len(keep):
                raise ValueError(f"{len(keep) - len(self.samples)} listed samples are not images under {root}")
        self.categories: list[str] = list(categories) if categories is not None else list(self.classes)
        if len(self.categories) != len(self.classes):
            raise ValueError(f"{len(self.categories)} category names for {len(self.classes)} class folders in {root}")

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        found, _ = super().find_classes(directory)
        if self._order is None:
            return found, {c: i for i, c in enumerate(found)}
        missing, extra = sorted(set(self._order) - set(found)), sorted(set(found) - set(self._order))
        if missing or extra:
            raise ConfigError(
                f"--classes does not match the class folders of {directory}: "
                + "; ".join(filter(None, (f"no folder for {missing}" if missing else "",
                                          f"folders not listed: {extra}" if extra else ""))), "classes")
        return list(self._order), {c: i for i, c in enumerate(self._order)}

    def __getitem__(self, index: int) -> Union[tuple[Any, int, int], Skipped]:
        path, label = self.samples[index]
        return read_sample(path, label, index, self.transform, self.loader_fn)


def read_sample(path: str, label: int, index: int, transform: Optional[Callable[[Image.Image], Any]],
                loader: Optional[Callable[[str], Image.Image]] = None) -> Union[tuple[Any, int, int], Skipped]:
    """One dataset item: ``(image, label, index)``, or :class:`Skipped` for a file that cannot be read (``loader``:
    how to read it, default :func:`dataset_loader`'s)."""
    try:
        image = (loader or _dataset_loader)(path)
    except (ImageReadError, OSError) as err:  # a bad file must not end a long run: hand it to the caller
        return Skipped(path, str(err))
    if transform is not None:  # transform errors are programming errors: they propagate
        image = transform(image)
    bad = _non_finite(image)
    if bad:
        return Skipped(path, _non_finite_reason(bad, image.numel()))
    return image, label, index


def _non_finite(image: Any) -> int:
    """How many NaN or ±inf values a transformed image holds (0 for anything that is not a float tensor)."""
    if isinstance(image, Tensor) and image.is_floating_point():
        return int((~torch.isfinite(image)).sum())
    return 0


def _non_finite_reason(bad: int, values: int) -> str:
    return (f"its transform gave {bad} non-finite values (NaN or inf) of {values} (a division by a zero "
            f"standard deviation?); models would turn them into NaN logits")


def _dataset_loader(path: str) -> Image.Image:
    """How datasets read a file: :func:`load_image` with the dataset aspect-ratio bound (picklable for workers)."""
    return load_image(path, max_aspect=MAX_DATASET_ASPECT)


def dataset_loader(window: Optional[tuple[float, float]] = None) -> Callable[[str], Image.Image]:
    """How a dataset reads its files: :func:`load_image` with the dataset aspect-ratio bound and the intensity
    ``window`` of 16-bit and float images (picklable, for worker processes)."""
    if window is None:
        return _dataset_loader
    return functools.partial(load_image, max_aspect=MAX_DATASET_ASPECT, window=tuple(window))


def _is_image_file(path: str) -> bool:
    return path.lower().endswith(IMAGE_EXTENSIONS) and not os.path.basename(path).startswith(".")


def collate(samples: Sequence[Union[tuple[Any, int, int], Skipped]]) -> Batch:
    """Stack the loadable samples of a batch; the others are passed on in ``Batch.skipped``, and so are images with
    NaN or ±inf values (one check over the stacked batch: any dataset's items; files are named when read)."""
    good = [s for s in samples if not isinstance(s, Skipped)]
    skipped = [s for s in samples if isinstance(s, Skipped)]
    if not good:
        return Batch(torch.empty(0), torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long), skipped)
    shapes = {tuple(s[0].shape) for s in good}
    if len(shapes) > 1:
        raise ValueError(f"images of one batch must share a size, got {sorted(shapes)}: resize or crop them to one "
                         "size in the dataset's transform")
    images = torch.stack([s[0] for s in good])
    labels = torch.tensor([s[1] for s in good], dtype=torch.long)
    indices = torch.tensor([s[2] for s in good], dtype=torch.long)
    if images.is_floating_point():
        bad = (~torch.isfinite(images)).flatten(1).sum(1)
        if bool(bad.any()):
            skipped += [Skipped(f"item #{int(indices[i])}", _non_finite_reason(int(bad[i]), images[i].numel()))
                        for i in bad.nonzero()[:, 0].tolist()]
            keep = bad == 0
            images, labels, indices = images[keep], labels[keep], indices[keep]
    return Batch(images, labels, indices, skipped)


class SkipLog:
    """Reports each skipped file once (to a callback, default: stderr) and counts them."""

    def __init__(self, report: Optional[Callable[[str], None]] = None) -> None:
        self._report = report or (lambda msg: print(msg, file=sys.stderr))
        self.paths: dict[str, str] = {}

    def add(self, skipped: Sequence[Skipped]) -> None:
        for s in skipped:
            if s.path not in self.paths:
                self.paths[s.path] = s.reason
                self._report(f"skipped unreadable image {s.path}: {s.reason}")

    def __len__(self) -> int:
        return len(self.paths)


# ---------------------------------------------------------------------------------------------------- CSV lists
@dataclass(frozen=True)
class LabelRow:
    """One line of a label table: the image's path as written (relative to the table's folder), label, group."""

    path: str
    label: str
    group: Optional[str]
    split: Optional[str]
    line: int


def read_label_table(path: PathLike) -> list[LabelRow]:
    """The rows of a CSV with the columns ``path`` and ``label`` (and optionally ``group``: a patient, a site; and
    ``split``: train / val / test chosen by hand), checked: a missing column, an empty table, an empty path or label,
    a path given twice or an unknown split is a :class:`ConfigError` naming the file and line."""
    import csv

    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            raw = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise ConfigError(f"cannot read the label table {path}: {err}", "data") from None
    missing = [c for c in ("path", "label") if c not in columns]
    if missing:
        raise ConfigError(f"{path}: the label table needs the columns path,label[,group][,split]; it lacks "
                          f"{', '.join(missing)} (its columns: {', '.join(columns) or 'none'})", "data")
    rows, seen = [], {}
    for number, item in enumerate(raw, start=2):
        item = {(k or "").strip(): (v or "").strip() for k, v in item.items()}
        if not item.get("path") or not item.get("label"):
            raise ConfigError(f"{path}, line {number}: empty path or label", "data")
        split = item.get("split") or None
        if split is not None and split not in ("train", "val", "test"):
            raise ConfigError(f"{path}, line {number}: split must be train, val or test, got {split!r}", "data")
        if item["path"] in seen:
            raise ConfigError(f"{path}, line {number}: {item['path']} is listed twice (first on line "
                              f"{seen[item['path']]})", "data")
        seen[item["path"]] = number
        rows.append(LabelRow(item["path"], item["label"], item.get("group") or None, split, number))
    if not rows:
        raise ConfigError(f"{path}: the label table lists no images", "data")
    return rows


class CsvDataset(torch.utils.data.Dataset):
    """The images a label table lists (:func:`read_label_table`; paths relative to the table's folder), labels in
    ``classes``' order (default: the labels sorted), optionally only ``samples`` (paths as the table writes them).
    ``dataset[i]`` is ``(image, label, i)`` or :class:`Skipped` (a missing or unreadable file, named)."""

    def __init__(self, table: PathLike, transform: Optional[Callable[[Image.Image], Any]] = None,
                 classes: Optional[Sequence[str]] = None, samples: Optional[Sequence[str]] = None,
                 window: Optional[tuple[float, float]] = None) -> None:
        table = Path(table)
        rows = read_label_table(table)
        labels = sorted({r.label for r in rows})
        order = [str(c) for c in classes] if classes is not None else labels
        unknown = [r for r in rows if r.label not in order]
        if unknown:
            raise ConfigError(f"{table}, line {unknown[0].line}: label {unknown[0].label!r} is not among the classes "
                              f"{order} ({len(unknown)} rows with unknown labels)", "classes")
        if samples is not None:
            keep = set(samples)
            rows = [r for r in rows if r.path in keep]
            if len(rows) != len(keep):
                raise ValueError(f"{len(keep) - len(rows)} images of the saved split are no longer listed in {table}")
        index = {c: i for i, c in enumerate(order)}
        self.table, self.transform, self.rows = table, transform, rows
        self.loader_fn = dataset_loader(window)
        self.categories = self.classes = order
        self.samples = [(str(table.parent / r.path), index[r.label]) for r in rows]
        self.targets = [t for _, t in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Union[tuple[Any, int, int], Skipped]:
        path, label = self.samples[index]
        return read_sample(path, label, index, self.transform, self.loader_fn)
