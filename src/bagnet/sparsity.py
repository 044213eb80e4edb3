"""How sparse a BagNet's evidence is: one definition, used by evaluation, explanations, training logs and model cards.

For one image: take the evidence map of the predicted class with the classifier's bias excluded (``W · f`` at each
cell, the part that differs between cells), at the resolution the model is given (its own training resolution in
``bagnet evaluate``), and its magnitudes ``a = |evidence|`` over the ``n`` cells.

- **top-5 % share**: the share of ``Σ a`` carried by the ``k = ⌈0.05 · n⌉`` largest cells (1 when one cell carries
  everything; ``k / n`` when every cell carries the same).
- **Gini coefficient** of ``a``: ``Σ_i Σ_j |a_i − a_j| / (2 n Σ a)`` (0: every cell equal; → 1: one cell carries
  everything). Computed from the sorted values as ``(2 Σ_i i · a_(i)) / (n Σ a) − (n + 1) / n``, i = 1 … n.

A map that is zero everywhere has share and Gini NaN (nothing to distribute).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .models.bagnet import BagNet

TOP_FRACTION = 0.05


@dataclass(frozen=True)
class Sparsity:
    """Per image: the top-5 %-cell share and the Gini coefficient of |evidence| (see the module's definition)."""

    top_share: Tensor  # (N,)
    gini: Tensor  # (N,)

    def mean(self) -> dict[str, float]:
        """The means over images (NaN ones left out), as plain numbers for a results file."""
        return {"top5_share": _nanmean(self.top_share), "gini": _nanmean(self.gini)}


def map_sparsity(maps: Tensor, top: float = TOP_FRACTION) -> Sparsity:
    """The sparsity of evidence maps (N, h, w) (or (N, cells))."""
    a = maps.detach().double().flatten(1).abs()
    n = a.shape[1]
    if n == 0:
        raise ValueError("evidence maps without cells")
    total = a.sum(1)
    k = max(1, math.ceil(top * n))
    share = a.topk(k, dim=1).values.sum(1) / total
    ranks = torch.arange(1, n + 1, dtype=torch.float64)
    gini = 2 * (a.sort(dim=1).values * ranks).sum(1) / (n * total) - (n + 1) / n
    empty = total == 0
    return Sparsity(share.masked_fill(empty, float("nan")), gini.masked_fill(empty, float("nan")))


def unbiased_evidence(model: BagNet, images: Tensor) -> tuple[Tensor, Tensor]:
    """A BagNet's logits (N, C) and its class evidence with the classifier's bias excluded, ``W · f`` per cell
    (N, C, h, w), from one pass through the features: what the sparsity measure and the L1 penalty look at."""
    maps = F.conv2d(model.features(images), model.fc.weight[:, :, None, None])
    return maps.mean(dim=(2, 3)) + model.fc.bias, maps


@torch.no_grad()
def logits_and_sparsity(model: BagNet, images: Tensor) -> tuple[Tensor, Sparsity]:
    """A BagNet's logits for ``images`` and the sparsity of each image's predicted-class evidence (bias excluded),
    from one pass through the features."""
    logits, maps = unbiased_evidence(model, images)
    predicted = logits.argmax(1)
    chosen = maps[torch.arange(maps.shape[0], device=maps.device), predicted]
    return logits, map_sparsity(chosen)


def _nanmean(values: Tensor) -> float:
    kept = values[~values.isnan()]
    return float(kept.mean()) if kept.numel() else float("nan")
