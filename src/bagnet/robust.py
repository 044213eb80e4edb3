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

import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import ConfigError
from .models.bagnet import BagNet, require_bagnet
from .models.meta import model_meta
from .models.receptive import block_pixels, cell_block, cells_reached, reach_window

from .plumbing import Result, eval_mode, model_device
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


# ---------------------------------------------------------------------------------------------------- attack
@dataclass(frozen=True)
class AttackConfig:
    """Sticker attack: sign-gradient ascent on the sticker's pixels (in [0, 1] RGB) at grid positions.

    ``top_positions``: attack only the positions whose reachable cells hold the most evidence for the label over
    the strongest other class (the "strongest position found"), instead of every grid position (``None``). The
    defaults are the cheap attack ``bagnet certify`` runs unless told otherwise (its flags take them from here).
    """

    steps: int = 10
    step_size: float = 0.1  # per step, in [0, 1] pixel units
    position_stride: Optional[int] = None  # grid step in px (None: the sticker size / 2)
    top_positions: Optional[int] = 16
    restarts: int = 1
    batch_size: int = 32  # positions attacked together
    seed: int = 0


def sticker_positions(height: int, width: int, sticker: int, step: int) -> list[tuple[int, int]]:
    """Top-left corners of a grid of sticker positions that always includes the bottom and right edges."""
    def axis(n: int) -> list[int]:
        last = n - sticker
        if last < 0:
            raise ValueError(f"a {sticker}-px sticker does not fit a {height}×{width} image")
        vals = list(range(0, last + 1, max(1, step)))
        return vals if vals[-1] == last else vals + [last]

    return [(y, x) for y in axis(height) for x in axis(width)]


