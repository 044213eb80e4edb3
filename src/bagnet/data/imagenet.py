"""The ImageNet validation split as people keep it, with the standard 1000-class labels in every layout.

Three layouts are recognised under ``root``:

- ``torchvision``: what :class:`torchvision.datasets.ImageNet` reads: the devkit (``ILSVRC2012_devkit_t12.tar.gz``,
  or the ``meta.bin`` torchvision makes from it) beside a ``val/`` folder, either of class folders or of the 50,000
  files flat (then the devkit's ground truth labels them);
- ``folders``: class folders named by WordNet id (``n01440764/…``), in ``root`` or ``root/val``;
- ``kaggle``: the flat ``ILSVRC2012_val_XXXXXXXX.JPEG`` files with the ``LOC_val_solution.csv`` label file of the
  Kaggle release (images in ``ILSVRC/Data/CLS-LOC/val``, ``val`` or ``root`` itself).

Labels are the standard indices (the position of the WordNet id among the 1000 sorted ids) and names are
torchvision's ImageNet class names, whatever the layout; samples are ordered by file name, so ``--limit N --seed S``
picks the same images from every layout. Nothing is extracted or written under ``root``.
"""

from __future__ import annotations

import csv
import io
import os
import re
import tarfile
from pathlib import Path
from typing import Any, Callable, Optional, Union

import torch

from .folders import Skipped, read_sample
from .images import IMAGE_EXTENSIONS
from ..models.preprocess import imagenet_categories

DEVKIT = "ILSVRC2012_devkit_t12.tar.gz"
KAGGLE_LABELS = "LOC_val_solution.csv"
WNID = re.compile(r"^n\d{8}$")
LAYOUTS = ("torchvision", "folders", "kaggle")


def imagenet_wnids() -> list[str]:
    """The 1000 ImageNet-1k WordNet ids in label order (sorted), as timm ships them (no download)."""
    from timm.data import ImageNetInfo

    wnids = list(ImageNetInfo().label_names())
    if len(wnids) != 1000 or wnids != sorted(wnids):
        raise RuntimeError("timm's ImageNet-1k synset list is not the 1000 sorted WordNet ids")
    return wnids


class ImageNetVal(torch.utils.data.Dataset):
    """ImageNet validation images with standard labels; ``dataset[i]`` is ``(image, label, i)`` or ``Skipped``.

    ``samples`` is a list of ``(path, label)`` ordered by file name, ``categories`` the 1000 class names and
    ``layout`` the layout found.
    """

    def __init__(self, root: Union[str, os.PathLike], transform: Optional[Callable[[Any], Any]] = None,
                 layout: Optional[str] = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"ImageNet folder {self.root} does not exist")
        self.layout = layout or detect_layout(self.root)
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        index = {w: i for i, w in enumerate(imagenet_wnids())}
        pairs = {"torchvision": _torchvision_pairs, "folders": _folder_pairs, "kaggle": _kaggle_pairs}[self.layout](
            self.root)
        unknown = sorted({w for _, w in pairs if w not in index})
        if unknown:
            raise ValueError(f"{self.root}: {len(unknown)} labels are not ImageNet-1k WordNet ids "
                             f"(e.g. {', '.join(unknown[:3])})")
        if not pairs:
            raise ValueError(f"{self.root}: no validation images found in its {self.layout} layout")
        self.samples: list[tuple[str, int]] = sorted(((str(p), index[w]) for p, w in pairs),
                                                     key=lambda s: (os.path.basename(s[0]), s[0]))
        self.targets = [t for _, t in self.samples]
        self.categories: list[str] = imagenet_categories()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Union[tuple[Any, int, int], Skipped]:
        path, label = self.samples[index]
        return read_sample(path, label, index, self.transform)


def detect_layout(root: Path) -> str:
    """Which of :data:`LAYOUTS` ``root`` holds; a clear error naming what was looked for otherwise."""
    if (root / "meta.bin").is_file() or (root / DEVKIT).is_file():
        return "torchvision"
    if _labels_csv(root) is not None:
        return "kaggle"
    if _wnid_folders(root) or _wnid_folders(root / "val"):
        return "folders"
    raise ValueError(
        f"{root} holds no ImageNet validation split that bagnet recognises; expected one of: {DEVKIT} or meta.bin "
        f"beside val/ (torchvision's layout), class folders named by WordNet id (n01440764/, in {root} or "
        f"{root / 'val'}), or the Kaggle release's {KAGGLE_LABELS} beside ILSVRC/Data/CLS-LOC/val/")


