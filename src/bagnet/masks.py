"""Masking images: what masked pixels are replaced with (fills), and blocks of a grid ranked by per-pixel scores.

Shared by the experiments (interaction, masking) and by the deletion/insertion curves of ``bagnet.attribution``,
so that every method and every model is masked in exactly the same way.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.transforms.functional import gaussian_blur

#: Fills: ``mean`` (the image's mean colour), ``zero`` (zero in the normalised input), ``blur`` (Gaussian blur).
FILLS = ("mean", "zero", "blur")


def check_fill(fill: str) -> None:
    """Raise a :class:`~bagnet.errors.ConfigError` (a ``ValueError``) naming the choices when ``fill`` is not one of
    :data:`FILLS`."""
    if fill not in FILLS:
        from .errors import ConfigError

        raise ConfigError(f"fill must be one of {FILLS}, got {fill!r}", field="fill")


def fill_image(image: Tensor, fill: str, sigma: float = 4.0) -> Tensor:
    """What masked pixels are replaced with, for one image (C, H, W)."""
    check_fill(fill)
    if fill == "zero":
        return torch.zeros_like(image)
    if fill == "mean":
        return image.mean(dim=(1, 2), keepdim=True).expand_as(image)
    kernel = 2 * int(round(2 * sigma)) + 1
    return gaussian_blur(image.unsqueeze(0), [kernel, kernel], [sigma, sigma])[0]


def fill_images(images: Tensor, fill: str, sigma: float = 4.0) -> Tensor:
    """:func:`fill_image` for every image of a batch (N, C, H, W)."""
    return torch.stack([fill_image(img, fill, sigma) for img in images])


def block_scores(pixel_scores: Tensor, block: int) -> Tensor:
    """Sum of per-pixel scores (N, H, W) over each block of a grid (N, H//block, W//block)."""
    n, h, w = pixel_scores.shape
    gh, gw = h // block, w // block
    cropped = pixel_scores[:, : gh * block, : gw * block]
    return cropped.reshape(n, gh, block, gw, block).sum(dim=(2, 4))


def block_order(pixel_scores: Tensor, block: int) -> Tensor:
    """Row-major block indices (N, blocks) from the highest summed score to the lowest (ties: lower index first)."""
    return block_scores(pixel_scores, block).flatten(1).argsort(dim=1, descending=True, stable=True)


def block_mask(order: Tensor, k: int, block: int, height: int, width: int) -> Tensor:
    """Boolean masks (N, H, W), true on the pixels of the first ``k`` blocks of each image's ``order``."""
    n = order.shape[0]
    gh, gw = height // block, width // block
    cells = torch.zeros(n, gh * gw, dtype=torch.bool)
    if k > 0:
        cells.scatter_(1, order[:, :k], True)
    grid = cells.reshape(n, gh, 1, gw, 1).expand(n, gh, block, gw, block).reshape(n, gh * block, gw * block)
    mask = torch.zeros(n, height, width, dtype=torch.bool)
    mask[:, : gh * block, : gw * block] = grid
    return mask


def mask_blocks(images: Tensor, fills: Tensor, order: Tensor, k: int, block: int) -> Tensor:
    """Images with their first ``k`` blocks in ``order`` (N, blocks; row-major block indices) replaced by ``fills``."""
    if k == 0:
        return images
    mask = block_mask(order.cpu(), k, block, images.shape[-2], images.shape[-1]).to(images.device)
    return torch.where(mask[:, None], fills, images)
