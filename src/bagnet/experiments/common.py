"""What every experiment shares: the model's device, checked logits, result files (dataset iteration: bagnet.data)."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

import torch
from torch import Tensor, nn

from ..data import check_dataset
from ..plumbing import (RunOptions, check_logits, deprecated_option, eval_mode, model_dtype, run_options,
                        warn_run_fields)


@torch.no_grad()
def logits_of(model: nn.Module, images: Tensor, num_classes: int, name: str = "model") -> Tensor:
    """``model(images)`` in eval mode (images cast to the model's dtype), checked to be (N, num_classes), as fp64."""
    with eval_mode(model):
        out = model(images.to(dtype=model_dtype(model)))
    return check_logits(out, images.shape[0], name, num_classes).double()  # differences of logits are taken later: keep every bit the model produced


@dataclass(frozen=True, kw_only=True)
class DeprecatedRunFields:
    """The run options the experiments' Configs held before 0.2 (``Config(limit=…)``): keyword-only fields that still
    work for one release, with a DeprecationWarning; pass them to the experiment function instead."""

    batch_size: Optional[int] = deprecated_option()
    limit: Optional[int] = deprecated_option()
    seed: Optional[int] = deprecated_option()
    device: Optional[str] = deprecated_option()

    def __post_init__(self) -> None:
        warn_run_fields(self)


def start(name: str, models: Mapping[str, Any], dataset: Any, config: Any, defaults: RunOptions,
          minimum: int = 1, **options: Any) -> RunOptions:
    """What every experiment does first: its run options resolved (keyword arguments, else the deprecated Config
    fields, else ``defaults``), at least ``minimum`` models, and a dataset that yields (image, label) pairs."""
    run = run_options(config, defaults, **options)
    if len(models) < minimum:
        raise ValueError(f"{name} needs at least {('one', 'two')[minimum - 1] if minimum <= 2 else minimum} model"
                         f"{'s' if minimum > 1 else ''}, got {len(models)}")
    check_dataset(dataset)
    return run


def read_result(cls: type, path: str | os.PathLike) -> Any:
    """Rebuild a result dataclass from the JSON its ``save`` wrote."""
    data = json.loads(Path(path).read_text())
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})
