"""What every experiment shares: the model's device, checked logits, result files (dataset iteration: bagnet.data)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..outputs import SCHEMA_VERSION, out_dir, write_result_json as write_json, write_rows_csv as write_csv  # noqa: F401


def model_device(model: nn.Module, device: Any = None) -> torch.device:
    """The device to compute on: ``device`` if given, else where the model's parameters are."""
    if device is not None:
        return torch.device(device)
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


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




def read_result(cls: type, path: str | os.PathLike) -> Any:
    """Rebuild a result dataclass from the JSON its ``save`` wrote."""
    import dataclasses

    data = json.loads(Path(path).read_text())
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})
