"""A short description of a BagNet for a given input size (used by the self-check)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from ..plumbing import deprecated_alias, eval_mode
from .bagnet import BagNet


@dataclass(frozen=True)
class ModelSummary:
    """Size and geometry of a BagNet for one input size."""

    name: str
    parameters: int
    patch_size: int
    stride: int
    input_size: tuple[int, int]
    evidence_size: tuple[int, int]
    logits_match_evidence: bool
    max_abs_difference: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@torch.no_grad()
def summarize_model(model: BagNet, image: torch.Tensor) -> ModelSummary:
    """Count parameters, run ``image`` (3, H, W) through the model and check logits == mean evidence."""
    x = image.unsqueeze(0) if image.dim() == 3 else image
    with eval_mode(model):
        evidence = model.evidence(x)
        logits = model(x)
    diff = (logits - evidence.mean(dim=(2, 3))).abs().max().item()
    scale = max(logits.abs().max().item(), 1e-12)
    return ModelSummary(
        name=model.name,
        parameters=sum(p.numel() for p in model.parameters()),
        patch_size=model.patch_size,
        stride=model.stride,
        input_size=(int(x.shape[-2]), int(x.shape[-1])),
        evidence_size=(int(evidence.shape[-2]), int(evidence.shape[-1])),
        logits_match_evidence=diff <= 1e-5 * scale + 1e-6,
        max_abs_difference=diff,
    )


#: Deprecated name of :func:`summarize_model` (until the next release).
summarize = deprecated_alias(summarize_model, "bagnet.models.summarize")
