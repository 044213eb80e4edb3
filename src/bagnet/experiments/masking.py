"""Experiment 4 — masking the image patches a BagNet finds most informative.

The image is divided into a grid of square blocks. Each ranking orders the blocks of an image: ``bagnet`` by the sum
of a BagNet's per-pixel evidence for the true class inside the block (highest first), ``random`` at random, or any
other per-pixel map (a model's own attribution, from ``bagnet.attribution``). The top-k blocks are replaced by a fill
and every model's accuracy is reported against k, for every ranking, on the same masked images.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Union

from typing_extensions import Unpack
import torch
from torch import Tensor, nn

from ..plumbing import Result, RunKwargs, RunOptions, config_record, model_device, option
from ..errors import ConfigError
from ..data import SkipLog, pin_for, tracked_batches
from ..masks import FILLS, check_fill, block_order, fill_image, mask_blocks
from ..models.bagnet import BagNet
from ..parallel import gather, item_generator, merged_dict, merged_sum
from .common import DeprecatedRunFields, logits_of, start

#: A ranking: per-pixel relevance maps (N, H, W) for images (N, C, H, W) and their labels (N,).
PixelScores = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class MaskingConfig(DeprecatedRunFields):
    """The settings of :func:`masking` (run options are its keyword arguments)."""

    block: int = option(8, "block side in px", min=1, metavar="PX")
    ks: tuple[int, ...] = option((0, 1, 2, 4, 8, 16, 32), "numbers of blocks masked", min=0, metavar="K")
    fill: str = option("mean", "what replaces a masked block", choices=FILLS)
    blur_sigma: float = option(4.0, "fill blur: the Gaussian's sigma in px", min=0.0, metavar="PX")
    heatmap_stride: int = option(2, "BagNet rankings: evidence at every s-th pixel (1: exact at every pixel)", min=1,
                                 metavar="S")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fill(self.fill)
        if self.block < 1 or any(k < 0 for k in self.ks):
            raise ConfigError(f"block must be >= 1 and ks non-negative, got block={self.block}, ks={self.ks}")


def bagnet_scores(model: BagNet, stride: int = 2) -> PixelScores:
    """Rank by a BagNet's exact evidence for the true class (bagnet.heatmap, nearest-upsampled to every pixel)."""
    from ..heatmaps import heatmap

    def scores(images: Tensor, labels: Tensor) -> Tensor:
        hm = heatmap(model, images, labels, stride=stride, upsample="nearest" if stride > 1 else None)
        return hm[:, 0]

    return scores


@dataclass(frozen=True)
class MaskingResult(Result):
    """accuracy[model][ranking][i] is the top-1 accuracy with the top ks[i] blocks of that ranking masked."""

    stem = "masking"

    models: list[str]
    rankings: list[str]
    ks: list[int]
    block: int
    blocks_per_image: int
    fill: str
    images: int
    accuracy: dict[str, dict[str, list[float]]]
    config: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # unreadable images → reason
    unavailable: dict[str, str] = field(default_factory=dict)  # "model / ranking" a method cannot handle → why

    def rows(self) -> list[dict[str, Any]]:
        return [{"model": m, "ranking": r, "k": k, "masked_fraction": k / self.blocks_per_image,
                 "top1": self.accuracy[m][r][i]}
                for m in self.models for r in self.rankings for i, k in enumerate(self.ks)]

    def figures(self) -> dict[str, Any]:
        """masking.png: accuracy against k, one line per model and ranking."""
        from ..viz import line_figure

        series = {f"{m} / {r}": (self.ks, [100 * a for a in self.accuracy[m][r]])
                  for m in self.models for r in self.rankings}
        return {"masking.png": line_figure(
            series, xlabel=f"masked {self.block}-px blocks (of {self.blocks_per_image})",
            ylabel="top-1 accuracy (%)", title=f"Masking, fill={self.fill} ({self.images} images)")}


@dataclass(frozen=True)
class OwnAttribution:
    """A ranking that differs per model: each model's blocks ranked by its own attribution map for the true class
    (a ``bagnet.attribution`` method; ``evidence`` for BagNets is their exact evidence)."""

    method: str = "integrated_gradients"
    ig_steps: int = 16

    def scores(self, model: nn.Module, images: Tensor, labels: Tensor, device: Any) -> Optional[Tensor]:
        """Per-pixel maps (N, H, W), or None where the method cannot handle the model."""
        from ..attribution import AttributionConfig, attribute

        config = AttributionConfig(methods=(self.method,), ig_steps=self.ig_steps, evidence_stride=2)
        with torch.enable_grad():
            result = attribute(model, images, labels, config, device=device)
        if self.method in result.unavailable:
            return None
        return torch.from_numpy(result.maps[self.method])


