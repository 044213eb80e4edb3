"""What every experiment shares: checking a classifier and a dataset, batched iteration, result files."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence

import torch
from torch import Tensor, nn

from ..data import Batch, SkipLog, Skipped, collate

SCHEMA_VERSION = 1


def model_device(model: nn.Module, device: Any = None) -> torch.device:
    """The device to compute on: ``device`` if given, else where the model's parameters are."""
    if device is not None:
        return torch.device(device)
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def check_dataset(dataset: torch.utils.data.Dataset, name: str = "dataset") -> int:
    """Length of ``dataset``; a clear error when it is empty."""
    try:
        n = len(dataset)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{name} must be a map-style dataset with a length, got {type(dataset).__name__}") from None
    if n == 0:
        raise ValueError(f"{name} is empty: nothing to run the experiment on")
    return n


@torch.no_grad()
def logits_of(model: nn.Module, images: Tensor, num_classes: int, name: str = "model") -> Tensor:
    """``model(images)`` in eval mode (images cast to the model's dtype), checked to be (N, num_classes), as fp64."""
    was_training = model.training
    model.eval()
    param = next(model.parameters(), None)
    if param is not None and param.is_floating_point():
        images = images.to(dtype=param.dtype)
    try:
        out = model(images)
    finally:
        model.train(was_training)
    if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != images.shape[0]:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"{name} must return logits shaped (N, classes); for N={images.shape[0]} it returned {shape}")
    if out.shape[1] != num_classes:
        raise ValueError(f"{name} has {out.shape[1]} outputs but the dataset has {num_classes} classes")
    return out.double()  # differences of logits are taken later: keep every bit the model produced


def batches(dataset: torch.utils.data.Dataset, batch_size: int, limit: Optional[int], seed: int,
            skips: SkipLog, workers: int = 0) -> Iterator[Batch]:
    """Batches of the first ``limit`` samples of a seeded permutation (all samples when ``limit`` is None)."""
    n = check_dataset(dataset)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    if limit is not None:
        order = sorted(order[:limit])
    subset = _Indexed(dataset, order)
    loader = torch.utils.data.DataLoader(subset, batch_size=batch_size, collate_fn=collate, num_workers=workers,
                                         generator=torch.Generator().manual_seed(seed))
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
            raise TypeError(f"dataset item {index} must be (image, label) or (image, label, index), "
                            f"got {type(item).__name__}{'' if not isinstance(item, (tuple, list)) else f' of {len(item)}'}")
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


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    path.write_text(json.dumps({"schema_version": SCHEMA_VERSION, **data}, indent=2))


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    if not rows:
        path.write_text("")
        return
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def out_dir(path: str | os.PathLike) -> Path:
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    return out


def read_result(cls: type, path: str | os.PathLike) -> Any:
    """Rebuild a result dataclass from the JSON its ``save`` wrote."""
    import dataclasses

    data = json.loads(Path(path).read_text())
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})