# ---------------------------------------------------------------------------------------------------- layouts
def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(IMAGE_EXTENSIONS)
                  and not p.name.startswith("."))


def _wnid_folders(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and WNID.match(p.name))


def _folder_pairs(root: Path) -> list[tuple[Path, str]]:
    return _pairs_in(_wnid_folders(root / "val") or _wnid_folders(root))


def _pairs_in(folders: list[Path]) -> list[tuple[Path, str]]:
    """Every image in WordNet-id class folders, with its folder's id."""
    return [(image, folder.name) for folder in folders for image in _images(folder)]


def _labels_csv(root: Path) -> Optional[Path]:
    for candidate in (root / KAGGLE_LABELS, root.parent / KAGGLE_LABELS):
        if candidate.is_file():
            return candidate
    return None


def _kaggle_pairs(root: Path) -> list[tuple[Path, str]]:
    labels_file = _labels_csv(root)
    assert labels_file is not None
    labels: dict[str, str] = {}
    with open(labels_file, newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"ImageId", "PredictionString"} <= set(reader.fieldnames):
            raise ValueError(f"{labels_file}: expected the columns ImageId and PredictionString, got "
                             f"{reader.fieldnames}")
        for row in reader:
            tokens = (row["PredictionString"] or "").split()
            if not tokens:
                raise ValueError(f"{labels_file}: image {row['ImageId']} has no label")
            labels[row["ImageId"]] = tokens[0]
    for folder in (root / "ILSVRC" / "Data" / "CLS-LOC" / "val", root / "val", root):
        images = _images(folder) if folder.is_dir() else []
        if images:
            break
    else:
        raise ValueError(f"{root}: {KAGGLE_LABELS} found but no images in ILSVRC/Data/CLS-LOC/val, val or {root}")
    missing = [p.name for p in images if p.stem not in labels]
    if missing:
        raise ValueError(f"{labels_file} has no label for {len(missing)} images (e.g. {missing[0]})")
    return [(p, labels[p.stem]) for p in images]


def _torchvision_pairs(root: Path) -> list[tuple[Path, str]]:
    folders = _wnid_folders(root / "val")
    if folders:
        return _pairs_in(folders)
    flat = _images(root / "val") if (root / "val").is_dir() else []
    if not flat:
        raise ValueError(f"{root}: the devkit is there but {root / 'val'} holds neither class folders nor images; "
                         f"extract ILSVRC2012_img_val.tar into {root / 'val'} (or let torchvision.datasets.ImageNet "
                         f"prepare it once)")
    val_wnids = _devkit_val_wnids(root)
    if len(val_wnids) != len(flat):
        raise ValueError(f"{root / 'val'} holds {len(flat)} images but the devkit labels {len(val_wnids)}; the flat "
                         f"layout needs all 50,000 validation images")
    return list(zip(flat, val_wnids))


def _devkit_val_wnids(root: Path) -> list[str]:
    """The WordNet id of every validation image in file-name order, from torchvision's ``meta.bin`` or the devkit."""
    meta = root / "meta.bin"
    if meta.is_file():
        _, val_wnids = torch.load(meta, weights_only=True)
        return list(val_wnids)
    try:
        from scipy.io import loadmat
    except ImportError as err:
        raise ImportError(f"reading {DEVKIT} needs scipy (pip install scipy)") from err
    with tarfile.open(root / DEVKIT, "r:gz") as tar:
        def read(name: str) -> bytes:
            member = next((m for m in tar.getmembers() if m.name.endswith(name)), None)
            if member is None or (f := tar.extractfile(member)) is None:
                raise ValueError(f"{root / DEVKIT} has no {name}")
            return f.read()

        synsets = loadmat(io.BytesIO(read("data/meta.mat")), squeeze_me=True)["synsets"]
        truth = read("data/ILSVRC2012_validation_ground_truth.txt").decode().split()
    id_to_wnid = {int(s[0]): str(s[1]) for s in synsets if int(s[4]) == 0}
    return [id_to_wnid[int(t)] for t in truth]

