"""Experiment 1 — image scrambling: accuracy when the image is cut into n×n tiles that are shuffled.

A bag-of-local-features model whose patches fit inside a tile barely notices; a model that relies on the spatial
arrangement of parts loses accuracy. Every model sees the same scrambled images.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Optional, Sequence

from typing_extensions import Unpack
import numpy as np
import torch
from torch import Tensor, nn

from ..plumbing import (Result, RunKwargs, RunOptions, config_record, deprecated_option, model_device, option,
                        user_stacklevel)
from ..data import SkipLog, pin_for, tracked_batches
from ..models.meta import model_meta
from ..models.preprocess import to_pixels
from ..parallel import gather, item_generator, merged_dict, merged_sum
from .common import DeprecatedRunFields, logits_of, start


def scramble(images: Tensor, grid: int, generator: Optional[torch.Generator] = None, offset: int = 0) -> Tensor:
    """Cut each image of (N, C, H, W) into grid×grid tiles and put them back in a random order (one per image).

    H and W are first cropped (bottom/right) to multiples of ``grid``; grid 1 returns the images unchanged.
    ``offset`` shifts the tile grid by that many pixels down and right (the image is rolled before cutting and
    rolled back after, so the last tile row/column wraps around the border): tiles of a ViT's token size that do
    not coincide with its tokens.
    """
    if images.dim() != 4:
        raise ValueError(f"images must be (N, C, H, W), got {tuple(images.shape)}")
    n, c, h, w = images.shape
    if grid < 1 or grid > min(h, w):
        raise ValueError(f"grid must lie in [1, {min(h, w)}] for {h}×{w} images, got {grid}")
    if grid == 1:
        return images
    th, tw = h // grid, w // grid
    if not 0 <= offset < min(th, tw):
        raise ValueError(f"offset must lie in [0, {min(th, tw) - 1}] for {th}×{tw}-px tiles, got {offset}")
    if offset:
        rolled = torch.roll(images[:, :, : th * grid, : tw * grid], shifts=(-offset, -offset), dims=(2, 3))
        return torch.roll(scramble(rolled, grid, generator), shifts=(offset, offset), dims=(2, 3))
    tiles = images[:, :, : th * grid, : tw * grid].reshape(n, c, grid, th, grid, tw)
    tiles = tiles.permute(0, 2, 4, 1, 3, 5).reshape(n, grid * grid, c, th, tw)
    order = torch.stack([torch.randperm(grid * grid, generator=generator) for _ in range(n)]).to(images.device)
    tiles = tiles[torch.arange(n, device=images.device)[:, None], order]
    tiles = tiles.reshape(n, grid, grid, c, th, tw).permute(0, 3, 1, 4, 2, 5)
    return tiles.reshape(n, c, th * grid, tw * grid)


@dataclass(frozen=True)
class ScramblingConfig(DeprecatedRunFields):
    """The settings of :func:`scrambling` (run options are its keyword arguments)."""

    grids: tuple[int, ...] = option((1, 2, 4, 8, 16), "n of the n×n tile grids (1: unscrambled)", min=1, metavar="N")
    offset: int = option(0, "shift the tile grid by PX pixels (wrapping around the border): tiles that do not line "
                            "up with a ViT's tokens", min=0, metavar="PX")
    # deprecated: example images are shown with the first model's own preprocessing (its ModelMeta); removed in 0.3
    mean: Optional[tuple[float, ...]] = deprecated_option()
    std: Optional[tuple[float, ...]] = deprecated_option()

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mean is not None or self.std is not None:
            warnings.warn("ScramblingConfig(mean=, std=) is deprecated and stops working in bagnet 0.3: example "
                          "images are shown with the first model's own preprocessing (model.meta.preprocess)",
                          DeprecationWarning, stacklevel=user_stacklevel())


@dataclass(frozen=True)
class ScramblingResult(Result):
    """Top-1/top-5 per model and grid (grid 1 = the unscrambled image)."""

    stem = "scrambling"

    models: list[str]
    grids: list[int]
    tile_sizes: list[int]  # tile side in pixels for the images used
    images: int
    top1: dict[str, list[float]]
    top5: dict[str, list[float]]
    config: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    examples: Optional[np.ndarray] = field(default=None, repr=False, compare=False)  # (grids, H, W, 3) in [0, 1]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("examples")
        return d

    def merged(self, other: "ScramblingResult") -> "ScramblingResult":
        """One result with the models of both runs, which must have scrambled the same images the same way (same
        image count, grids, tile sizes, --limit, --seed and --offset); a model in both keeps this run's figures."""
        keys, defaults = ("limit", "seed", "offset"), {"offset": 0}  # results saved before --offset existed: 0
        mine = {k: self.config.get(k, defaults.get(k)) for k in keys}
        theirs = {k: other.config.get(k, defaults.get(k)) for k in keys}
        if (self.grids != other.grids or self.tile_sizes != other.tile_sizes or self.images != other.images
                or mine != theirs):
            raise ValueError(f"cannot merge scrambling results of different runs: grids {self.grids} vs {other.grids}, "
                             f"{self.images} vs {other.images} images, "
                             f"{mine} vs {theirs}")
        extra = [m for m in other.models if m not in self.models]
        return dataclasses.replace(
            self, models=self.models + extra, top1={**self.top1, **{m: other.top1[m] for m in extra}},
            top5={**self.top5, **{m: other.top5[m] for m in extra}}, skipped={**other.skipped, **self.skipped})

    def rows(self) -> list[dict[str, Any]]:
        return [{"model": m, "grid": g, "tile_px": t, "top1": self.top1[m][i], "top5": self.top5[m][i]}
                for m in self.models for i, (g, t) in enumerate(zip(self.grids, self.tile_sizes))]

    def figures(self) -> dict[str, Any]:
        """scrambling.png (accuracy against tile size) and examples.png."""
        from ..viz import image_row_figure, line_figure

        figures = {"scrambling.png": line_figure(
            {m: (self.tile_sizes, [100 * v for v in self.top1[m]]) for m in self.models},
            xlabel="tile side (px); largest = unscrambled", ylabel="top-1 accuracy (%)",
            title=f"Scrambling ({self.images} images)", log_x=True)}
        if self.examples is not None:
            titles = ["original" if g == 1 else f"{g}×{g} tiles ({t} px)" for g, t in zip(self.grids, self.tile_sizes)]
            figures["examples.png"] = image_row_figure(list(self.examples), titles)
        return figures


