"""The sticker attack that checks the certificates: projected sign-gradient ascent on a sticker's pixels at the
positions of a grid, recomputing only the image crop the reached evidence cells see."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..models.bagnet import BagNet
from ..models.meta import model_meta
from ..models.receptive import block_pixels, cell_block
from ..plumbing import eval_mode, option

from .certificates import DefenceConfig, affected_cells, defended_logits


@dataclass(frozen=True)
class AttackConfig:
    """Sticker attack: sign-gradient ascent on the sticker's pixels (in [0, 1] RGB) at grid positions.

    ``top_positions``: attack only the positions whose reachable cells hold the most evidence for the label over
    the strongest other class (the "strongest position found"), instead of every grid position (``None``). The
    defaults are the cheap attack ``bagnet certify`` runs unless told otherwise (its flags take them from here).
    """

    steps: int = option(10, "sticker attack steps per position (0: no attack)", min=0)
    step_size: float = option(0.1, "attack step size, in [0, 1] pixel units", min=0.0)
    position_stride: Optional[int] = option(None, "attack grid step in px (default: sticker/2)", min=1, metavar="PX")
    top_positions: Optional[int] = option(
        16, "attack only the N grid positions whose cells hold the most evidence for the label against the strongest "
            "other class (the strongest positions found; 0: every grid position, minutes per image on a CPU)",
        min=0, zero_means_none=True, metavar="N")
    restarts: int = option(1, "random restarts per position", min=1)
    batch_size: int = option(32, "positions attacked together", min=1)
    seed: int = option(0, "seed of the stickers' random starts", min=0)


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
