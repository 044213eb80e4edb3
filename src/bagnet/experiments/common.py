"""What every experiment shares: the model's device, checked logits, result files (dataset iteration: bagnet.data)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..plumbing import (SCHEMA_VERSION, check_logits, eval_mode, model_device, model_dtype, out_dir,  # noqa: F401
                        write_result_json as write_json, write_rows_csv as write_csv)


@torch.no_grad()
def logits_of(model: nn.Module, images: Tensor, num_classes: int, name: str = "model") -> Tensor:
    """``model(images)`` in eval mode (images cast to the model's dtype), checked to be (N, num_classes), as fp64."""
    with eval_mode(model):
        out = model(images.to(dtype=model_dtype(model)))
    return check_logits(out, images.shape[0], name, num_classes).double()  # differences of logits are taken later: keep every bit the model produced


def read_result(cls: type, path: str | os.PathLike) -> Any:
    """Rebuild a result dataclass from the JSON its ``save`` wrote."""
    data = json.loads(Path(path).read_text())
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})