def scrambling(
    models: Mapping[str, nn.Module],
    dataset: torch.utils.data.Dataset,
    num_classes: int,
    config: ScramblingConfig = ScramblingConfig(),
    progress: bool = True,
    **options: Unpack[RunKwargs],
) -> ScramblingResult:
    """Top-1/top-5 of each model on the dataset's images scrambled at each grid size."""
    run = start("scrambling", models, dataset, config, RunOptions(batch_size=32), **options)
    grids = sorted(set(config.grids))
    hits1 = {m: [0] * len(grids) for m in models}
    hits5 = {m: [0] * len(grids) for m in models}
    total, size, examples = 0, None, None
    skips = SkipLog()
    for batch in tracked_batches(dataset, run.batch_size, run.limit, run.seed, skips, "scrambling", progress,
                                 pin_memory=pin_for(run.device)):
        size = size or tuple(batch.images.shape[-2:])
        if tuple(batch.images.shape[-2:]) != size:
            raise ValueError(f"all images must have the same size for scrambling: {size} vs {tuple(batch.images.shape[-2:])}")
        # each image's tile orders come from its own generator: the result does not depend on batches or processes
        generators = [item_generator(run.seed, int(i)) for i in batch.indices]
        scrambled = [torch.cat([scramble(batch.images[k:k + 1], g, generators[k], config.offset if g > 1 else 0)
                                for k in range(len(batch))]) for g in grids]
        if examples is None:
            own = model_meta(next(iter(models.values()))).preprocess
            mean, std = config.mean or own.mean, config.std or own.std
            examples = np.stack([_show(s[0], mean, std) for s in scrambled])
        for name, model in models.items():
            device = model_device(model, run.device)
            labels = batch.labels.to(device)
            for i, images in enumerate(scrambled):
                logits = logits_of(model, images.to(device), num_classes, name)
                top = logits.topk(min(5, num_classes), dim=1).indices
                hits1[name][i] += int((top[:, 0] == labels).sum())
                hits5[name][i] += int((top == labels[:, None]).any(1).sum())
        total += len(batch)
    hits1, hits5, total = merged_sum(hits1), merged_sum(hits5), merged_sum(total)
    size = next((s for s in gather(size) if s is not None), None)
    assert size is not None
    return ScramblingResult(
        models=list(models), grids=grids, tile_sizes=[min(size) // g for g in grids], images=total,
        top1={m: [h / total for h in hits1[m]] for m in models}, top5={m: [h / total for h in hits5[m]] for m in models},
        config=config_record(config, run),
        skipped=merged_dict(dict(skips.paths)), examples=examples,
    )


def _show(image: Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    return to_pixels(image.detach().cpu().float(), mean, std).permute(1, 2, 0).numpy()
