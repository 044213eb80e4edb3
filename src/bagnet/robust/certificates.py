"""Certified robustness to adversarial stickers, built on BagNet's locality.

Each evidence cell (i, j) sees only pixels ``[s·i, s·i+q) × [s·j, s·j+q)``. A sticker of p×p pixels at (y, x)
changes only the cells whose patch overlaps it: cell rows i with ``y − q < s·i < y + p`` — integers in a run of
``p + q − 1`` consecutive values — so at most ``w = ⌈(p + q − 1) / s⌉`` rows, and as many columns
(:func:`sticker_window`). Every sticker position therefore lies inside some w×w window of cells.

Two defences aggregate the evidence map (N, C, h, w) instead of averaging it:

- **clipping** (Clipped BagNet, Zhang et al. 2020): each cell's evidence is clipped to ``[low, high]`` before the sum.
  A sticker can move each cell of its window by at most the clip range, so the prediction y is certified when, for
  every window W, ``Σ e_y − Σ_W (e_y − low) > Σ e_c + Σ_W (high − e_c)`` for every other class c.
- **masking** (robust masking of PatchGuard, Xiang et al. 2021, without its detection threshold): evidence is
  clipped to ``[low, high]`` (``low = 0``: PatchGuard's ReLU) and, per class, the w×w window with the largest sum is
  removed before summing. For a sticker inside window W*, class c ≠ y can reach at most ``Σ_{outside W*} e_c`` (the
  removed window is at least as large as W*'s), and y keeps at least ``Σ_{outside W*} e_y − max_W Σ_{W∖W*} e_y``
  (W*'s cells at ``low`` = 0); certified when the second beats the first for every W* and every c.

The certificates are checked against an exhaustive search on a tiny model (tests), and :func:`sticker_attack` is a
real attack to check them with: projected sign-gradient ascent on the sticker's pixels at every position of a grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError
from ..models.bagnet import BagNet
from ..models.receptive import cells_reached, reach_window

DEFENCES = ("masking", "clipping")


def sticker_window(patch_size: int, stride: int, sticker: int) -> int:
    """Side, in evidence cells, of the window that a ``sticker``-px square sticker can reach: ⌈(p + q − 1) / s⌉."""
    if sticker < 1:
        raise ValueError(f"sticker must be >= 1 px, got {sticker}")
    return reach_window(patch_size, stride, sticker)


def affected_cells(patch_size: int, stride: int, sticker: int, y: int, x: int, cells: tuple[int, int]
                   ) -> tuple[range, range]:
    """The cell rows and columns whose patches overlap a ``sticker``-px square at pixel (y, x) (top-left)."""
    return cells_reached(patch_size, stride, y, x, sticker, sticker, cells)


@dataclass(frozen=True)
class DefenceConfig:
    """A defended prediction from a BagNet's evidence: ``masking`` or ``clipping``, for stickers of ``sticker`` px."""

    sticker: int = 32
    method: str = "masking"
    low: float = 0.0  # evidence is clipped below at this value
    high: Optional[float] = None  # ... and above at this one (required for clipping: it bounds the sticker's gain)

    def __post_init__(self) -> None:
        if self.method not in DEFENCES:
            raise ConfigError(f"method must be one of {DEFENCES}, got {self.method!r}")
        if self.method == "clipping" and self.high is None:
            raise ConfigError("clipping needs a finite upper bound `high`: it limits what a sticker can add")
        if self.high is not None and self.high <= self.low:
            raise ConfigError(f"high must exceed low, got low={self.low}, high={self.high}")
        if self.method == "masking" and self.low < 0:
            raise ConfigError("masking needs evidence clipped at low >= 0 (PatchGuard clips at 0)")
        if self.sticker < 1:
            raise ConfigError(f"sticker must be >= 1 px, got {self.sticker}")

    def label(self) -> str:
        rng = f"[{self.low:g}, {'∞' if self.high is None else f'{self.high:g}'}]"
        return f"{self.method} {rng} vs {self.sticker}px"


def clip(evidence: Tensor, config: DefenceConfig) -> Tensor:
    return evidence.clamp(min=config.low, max=config.high)