def sticker_attack(
    model: BagNet,
    images: Tensor,
    labels: Tensor,
    sticker: int,
    defence: Optional[DefenceConfig] = None,
    config: AttackConfig = AttackConfig(),
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
) -> Tensor:
    """Whether each image (N, 3, H, W, normalised) is still classified as its label after the strongest sticker the
    attack finds (True: the attack failed). Attacks the defended prediction when ``defence`` is given.

    Exploits the BagNet's locality for speed, not for the result: a sticker changes only the cells whose patches it
    overlaps (:func:`affected_cells`), so only the image crop those cells see is run through the network and the
    rest of the evidence map is reused — the same scores as a full forward pass. The sticker's pixels are put in
    [0, 1] and normalised with ``mean``/``std`` (default: the model's own preprocessing, ``model_meta(model)``).
    """
    device = model.fc.weight.device
    preprocess = model_meta(model).preprocess
    mean = preprocess.mean if mean is None else mean
    std = preprocess.std if std is None else std
    m = torch.tensor(mean, device=device, dtype=images.dtype)[:, None, None]
    s = torch.tensor(std, device=device, dtype=images.dtype)[:, None, None]
    H, W = images.shape[-2:]
    positions = sticker_positions(H, W, sticker, config.position_stride or max(1, sticker // 2))
    generator = torch.Generator(device="cpu").manual_seed(config.seed)
    survived = torch.ones(images.shape[0], dtype=torch.bool)
    with eval_mode(model):
        for n in range(images.shape[0]):
            generator.manual_seed(config.seed)  # each image's attack starts alike, whatever batch it came in
            x0 = images[n : n + 1].to(device)
            y = int(labels[n])
            with torch.no_grad():
                base = model.evidence(x0)[0]  # (C, h, w)
            if int(_aggregate(base[None], defence, model).argmax(1)) != y:
                survived[n] = False
                continue
            todo = _rank_positions(base, y, positions, sticker, model, config.top_positions)
            for start in range(0, len(todo), config.batch_size):
                if _attack_positions(model, x0, base, y, todo[start : start + config.batch_size], sticker, defence,
                                     config, m, s, generator):
                    survived[n] = False
                    break
    return survived


def _aggregate(evidence: Tensor, defence: Optional[DefenceConfig], model: BagNet) -> Tensor:
    if defence is None:
        return evidence.mean(dim=(2, 3))
    return defended_logits(evidence, defence, model)


def _rank_positions(base: Tensor, y: int, positions: list[tuple[int, int]], sticker: int, model: BagNet,
                    top: Optional[int]) -> list[tuple[int, int]]:
    """All positions, or the ``top`` whose reachable cells hold the largest lead of class y over the runner-up."""
    if top is None or top >= len(positions):
        return positions
    other = base.clone()
    other[y] = float("-inf")
    lead = base[y] - other.amax(0)  # (h, w)
    cells = tuple(base.shape[-2:])
    score = []
    for py, px in positions:
        rows, cols = affected_cells(model.patch_size, model.stride, sticker, py, px, cells)  # type: ignore[arg-type]
        score.append(float(lead[rows.start : rows.stop, cols.start : cols.stop].sum()))
    order = sorted(range(len(positions)), key=lambda i: -score[i])
    return [positions[i] for i in order[:top]]


def _crops(model: BagNet, x0: Tensor, cells: tuple[int, int], positions: list[tuple[int, int]], sticker: int
           ) -> tuple[Tensor, Tensor, list[tuple[int, int, int, int]]]:
    """For each position: the image crop its reachable cells see, the sticker's mask in it, and the cell block."""
    blocks = [cell_block(model.patch_size, model.stride, py, px, sticker, sticker, cells) for py, px in positions]
    crops, masks = [], []
    for (py, px), block in zip(positions, blocks):
        oy, ox, ch, cw = block_pixels(model.patch_size, model.stride, block)
        crops.append(x0[0, :, oy : oy + ch, ox : ox + cw])
        mask = torch.zeros(1, ch, cw, device=x0.device, dtype=x0.dtype)
        mask[:, max(0, py - oy) : py - oy + sticker, max(0, px - ox) : px - ox + sticker] = 1
        masks.append(mask)
    return torch.stack(crops), torch.stack(masks), blocks


def sticker_scores(model: BagNet, base: Tensor, crop: Tensor, mask: Tensor, blocks: list[tuple[int, int, int, int]],
                   pixels: Tensor, m: Tensor, s: Tensor, defence: Optional[DefenceConfig]) -> Tensor:
    """Scores (k, C) of the image with sticker ``pixels`` (k, 3, ch, cw in [0, 1]) pasted into each crop: only the
    reachable cells are recomputed, the rest of the evidence map ``base`` (C, h, w) is reused."""
    cells = base.shape[-2:]
    local = model.evidence(crop * (1 - mask) + ((pixels - m) / s) * mask)  # (k, C, bh, bw)
    full = []
    for i, (top, left, bh, bw) in enumerate(blocks):
        pad = (left, cells[1] - left - bw, top, cells[0] - top - bh)
        keep = F.pad(torch.ones(1, bh, bw, device=base.device, dtype=base.dtype), pad)
        full.append(base * (1 - keep) + F.pad(local[i], pad))
    return _aggregate(torch.stack(full), defence, model)


def _attack_positions(model, x0, base, y, positions, sticker, defence, config, m, s, generator) -> bool:
    """True if a sticker at one of ``positions`` flips the prediction."""
    crop, mask, blocks = _crops(model, x0, tuple(base.shape[-2:]), positions, sticker)
    for _ in range(config.restarts):
        pixels = torch.rand(crop.shape, generator=generator).to(x0.device, x0.dtype)
        for step in range(config.steps + 1):
            pixels.requires_grad_(True)
            scores = sticker_scores(model, base, crop, mask, blocks, pixels, m, s, defence)
            other = scores.clone()
            other[:, y] = float("-inf")
            margin = scores[:, y] - other.amax(1)
            if bool((margin < 0).any()):
                return True
            if step == config.steps:
                break
            grad, = torch.autograd.grad(margin.sum(), pixels)
            with torch.no_grad():
                pixels = (pixels - config.step_size * grad.sign()).clamp(0, 1)
    return False


# ---------------------------------------------------------------------------------------------------- dataset
@dataclass(frozen=True)
class RobustnessResult(Result):
    """Clean, certified and attacked accuracy of a BagNet, undefended and under each defence, per sticker size.

    ``defences``: one dict per defence (defence, sticker, window, clean, certified; attacked and the clean/certified
    accuracy on the attacked subset, the first ``attacked_images``, None if not attacked); ``rows()`` returns them
    (the CSV), and the JSON keeps them under ``rows`` as before.
    """

    stem = "robustness"

    model: str
    images: int
    clean_undefended: float
    defences: list[dict[str, Any]]
    attacked_undefended: dict[str, Optional[float]] = field(default_factory=dict)  # sticker px → accuracy
    attacked_images: int = 0
    clean_undefended_attacked_subset: Optional[float] = None
    config: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["rows"] = data.pop("defences")
        return data

    def rows(self) -> list[dict[str, Any]]:
        return [dict(row) for row in self.defences]

    def figures(self) -> dict[str, Any]:
        """robustness.png: accuracies against sticker size."""
        from .viz import line_figure

        series: dict[str, tuple[list, list]] = {}
        for row in self.defences:
            for key in ("clean", "certified", "attacked"):
                if row.get(key) is not None:
                    xs, ys = series.setdefault(f"{row['defence']}: {key}", ([], []))
                    xs.append(row["sticker"])
                    ys.append(100 * row[key])
        und = {int(k): v for k, v in self.attacked_undefended.items() if v is not None}
        if und:
            series["undefended: attacked"] = (sorted(und), [100 * und[k] for k in sorted(und)])
        fig = line_figure(series, xlabel="sticker side (px)", ylabel="accuracy (%)",
                          title=f"{self.model}: clean {100 * self.clean_undefended:.1f} % ({self.images} images)")
        return {"robustness.png": fig}


def robustness(
    model: BagNet,
    dataset: torch.utils.data.Dataset,
    defences: Sequence[DefenceConfig],
    attack: Optional[AttackConfig] = None,
    limit: Optional[int] = None,
    attack_limit: Optional[int] = None,
    batch_size: int = 32,
    seed: int = 0,
    progress: bool = True,
    device: Any = None,
) -> RobustnessResult:
    """Certify every image of ``dataset`` (the first ``limit`` of a seeded order) under each defence; optionally
    attack the undefended and defended model on the first ``attack_limit`` of them (attacks cost far more).
    ``device``: where to compute (default: the model's device; the model is never moved)."""
    from .data import SkipLog, check_dataset, subset_indices, tracked_batches
    from .parallel import is_main, merged_dict, merged_sum

    require_bagnet(model, "certificates (they bound each patch's evidence)")
    if not defences:
        raise ValueError("give at least one defence")
    check_dataset(dataset)
    device = model_device(model, device)
    own = model_device(model)
    if own.type != device.type or (device.index is not None and own.index not in (None, device.index)):
        raise ValueError(f"the model is on {model_device(model)}, not on device={device}; move it first "
                         f"(model.to({str(device)!r})): bagnet never moves a model silently")
    skips = SkipLog()
    keys = ("clean", "certified", "attacked", "clean_sub", "certified_sub", "broken")
    counts: dict[int, dict[str, int]] = {i: dict.fromkeys(keys, 0) for i in range(len(defences))}
    stickers = sorted({d.sticker for d in defences})
    und_attacked = {p: 0 for p in stickers}
    clean_und, clean_und_sub, total, attacked_n = 0, 0, 0, 0
    # the attacked images are the first ``attack_limit`` of the seeded order, decided by position, not by batch
    position = {idx: p for p, idx in enumerate(subset_indices(len(dataset), limit, seed))}
    planned = 0 if attack is None else min(len(position), attack_limit or len(position))
    started, estimated = time.perf_counter(), False
    with eval_mode(model):
        for batch in tracked_batches(dataset, batch_size, limit, seed, skips, "certify", progress):
            x, labels = batch.images.to(device, model.fc.weight.dtype), batch.labels
            with torch.no_grad():
                ev = model.evidence(x)
                und_ok = ev.mean((2, 3)).argmax(1).cpu() == labels
                clean_und += int(und_ok.sum())
            sub = torch.tensor([attack is not None and (attack_limit is None or position[int(i)] < attack_limit)
                                for i in batch.indices], dtype=torch.bool)
            attacking = bool(sub.any())
            for i, d in enumerate(defences):
                pred, cert = certify(ev, d, model)
                ok = pred.cpu() == labels
                cert = cert.cpu()
                counts[i]["clean"] += int(ok.sum())
                counts[i]["certified"] += int((ok & cert).sum())
                if attacking:
                    counts[i]["clean_sub"] += int(ok[sub].sum())
                    counts[i]["certified_sub"] += int((ok & cert)[sub].sum())
                    held = sticker_attack(model, x[sub.to(x.device)], labels[sub], d.sticker, d, attack).cpu()
                    counts[i]["attacked"] += int(held.sum())
                    counts[i]["broken"] += int(((ok & cert)[sub] & ~held).sum())  # must stay 0
            if attacking:
                if not estimated and progress and is_main():
                    _say_attack_plan(model, x, stickers, defences, attack, planned)
                clean_und_sub += int(und_ok[sub].sum())
                for p in stickers:
                    held = sticker_attack(model, x[sub.to(x.device)], labels[sub], p, None, attack)
                    und_attacked[p] += int(held.sum())
                attacked_n += int(sub.sum())
                if not estimated and progress and is_main():  # the cost, measured on the first attacked batch
                    per_image = (time.perf_counter() - started) / attacked_n
                    print(f"certify: the first {attacked_n} attacked images took {per_image * attacked_n:.0f} s: "
                          f"about {per_image * planned / 60:.1f} min for all {planned}", file=sys.stderr)
                    estimated = True
            total += len(labels)
    counts, und_attacked = merged_sum(counts), merged_sum(und_attacked)
    clean_und, clean_und_sub, total, attacked_n = merged_sum([clean_und, clean_und_sub, total, attacked_n])
    rows = []
    for i, d in enumerate(defences):
        rows.append({"defence": d.label(), "method": d.method, "sticker": d.sticker, "low": d.low, "high": d.high,
                     "window_cells": sticker_window(model.patch_size, model.stride, d.sticker),
                     "clean": counts[i]["clean"] / total, "certified": counts[i]["certified"] / total,
                     "attacked": counts[i]["attacked"] / attacked_n if attacked_n else None,
                     "clean_attacked_subset": counts[i]["clean_sub"] / attacked_n if attacked_n else None,
                     "certified_attacked_subset": counts[i]["certified_sub"] / attacked_n if attacked_n else None,
                     "certified_but_flipped": counts[i]["broken"] if attacked_n else None})
    return RobustnessResult(
        model=model.name, images=total, clean_undefended=clean_und / total, defences=rows,
        attacked_undefended={str(p): (und_attacked[p] / attacked_n if attacked_n else None) for p in stickers},
        attacked_images=attacked_n,
        clean_undefended_attacked_subset=clean_und_sub / attacked_n if attacked_n else None,
        config={"attack": asdict(attack) if attack else None, "limit": limit, "attack_limit": attack_limit,
                "seed": seed},
        skipped=merged_dict(dict(skips.paths)),
    )


def _say_attack_plan(model: BagNet, x: Tensor, stickers: Sequence[int], defences: Sequence[DefenceConfig],
                     attack: AttackConfig, images: int) -> None:
    """The attack's planned work, said before it starts (it dominates certify's time)."""
    h, w = x.shape[-2:]
    per_image = 0
    for size in [d.sticker for d in defences] + list(stickers):  # each defence, then the undefended model per size
        grid = len(sticker_positions(h, w, size, attack.position_stride or max(1, size // 2)))
        per_image += min(grid, attack.top_positions or grid)
    print(f"certify: attacking {images} images: {per_image} sticker positions per image (all defences and sizes) × "
          f"{attack.steps} steps × {attack.restarts} restart(s) = {per_image * attack.steps * attack.restarts} "
          f"gradient steps per image", file=sys.stderr)


__all__ = [
    "AttackConfig", "DefenceConfig", "RobustnessResult", "affected_cells", "certify", "defended_logits",
    "robustness", "sticker_attack", "sticker_positions", "sticker_window", "window_sums",
]
