"""Experiment 2 — interaction of image regions against their distance.

For two square regions A and B of an image and the true class c, with f_c the class-c logit and x_A the image with
region A replaced by a fill:

    effect(A) = f_c(x) − f_c(x_A),   joint = f_c(x) − f_c(x_AB),   interaction = joint − effect(A) − effect(B).

A model that adds up local evidence has zero interaction between regions that no receptive field covers together;
for a BagNet that is exact once the gap between A and B is at least its patch size q (a gap of q − 1 already
suffices). The result reports, per gap, the mean |interaction| and the mean normalised interaction
|interaction| / (|effect(A)| + |effect(B)|), over all pairs whose single effects are not both zero.

For a BagNet the single effects come from one evidence map instead of a forward pass per masked image
(``local_effects``, on by default): the logit is the mean of the evidence cells, and masking A changes only the
cells whose q×q patch overlaps A, so ``effect(A) = Σ_{cells reaching A} (e − e_A) / cells`` with e from the one
evidence map of the image and e_A from the small crop of the masked image that those cells see. That is exact
(the same numbers as a full forward pass up to float rounding, a test) for every fill, since the fill is computed
on the whole image before the crop. The joint effect is always measured with a full forward pass of the image with
both regions masked, so the zero interaction beyond the patch size stays a measured property, not an assumption.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from typing_extensions import Unpack
import torch
from torch import Tensor, nn

from ..plumbing import Result, RunKwargs, RunOptions, config_record, eval_mode, model_device, option
from ..errors import ConfigError
from ..data import SkipLog, pin_for, tracked_batches
from ..masks import FILLS, check_fill, fill_image
from ..models.bagnet import BagNet
from ..models.receptive import block_pixels, cell_block, cells_reached
from ..parallel import item_generator, merged_dict, merged_sum
from .common import DeprecatedRunFields, logits_of, start



@dataclass(frozen=True)
class InteractionConfig(DeprecatedRunFields):
    """The settings of :func:`interactions` (run options are its keyword arguments)."""

    region: int = option(16, "side of each square region in px", min=1, metavar="PX")
    gaps: tuple[int, ...] = option((0, 8, 16, 32, 48, 64), "gaps between the two regions in px (Chebyshev)", min=0,
                                   metavar="PX")
    pairs_per_gap: int = option(4, "random region pairs per image and gap", min=1, metavar="N")
    fill: str = option("mean", "what replaces a removed region: the image's mean colour, zero (in the normalised "
                               "input) or a blur", choices=FILLS)
    blur_sigma: float = option(4.0, "fill blur: the Gaussian's sigma in px", min=0.0, metavar="PX")
    local_effects: bool = option(True, "BagNets: single-region effects from one evidence map and the crops each region "
                                       "reaches (exact and faster); --no-local-effects: from forward passes")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fill(self.fill)
        if self.region < 1 or any(g < 0 for g in self.gaps) or not self.gaps:
            raise ConfigError(f"region must be >= 1 and gaps non-negative, got region={self.region}, gaps={self.gaps}")


@dataclass(frozen=True)
class InteractionResult(Result):
    """Per model and gap: mean |interaction| (logit units), mean normalised interaction, mean |single effect|."""

    stem = "interactions"

    models: list[str]
    gaps: list[int]
    region: int
    fill: str
    images: int
    pairs_per_gap: int
    mean_abs_interaction: dict[str, list[float]]
    normalised_interaction: dict[str, list[float]]
    mean_abs_effect: dict[str, list[float]]
    excluded_pairs: dict[str, list[int]]  # pairs whose single effects were both zero
    patch_sizes: dict[str, Optional[int]] = field(default_factory=dict)  # BagNets: q (interaction is 0 from gap q)
    effects_from: dict[str, str] = field(default_factory=dict)  # per model: how single effects were computed
    config: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def rows(self) -> list[dict[str, Any]]:
        return [{"model": m, "gap_px": g, "normalised_interaction": self.normalised_interaction[m][i],
                 "mean_abs_interaction": self.mean_abs_interaction[m][i], "mean_abs_effect": self.mean_abs_effect[m][i],
                 "excluded_pairs": self.excluded_pairs[m][i]}
                for m in self.models for i, g in enumerate(self.gaps)]

    def figures(self) -> dict[str, Any]:
        """interactions.png: normalised interaction against gap."""
        from ..viz import line_figure

        fig = line_figure({m: (self.gaps, self.normalised_interaction[m]) for m in self.models},
                          xlabel="gap between the two regions (px)",
                          ylabel="|interaction| / (|effect A| + |effect B|)",
                          title=f"Interactions of {self.region}-px regions, fill={self.fill} ({self.images} images)")
        for q in sorted({q for q in self.patch_sizes.values() if q}):  # BagNets: no interaction from gap q on
            fig.axes[0].axvline(q, linestyle=":", color="grey")
        return {"interactions.png": fig}


def region_pairs(height: int, width: int, region: int, gap: int, count: int,
                 generator: torch.Generator) -> list[tuple[int, int, int, int]]:
    """``count`` random pairs (ay, ax, by, bx) of region corners ``gap`` pixels apart, side by side or stacked."""
    pairs = []
    for _ in range(count):
        horizontal = bool(torch.randint(0, 2, (1,), generator=generator))
        span_y, span_x = (region, 2 * region + gap) if horizontal else (2 * region + gap, region)
        if span_y > height or span_x > width:
            raise ValueError(f"two {region}-px regions {gap} px apart do not fit a {height}×{width} image")
        ay = int(torch.randint(0, height - span_y + 1, (1,), generator=generator))
        ax = int(torch.randint(0, width - span_x + 1, (1,), generator=generator))
        by, bx = (ay, ax + region + gap) if horizontal else (ay + region + gap, ax)
        pairs.append((ay, ax, by, bx))
    return pairs


def interactions(
    models: Mapping[str, nn.Module],
    dataset: torch.utils.data.Dataset,
    num_classes: int,
    config: InteractionConfig = InteractionConfig(),
    progress: bool = True,
    **options: Unpack[RunKwargs],
) -> InteractionResult:
    """Mean interaction of region pairs against their gap, for each model, on the same pairs and fills.

    Run options are keyword arguments: ``limit`` images (default 100: every image costs a forward pass per region
    pair and gap), ``seed`` (which images and pairs), ``batch_size`` (masked copies per forward pass, default 64),
    ``device`` (default: each model's own)."""
    run = start("interactions", models, dataset, config, RunOptions(batch_size=64, limit=100), **options)
    r = config.region
    sums = {m: {k: [0.0] * len(config.gaps) for k in ("abs", "norm", "effect", "count", "excluded")} for m in models}
    skips = SkipLog()
    total = 0
    for batch in tracked_batches(dataset, 1, run.limit, run.seed, skips, "interactions", progress,
                                 pin_memory=pin_for(run.device)):
        image, label = batch.images[0], int(batch.labels[0])
        _, h, w = image.shape
        filler = fill_image(image, config.fill, config.blur_sigma)
        generator = item_generator(run.seed, int(batch.indices[0]))  # the image's own pairs, on any process
        pairs = [(i, pair) for i, gap in enumerate(config.gaps)
                 for pair in region_pairs(h, w, r, gap, config.pairs_per_gap, generator)]
        for name, model in models.items():
            device = model_device(model, run.device)
            if _local(model, config):
                ea, eb, joint = _local_effects(model, image, filler, label, pairs, r, device, num_classes, name,
                                               run.batch_size)
            else:
                ea, eb, joint = _forward_effects(model, image, filler, label, pairs, r, device, num_classes, name,
                                                 run.batch_size)
            s = sums[name]
            for k, (i, _) in enumerate(pairs):
                inter = float((joint[k] - ea[k] - eb[k]).abs())
                single = float(ea[k].abs() + eb[k].abs())
                s["abs"][i] += inter
                s["effect"][i] += single / 2
                s["count"][i] += 1
                if single > 0:
                    s["norm"][i] += inter / single
                else:
                    s["excluded"][i] += 1
        total += 1

    sums, total = merged_sum(sums), merged_sum(total)

    def mean(values: list[float], counts: list[float]) -> list[float]:
        return [v / c if c else float("nan") for v, c in zip(values, counts)]

    return InteractionResult(
        models=list(models), gaps=list(config.gaps), region=r, fill=config.fill, images=total,
        pairs_per_gap=config.pairs_per_gap,
        mean_abs_interaction={m: mean(sums[m]["abs"], sums[m]["count"]) for m in models},
        normalised_interaction={m: mean(sums[m]["norm"], [c - e for c, e in zip(sums[m]["count"], sums[m]["excluded"])])
                                for m in models},
        mean_abs_effect={m: mean(sums[m]["effect"], sums[m]["count"]) for m in models},
        excluded_pairs={m: [int(e) for e in sums[m]["excluded"]] for m in models},
        patch_sizes={m: getattr(model, "patch_size", None) for m, model in models.items()},
        effects_from={m: "evidence map + reached cells" if _local(model, config) else "forward passes"
                      for m, model in models.items()},
        config=config_record(config, run),
        skipped=merged_dict(dict(skips.paths)),
    )


def _local(model: nn.Module, config: InteractionConfig) -> bool:
    return config.local_effects and isinstance(model, BagNet)


def _masked(image: Tensor, filler: Tensor, r: int, *corners: tuple[int, int]) -> Tensor:
    out = image.clone()
    for y, x in corners:
        out[:, y : y + r, x : x + r] = filler[:, y : y + r, x : x + r]
    return out


def _class_logits(model: nn.Module, images: list[Tensor], label: int, device: torch.device, num_classes: int,
                  name: str, batch_size: int) -> Tensor:
    stack = torch.stack(images)
    return torch.cat([logits_of(model, chunk.to(device), num_classes, name)[:, label].cpu()
                      for chunk in stack.split(batch_size)])


def _forward_effects(model: nn.Module, image: Tensor, filler: Tensor, label: int,
                     pairs: list[tuple[int, tuple[int, int, int, int]]], r: int, device: torch.device,
                     num_classes: int, name: str, batch_size: int) -> tuple[Tensor, Tensor, Tensor]:
    """effect(A), effect(B) and the joint effect of every pair, each from a forward pass of the masked image."""
    variants = [image]
    for _, (ay, ax, by, bx) in pairs:
        variants += [_masked(image, filler, r, (ay, ax)), _masked(image, filler, r, (by, bx)),
                     _masked(image, filler, r, (ay, ax), (by, bx))]
    logits = _class_logits(model, variants, label, device, num_classes, name, batch_size)
    effects = logits[0] - logits[1:].view(-1, 3)
    return effects[:, 0], effects[:, 1], effects[:, 2]


@torch.no_grad()
def _local_effects(model: BagNet, image: Tensor, filler: Tensor, label: int,
                   pairs: list[tuple[int, tuple[int, int, int, int]]], r: int, device: torch.device,
                   num_classes: int, name: str, batch_size: int) -> tuple[Tensor, Tensor, Tensor]:
    """As :func:`_forward_effects`, but effect(A) and effect(B) from the image's evidence map and, for the cells
    a region reaches, the evidence of the crop of the masked image that those cells see (exact for a BagNet)."""
    joint_images = [image] + [_masked(image, filler, r, (ay, ax), (by, bx)) for _, (ay, ax, by, bx) in pairs]
    logits = _class_logits(model, joint_images, label, device, num_classes, name, batch_size)  # checks the model
    q, st = model.patch_size, model.stride
    with eval_mode(model):
        dtype = next(model.parameters()).dtype
        evidence = model.evidence(image[None].to(device, dtype))[0, label].double().cpu()  # (h, w)
        cells = (int(evidence.shape[0]), int(evidence.shape[1]))
        crops, blocks = [], []
        for _, (ay, ax, by, bx) in pairs:
            for y, x in ((ay, ax), (by, bx)):
                block = cell_block(q, st, y, x, r, r, cells)
                top, left, ch, cw = block_pixels(q, st, block)
                crops.append(_masked(image, filler, r, (y, x))[:, top : top + ch, left : left + cw])
                blocks.append((block, cells_reached(q, st, y, x, r, r, cells)))
        local = torch.cat([model.evidence(chunk.to(device, dtype))[:, label].double().cpu()
                           for chunk in torch.stack(crops).split(batch_size)])
    single = torch.empty(len(blocks), dtype=torch.float64)
    for k, ((row, col, _, _), (rows, cols)) in enumerate(blocks):
        before = evidence[rows.start : rows.stop, cols.start : cols.stop]
        after = local[k, rows.start - row : rows.stop - row, cols.start - col : cols.stop - col]
        single[k] = (before - after).sum() / evidence.numel()
    single = single.view(-1, 2)
    return single[:, 0], single[:, 1], logits[0] - logits[1:]
