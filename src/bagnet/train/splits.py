"""The data of a training run: augmentation, train/hold-out/val splits, and the seeded per-epoch batches that make a
resumed run see exactly the samples and augmentations an uninterrupted one sees."""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch
from torch import Tensor
from torchvision import transforms

from ..errors import ConfigError
from ..data import training_data
from ..data.catalog import unsplit_folder
from ..data.folders import read_label_table
from ..data.split import DataSplit, split_folder, split_table
from .distributed import dist_info
from ..models.preprocess import IMAGENET_MEAN, IMAGENET_STD
from .config import TrainConfig

def train_transform(config: TrainConfig) -> Callable:
    steps: list[Callable] = [
        transforms.RandomResizedCrop(config.image_size, scale=(config.min_scale, 1.0), antialias=True),
        transforms.RandomHorizontalFlip(),
    ]
    if config.augment == "trivialaugment":
        steps.append(transforms.TrivialAugmentWide())
    elif config.augment == "randaugment":
        steps.append(transforms.RandAugment())
    steps += [transforms.ToTensor(), normalize(config)]
    if config.random_erasing > 0:
        steps.append(transforms.RandomErasing(p=config.random_erasing, value=0))
    return transforms.Compose(steps)


def mix_batch(images: Tensor, mixup: float, cutmix: float, rng: np.random.Generator
              ) -> tuple[Tensor, Optional[Tensor], float]:
    """MixUp or CutMix of a batch with a permutation of itself: ``(mixed, permutation, lam)``; the loss is
    ``lam · loss(labels) + (1 − lam) · loss(labels[permutation])``. ``(images, None, 1.0)`` when both are off."""
    n = images.shape[0]
    if n < 2 or (mixup <= 0 and cutmix <= 0):
        return images, None, 1.0
    use_cutmix = cutmix > 0 and (mixup <= 0 or rng.random() < 0.5)
    lam = float(rng.beta(cutmix, cutmix) if use_cutmix else rng.beta(mixup, mixup))
    perm = torch.from_numpy(rng.permutation(n)).to(images.device)
    if not use_cutmix:
        return images * lam + images[perm] * (1 - lam), perm, lam
    h, w = images.shape[-2:]
    cut = math.sqrt(1 - lam)
    ch, cw = int(h * cut), int(w * cut)
    cy, cx = int(rng.integers(h)), int(rng.integers(w))
    top, bottom = max(cy - ch // 2, 0), min(cy + ch // 2, h)
    left, right = max(cx - cw // 2, 0), min(cx + cw // 2, w)
    mixed = images.clone()
    mixed[..., top:bottom, left:right] = images[perm][..., top:bottom, left:right]
    return mixed, perm, 1 - (bottom - top) * (right - left) / (h * w)


def eval_transform(config: TrainConfig) -> Callable:
    return transforms.Compose([
        transforms.Resize(config.resize or config.image_size, antialias=True),
        transforms.CenterCrop(config.image_size),
        transforms.ToTensor(),
        normalize(config),
    ])


def normalize(config: TrainConfig) -> Callable:
    """The run's normalisation: its ``mean``/``std`` (those of ``--init``'s model unless set), else ImageNet's."""
    return transforms.Normalize(config.mean or IMAGENET_MEAN, config.std or IMAGENET_STD)


@dataclass
class Splits:
    train: torch.utils.data.Dataset
    holdout: Optional[torch.utils.data.Dataset]
    val: torch.utils.data.Dataset
    categories: list[str]
    test: Optional[torch.utils.data.Dataset] = None


#: The file in a run folder that records how a single folder was split (resume and evaluation read it).
SPLIT_FILE = "split.json"


def make_splits(config: TrainConfig) -> Splits:
    """Training, held-out, validation (and test) datasets; the hold-out is a fixed, seeded choice of training images;
    one folder of class folders is split by ``val_fraction``/``test_fraction`` (:func:`run_split`)."""
    train_t, eval_t = train_transform(config), eval_transform(config)
    window = None if config.intensity_window is None else tuple(config.intensity_window)
    data = training_data(config.data, train_t, eval_t, subset=config.train_subset, classes=config.classes,
                         split=run_split(config), window=window)  # type: ignore[arg-type]
    train_full, train_eval, val = data.train, data.train_eval, data.val
    targets = list(train_full.targets)
    rng = random.Random(config.seed)
    holdout_idx: list[int] = []
    if config.holdout_per_class:
        names = list(train_full.categories)
        for c in sorted(set(targets)):
            members = [i for i, t in enumerate(targets) if t == c]
            if config.holdout_per_class > len(members) // 2:
                raise ConfigError(
                    f"holdout_per_class={config.holdout_per_class} holds out more than half of class {names[c]!r}, "
                    f"which has {len(members)} training images; at most {len(members) // 2} for this dataset",
                    field="holdout_per_class")
            holdout_idx += sorted(rng.sample(members, config.holdout_per_class))
    held = set(holdout_idx)
    train_idx = [i for i in range(len(targets)) if i not in held]
    if config.limit_train is not None:
        train_idx = sorted(random.Random(config.seed + 1).sample(train_idx, min(config.limit_train, len(train_idx))))
    val_idx = list(range(len(val)))
    if config.limit_val is not None:
        val_idx = sorted(random.Random(config.seed + 2).sample(val_idx, min(config.limit_val, len(val_idx))))
    return Splits(
        train=torch.utils.data.Subset(train_full, train_idx),
        holdout=torch.utils.data.Subset(train_eval, holdout_idx) if holdout_idx else None,
        val=torch.utils.data.Subset(val, val_idx),
        categories=data.categories,
        test=data.test,
    )


def check_layout(config: TrainConfig) -> bool:
    """Whether the run's data is one folder of class folders that bagnet splits (True), or data with its own splits
    (False); a ConfigError naming the flag when the two do not fit (checked before anything is written)."""
    fractions = config.val_fraction > 0 or config.test_fraction > 0
    root = Path(config.data)
    if root.suffix.lower() == ".csv":
        if not root.is_file():
            raise ConfigError(f"the label table {root} does not exist", "data")
        if not any(r.split for r in read_label_table(root)) and config.val_fraction == 0:
            raise ConfigError(f"{root} has no split column: let bagnet split it with --val-fraction (e.g. 0.2; and "
                              f"--test-fraction for a test split; a group column keeps each group in one split)",
                              "val_fraction")
        return True
    named = config.data in ("imagenette", "fashion-mnist") or not root.is_dir()
    if named or ((root / "train").is_dir() and (root / "val").is_dir()):
        if fractions:
            raise ConfigError(f"--val-fraction/--test-fraction split one folder of class folders; {config.data} "
                              f"comes with its own splits", "val_fraction")
        return False
    if not fractions:
        raise unsplit_folder(root)
    if config.val_fraction == 0:
        raise ConfigError("--test-fraction needs --val-fraction too: choices are made on the validation split, "
                          "never on the test split", "val_fraction")
    return True


def train_targets(splits: Splits) -> list[int]:
    """The class of every training image of ``splits`` (through Subsets), without reading an image."""
    dataset, indices = splits.train, None
    while isinstance(dataset, torch.utils.data.Subset):
        picked = list(dataset.indices)
        indices = picked if indices is None else [picked[i] for i in indices]
        dataset = dataset.dataset
    targets = list(getattr(dataset, "targets"))
    return [int(targets[i]) for i in (indices if indices is not None else range(len(targets)))]


def class_balance(splits: Splits) -> tuple[Tensor, Tensor]:
    """``(class weights (C,), sample weights (N,))``: a class's weight N / (C · n_c), each training image's weight
    1 / n_c of its class (every class equally likely in a balanced epoch). A class without training images is an
    error naming it."""
    targets = torch.tensor(train_targets(splits))
    counts = torch.bincount(targets, minlength=len(splits.categories)).double()
    if (counts == 0).any():
        empty = [splits.categories[c] for c in (counts == 0).nonzero()[:, 0].tolist()]
        raise ConfigError(f"class(es) {empty} have no training images: a classifier cannot learn them", "data")
    weights = targets.numel() / (len(counts) * counts)
    return weights.float(), (1.0 / counts)[targets]


def run_split(config: TrainConfig) -> Optional[DataSplit]:
    """The split of a run whose data is one folder of class folders: the one saved in the run folder (a resumed run,
    an evaluation), else a new seeded, stratified split, saved there by the first process. None for other data."""
    if not check_layout(config):
        return None
    root = Path(config.data)
    saved = Path(config.out) / SPLIT_FILE
    if saved.is_file():
        split = DataSplit.load(saved)
        asked = (root.resolve(), config.val_fraction, config.test_fraction, config.seed)
        if (Path(split.root).resolve(), split.val_fraction, split.test_fraction, split.seed) != asked or (
                config.classes is not None and list(config.classes) != split.classes):
            raise ConfigError(f"{saved} records another split (root {split.root}, val {split.val_fraction}, test "
                              f"{split.test_fraction}, seed {split.seed}, classes {split.classes}) than this run asks "
                              f"for; use the run's own settings, or another --out", "val_fraction")
        return split
    if root.suffix.lower() == ".csv":
        split = split_table(root, config.val_fraction, config.test_fraction, config.seed, config.classes)
    else:
        split = split_folder(root, config.val_fraction, config.test_fraction, config.seed, config.classes)
    if config.intensity_window is not None:
        split = dataclasses.replace(split, window=[float(v) for v in config.intensity_window])
    if dist_info()[0] == 0:
        split.save(saved)
    return split


class SeededSamples(torch.utils.data.Dataset):
    """Wraps a dataset so that item ``(i, seed)`` is drawn with the torch RNG seeded by ``seed``: each sample's
    augmentation depends only on (run seed, epoch, index), whatever the worker, rank or resume point."""

    def __init__(self, dataset: torch.utils.data.Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, item: tuple[int, int]) -> Any:
        index, seed = item
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            sample = self.dataset[index]
        if isinstance(sample, tuple):  # report the index in the wrapped dataset
            sample = (sample[0], sample[1], index)
        return sample


class EpochBatches(torch.utils.data.Sampler):
    """Global batches of a seeded per-epoch permutation (or, with ``weights``, of a seeded draw with replacement in
    proportion to them: a class-balanced epoch); rank ``r`` of ``world`` takes ``batch[r::world]``."""

    def __init__(self, n: int, batch_size: int, seed: int, epoch: int, rank: int = 0, world: int = 1,
                 skip: int = 0, weights: Optional[Tensor] = None) -> None:
        if batch_size % world:
            raise ValueError(f"the global batch size {batch_size} must be divisible by the {world} processes")
        self.n, self.batch_size, self.seed, self.epoch = n, batch_size, seed, epoch
        self.rank, self.world, self.skip, self.weights = rank, world, skip, weights

    def __len__(self) -> int:
        return self.n // self.batch_size - self.skip

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        if self.weights is None:
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = torch.multinomial(self.weights.double(), self.n, replacement=True, generator=g).tolist()
        for b in range(self.skip, self.n // self.batch_size):
            batch = order[b * self.batch_size : (b + 1) * self.batch_size]
            yield [(i, sample_seed(self.seed, self.epoch, i)) for i in batch[self.rank :: self.world]]


def epoch_loader(dataset: torch.utils.data.Dataset, config: TrainConfig, epoch: int, rank: int = 0, world: int = 1,
                 skip: int = 0, weights: Optional[Tensor] = None) -> torch.utils.data.DataLoader:
    """Epoch ``epoch``'s training batches from batch ``skip`` on (:class:`EpochBatches` of :class:`SeededSamples`):
    the same images and augmentation whatever the worker, rank or resume point."""
    from ..data import collate

    sampler = EpochBatches(len(dataset), config.batch_size, config.seed, epoch, rank, world, skip,  # type: ignore
                           weights)
    return torch.utils.data.DataLoader(SeededSamples(dataset), batch_sampler=sampler, collate_fn=collate,
                                       num_workers=config.workers,
                                       generator=torch.Generator().manual_seed(config.seed + epoch))


def sample_seed(seed: int, epoch: int, index: int) -> int:
    return (seed * 1_000_003 + epoch * 10_007 + index) % (2**31)