def masking(
    models: Mapping[str, nn.Module],
    rankings: Mapping[str, Union[BagNet, PixelScores, OwnAttribution, str]],
    dataset: torch.utils.data.Dataset,
    num_classes: int,
    config: MaskingConfig = MaskingConfig(),
    progress: bool = True,
    **options: Unpack[RunKwargs],
) -> MaskingResult:
    """Accuracy of every model against the number of masked blocks, for every ranking.

    ``rankings`` maps a name to a BagNet (ranked by its evidence for the true class), to a function returning
    per-pixel scores (N, H, W), to an :class:`OwnAttribution` (each model ranked by its own attribution map; a model
    the method cannot handle gets NaN accuracies and a note in ``unavailable``), or to the string ``"random"``.
    """
    if not rankings:
        raise ValueError("give at least one ranking (a BagNet, a function, an OwnAttribution or 'random')")
    run = start("masking", models, dataset, config, RunOptions(batch_size=32), **options)
    scorers = _scorers(rankings, config.heatmap_stride)
    ks = sorted(set(config.ks))
    hits = {m: {r: [0] * len(ks) for r in rankings} for m in models}
    total, blocks = 0, 0
    skips = SkipLog()
    unavailable: dict[str, str] = {}
    for batch in tracked_batches(dataset, run.batch_size, run.limit, run.seed, skips, "masking", progress,
                                 pin_memory=pin_for(run.device)):
        images, labels = batch.images, batch.labels
        n, _, h, w = images.shape
        blocks = (h // config.block) * (w // config.block)
        if blocks == 0 or max(ks) > blocks:
            raise ValueError(f"{h}×{w} images have {blocks} blocks of {config.block} px; cannot mask k = {max(ks)}")
        fills = torch.stack([fill_image(img, config.fill, config.blur_sigma) for img in images])
        for rname, scorer in scorers.items():
            orders = _orders(rname, scorer, models, batch, blocks, config.block, run, unavailable)
            for i, k in enumerate(ks):
                for mname, model in models.items():
                    order = orders[mname]
                    if order is None:
                        hits[mname][rname][i] = float("nan")
                        continue
                    masked = mask_blocks(images, fills, order, k, config.block)
                    device = model_device(model, run.device)
                    pred = logits_of(model, masked.to(device), num_classes, mname).argmax(1).cpu()
                    hits[mname][rname][i] += int((pred == labels).sum())
        total += n
    hits, total, blocks = merged_sum(hits), merged_sum(total), max(gather(blocks))
    return MaskingResult(
        models=list(models), rankings=list(rankings), ks=ks, block=config.block, blocks_per_image=blocks,
        fill=config.fill, images=total,
        accuracy={m: {r: [v / total for v in hits[m][r]] for r in rankings} for m in models},
        config=config_record(config, run),
        skipped=merged_dict(dict(skips.paths)), unavailable=merged_dict(unavailable),
    )


def _scorers(rankings: Mapping[str, Any], heatmap_stride: int) -> dict[str, Union[None, PixelScores, OwnAttribution]]:
    """Each ranking as what scores blocks: an OwnAttribution, a pixel-score function, or None (random)."""
    scorers: dict[str, Union[None, PixelScores, OwnAttribution]] = {}
    for name, r in rankings.items():
        if isinstance(r, OwnAttribution):
            scorers[name] = r
        elif isinstance(r, BagNet):
            scorers[name] = bagnet_scores(r, heatmap_stride)
        elif isinstance(r, str) and r == "random":
            scorers[name] = None
        elif callable(r):
            scorers[name] = r
        else:
            raise TypeError(f"ranking {name!r} must be a BagNet, a function, an OwnAttribution or 'random', got "
                            f"{type(r).__name__}")
    return scorers


def _orders(rname: str, scorer: Union[None, PixelScores, OwnAttribution], models: Mapping[str, nn.Module], batch: Any,
            blocks: int, block: int, run: RunOptions, unavailable: dict[str, str]) -> dict[str, Optional[Tensor]]:
    """Per model, the order in which one ranking masks the batch's blocks (None: the method cannot handle it, noted
    in ``unavailable``). Random orders come from each image's own generator; other rankings are shared by all models
    unless each model ranks by its own attribution."""
    images, labels = batch.images, batch.labels
    n, _, h, w = images.shape
    if scorer is None:
        shared = torch.stack([torch.randperm(blocks, generator=item_generator(run.seed, int(i)))
                              for i in batch.indices])
        return {m: shared for m in models}
    if isinstance(scorer, OwnAttribution):
        orders: dict[str, Optional[Tensor]] = {}
        for mname, model in models.items():
            pixel = scorer.scores(model, images, labels, model_device(model, run.device))
            if pixel is None:
                unavailable[f"{mname} / {rname}"] = f"{scorer.method} cannot handle {type(model).__name__}"
            orders[mname] = None if pixel is None else block_order(_check_map(pixel, rname, n, h, w), block)
        return orders
    with torch.no_grad():
        pixel = scorer(images, labels).detach().float().cpu()
    shared = block_order(_check_map(pixel, rname, n, h, w), block)
    return {m: shared for m in models}


def _check_map(pixel: Tensor, name: str, n: int, h: int, w: int) -> Tensor:
    pixel = pixel.detach().float().cpu()
    if pixel.shape != (n, h, w):
        raise ValueError(f"ranking {name!r} returned maps of shape {tuple(pixel.shape)}, expected {(n, h, w)}")
    return pixel
