"""Seeded iteration: the one rule by which ``--limit N --seed S`` picks the same images in every command and function,
fixed samples, and batches of them (this process's shard under ``torchrun``) with progress."""

from __future__ import annotations

from typing import Any, Iterator, Optional, Sequence

import torch
from torch import Tensor

from .folders import Batch, Skipped, SkipLog, collate


def sample_path(dataset: torch.utils.data.Dataset, index: int) -> str:
    """File path of sample ``index`` of an ImageFolder-style dataset (through Subsets), or '#index'."""
    while isinstance(dataset, torch.utils.data.Subset):
        dataset = dataset.dataset
    samples = getattr(dataset, "samples", None)
    return samples[index][0] if samples is not None else f"#{index}"


def check_dataset(dataset: torch.utils.data.Dataset, name: str = "dataset") -> int:
    """Length of ``dataset``; a clear error when it is empty."""
    try:
        n = len(dataset)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{name} must be a map-style dataset with a length, got {type(dataset).__name__}") from None
    if n == 0:
        raise ValueError(f"{name} is empty: nothing to run on")
    return n


def subset_indices(n: int, limit: Optional[int], seed: int) -> list[int]:
    """The items ``--limit N --seed S`` pick from a dataset of ``n``, the same in every command and function: the
    first ``limit`` of a seeded permutation, sorted (the whole permutation when ``limit`` is None)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(order[:limit]) if limit is not None else order


def first_per_class(dataset: Any, per_class: int) -> list[int]:
    """Indices of the first ``per_class`` samples of each class, in class order (an ImageFolder's ``samples`` order:
    sorted file names), a fixed sample that does not depend on any seed."""
    firsts: dict[int, list[int]] = {}
    for i, (_, label) in enumerate(dataset.samples):
        firsts.setdefault(label, []).append(i)
    return [i for label in sorted(firsts) for i in firsts[label][:per_class]]


def seeded_subset(dataset: torch.utils.data.Dataset, limit: Optional[int], seed: int = 0) -> torch.utils.data.Dataset:
    """``dataset`` restricted to the items :func:`subset_indices` picks (the dataset itself when ``limit`` is None)."""
    if limit is None:
        return dataset
    return torch.utils.data.Subset(dataset, subset_indices(check_dataset(dataset), limit, seed))


def load_batch(dataset: torch.utils.data.Dataset, limit: Optional[int], seed: int = 0,
               skips: Optional[SkipLog] = None) -> tuple[Tensor, Tensor]:
    """The images (N, 3, H, W) and labels (N,) of the ``limit`` items :func:`subset_indices` picks, as one batch;
    unreadable ones go to ``skips``. Raises when none could be read."""
    skips = skips if skips is not None else SkipLog()
    got = list(batches(dataset, max(1, limit or check_dataset(dataset)), limit, seed, skips))
    if not got:
        raise ValueError(f"no readable images in the dataset ({len(skips.paths)} unreadable)")
    return torch.cat([b.images for b in got]), torch.cat([b.labels for b in got])


def batches(dataset: torch.utils.data.Dataset, batch_size: int, limit: Optional[int], seed: int,
            skips: SkipLog, workers: int = 0, pin_memory: bool = False) -> Iterator[Batch]:
    """Batches of the items :func:`subset_indices` picks (all samples, in a seeded order, when ``limit`` is None);
    under ``torchrun``, this process's shard of them (:func:`bagnet.parallel.shard`). ``pin_memory``: page-locked
    batches for fast copies to a GPU."""
    from ..parallel import shard

    n = check_dataset(dataset)
    order = shard(subset_indices(n, limit, seed))
    subset = _Indexed(dataset, order)
    loader = torch.utils.data.DataLoader(subset, batch_size=batch_size, collate_fn=collate, num_workers=workers,
                                         generator=torch.Generator().manual_seed(seed), pin_memory=pin_memory)
    for batch in loader:
        skips.add(batch.skipped)
        if len(batch):
            yield batch


def tracked_batches(dataset: torch.utils.data.Dataset, batch_size: int, limit: Optional[int], seed: int,
                    skips: SkipLog, desc: str, progress: bool = True, workers: int = 0,
                    pin_memory: bool = False) -> Iterator[Batch]:
    """:func:`batches` with a progress bar counted in images (rank 0's shard under ``torchrun``); raises when no
    image of the dataset could be read (by any process)."""
    from tqdm.auto import tqdm

    from ..parallel import is_main, merged_sum, world

    n = check_dataset(dataset)
    total = min(limit, n) if limit is not None else n
    size = world()[1]
    seen = 0
    with tqdm(total=-(-total // size), desc=desc, unit="img", disable=not progress or not is_main()) as bar:
        for batch in batches(dataset, batch_size, limit, seed, skips, workers, pin_memory):
            yield batch
            seen += len(batch)
            bar.update(len(batch))
    if merged_sum(seen) == 0:
        raise ValueError(f"no readable images in the dataset ({len(skips.paths)} unreadable)")


def ordered_batches(dataset: torch.utils.data.Dataset, indices: Sequence[int], batch_size: int, skips: SkipLog,
                    workers: int = 0) -> Iterator[Batch]:
    """Batches of ``dataset[indices]`` in exactly that order (no seed, no sharding: the caller decides who reads
    what); unreadable items go to ``skips``."""
    loader = torch.utils.data.DataLoader(_Indexed(dataset, list(indices)), batch_size=batch_size, collate_fn=collate,
                                         num_workers=workers)
    for batch in loader:
        skips.add(batch.skipped)
        if len(batch):
            yield batch


class _Indexed(torch.utils.data.Dataset):
    """``dataset[order[k]]`` as an ``(image, label, index)`` item: accepts the ``(image, label)`` pairs of torchvision
    and most user datasets as well as bagnet's own triples, and names what is wrong with any other item."""

    def __init__(self, dataset: torch.utils.data.Dataset, order: Sequence[int]) -> None:
        self.dataset, self.order = dataset, list(order)

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, k: int) -> Any:
        index = self.order[k]
        item = self.dataset[index]
        if isinstance(item, Skipped):
            return item
        if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
            got = f"a {type(item).__name__} of {len(item)}" if isinstance(item, (tuple, list)) else type(item).__name__
            raise TypeError(f"dataset item {index} must be (image, label) or (image, label, index), got {got}")
        image, label = item[0], item[1]
        if not isinstance(image, Tensor) or image.dim() != 3:
            what = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
            raise TypeError(f"dataset item {index}: the image must be a tensor (channels, H, W), got {what}; give "
                            "the dataset a transform such as model.preprocess")
        try:
            label = int(label)
        except (TypeError, ValueError):
            raise TypeError(f"dataset item {index}: the label must be a class index, got {label!r}") from None
        return image, label, index