def window_sums(evidence: Tensor, window: int) -> Tensor:
    """Sums over every w×w window of cells (N, C, h−w+1, w'−w+1); the whole map when it is smaller than w."""
    h, w = evidence.shape[-2:]
    kh, kw = min(window, h), min(window, w)
    n, c = evidence.shape[:2]
    return F.avg_pool2d(evidence.reshape(n * c, 1, h, w), (kh, kw), stride=1).reshape(n, c, h - kh + 1, w - kw + 1) \
        * (kh * kw)


def defended_logits(evidence: Tensor, config: DefenceConfig, model: BagNet) -> Tensor:
    """Per-class scores (N, C) of the defended model (sums, not means: argmax is what counts)."""
    e = clip(evidence, config)
    total = e.sum(dim=(2, 3))
    if config.method == "clipping":
        return total
    window = sticker_window(model.patch_size, model.stride, config.sticker)
    return total - window_sums(e, window).flatten(2).amax(dim=2)


def certify(evidence: Tensor, config: DefenceConfig, model: BagNet) -> tuple[Tensor, Tensor]:
    """The defended prediction (N,) and whether no sticker of ``config.sticker`` px, anywhere, can change it (N,)."""
    evidence = evidence.double()
    e = clip(evidence, config)
    n, c, h, w = e.shape
    win = sticker_window(model.patch_size, model.stride, config.sticker)
    pred = defended_logits(evidence, config, model).argmax(1)
    total = e.sum(dim=(2, 3))  # (N, C)
    S = window_sums(e, win).flatten(2)  # (N, C, K): sum inside each candidate sticker window W*
    other = torch.ones(n, c, dtype=torch.bool, device=e.device)
    other[torch.arange(n), pred] = False
    if config.method == "clipping":
        count = window_sums(torch.ones_like(e[:, :1]), win).flatten(2)  # cells per window
        y_low = (total[..., None] - S)[torch.arange(n), pred] + config.low * count[:, 0]  # (N, K)
        c_high = total[..., None] - S + config.high * count  # (N, C, K)
    else:
        y_low = _masking_lower_bound(e[torch.arange(n), pred], win)  # (N, K)
        c_high = total[..., None] - S
    c_high = c_high.masked_fill(~other[..., None], float("-inf")).amax(dim=1)  # (N, K)
    return pred, (y_low > c_high).all(dim=1)


def _masking_lower_bound(e: Tensor, win: int) -> Tensor:
    """For maps (N, h, w) ≥ 0: for each window W*, Σ_{outside W*} e − max_W Σ_{W∖W*} e, shape (N, K)."""
    n, h, w = e.shape
    kh, kw = min(win, h), min(win, w)
    tops = [(i, j) for i in range(h - kh + 1) for j in range(w - kw + 1)]
    P = F.pad(e.cumsum(1).cumsum(2), (1, 0, 1, 0))  # integral image

    def rect(t: Tensor, l: Tensor, b: Tensor, r: Tensor) -> Tensor:  # sums of e[t:b, l:r], broadcast over indices
        return P[:, b, r] - P[:, t, r] - P[:, b, l] + P[:, t, l]

    ti = torch.tensor([t[0] for t in tops], device=e.device)
    tj = torch.tensor([t[1] for t in tops], device=e.device)
    win_sum = rect(ti, tj, ti + kh, tj + kw)  # (N, K)
    # the intersection of window a (W*) with window b is rows [top, bottom) × cols [left, right), empty if inverted
    top = torch.maximum(ti[:, None], ti[None, :])
    left = torch.maximum(tj[:, None], tj[None, :])
    bottom = torch.maximum(torch.minimum(ti[:, None], ti[None, :]) + kh, top)
    right = torch.maximum(torch.minimum(tj[:, None], tj[None, :]) + kw, left)
    overlap = rect(top, left, bottom, right)  # (N, K*, K)
    best_rest = (win_sum[:, None, :] - overlap).amax(dim=2)  # max over W of Σ_{W \ W*}
    total = e.sum(dim=(1, 2))
    return total[:, None] - win_sum - best_rest
