"""Experiment 2 — interaction of image regions against their distance.

For two square regions A and B of an image and the true class c, with f_c the class-c logit and x_A the image with
region A replaced by a fill:

    effect(A) = f_c(x) − f_c(x_A),   joint = f_c(x) − f_c(x_AB),   interaction = joint − effect(A) − effect(B).

A model that adds up local evidence has zero interaction between regions that no receptive field covers together;
for a BagNet that is exact once the gap between A and B is at least its patch size q (a gap of q − 1 already
suffices). The result reports, per gap, the mean |interaction| and the mean normalised interaction
|interaction| / (|effect(A)| + |effect(B)|), over all pairs whose single effects are not both zero.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

import torch
from torch import Tensor, nn

from ..data import SkipLog
from ..masks import FILLS, fill_image
from .common import batches, check_dataset, logits_of, model_device, out_dir, write_csv, write_json



@dataclass(frozen=True)
class InteractionConfig:
    region: int = 16  # side of each square region, pixels
    gaps: tuple[int, ...] = (0, 8, 16, 32, 48, 64)  # pixels between the two regions (Chebyshev gap)
    pairs_per_gap: int = 4  # random pairs per image and gap
    fill: str = "mean"  # mean (the image's mean colour) | zero (zero in the normalised input) | blur
    blur_sigma: float = 4.0
    batch_size: int = 64  # images per forward pass
    limit: Optional[int] = 100
    seed: int = 0
    device: Optional[str] = None

    def __post_init__(self) -> None:
        if self.fill not in FILLS:
            raise ValueError(f"fill must be one of {FILLS}, got {self.fill!r}")
        if self.region < 1 or any(g < 0 for g in self.gaps) or not self.gaps:
            raise ValueError(f"region must be >= 1 and gaps non-negative, got region={self.region}, gaps={self.gaps}")


@dataclass(frozen=True)
class InteractionResult:
    """Per model and gap: mean |interaction| (logit units), mean normalised interaction, mean |single effect|."""

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
    config: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def rows(self) -> list[dict[str, Any]]:
        return [{"model": m, "gap_px": g, "normalised_interaction": self.normalised_interaction[m][i],
                 "mean_abs_interaction": self.mean_abs_interaction[m][i], "mean_abs_effect": self.mean_abs_effect[m][i],
                 "excluded_pairs": self.excluded_pairs[m][i]}
                for m in self.models for i, g in enumerate(self.gaps)]

    def save(self, out: str | os.PathLike) -> Path:
        """interactions.json, interactions.csv and interactions.png (normalised interaction against gap)."""
        from ..viz import line_figure, save_figure

        out = out_dir(out)
        write_json(out / "interactions.json", self.to_dict())
        write_csv(out / "interactions.csv", self.rows())
        fig = line_figure({m: (self.gaps, self.normalised_interaction[m]) for m in self.models},
                          xlabel="gap between the two regions (px)",
                          ylabel="|interaction| / (|effect A| + |effect B|)",
                          title=f"Interactions of {self.region}-px regions, fill={self.fill} ({self.images} images)")
        for q in sorted({q for q in self.patch_sizes.values() if q}):  # BagNets: no interaction from gap q on
            fig.axes[0].axvline(q, linestyle=":", color="grey")
        save_figure(fig, out / "interactions.png")
        return out


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
) -> InteractionResult:
    """Mean interaction of region pairs against their gap, for each model, on the same pairs and fills."""
    if not models:
        raise ValueError("give at least one model")
    check_dataset(dataset)
    generator = torch.Generator().manual_seed(config.seed)
    r = config.region
    sums = {m: {k: [0.0] * len(config.gaps) for k in ("abs", "norm", "effect", "count", "excluded")} for m in models}
    skips = SkipLog()
    total = 0
    from tqdm.auto import tqdm

    bar = tqdm(total=config.limit or len(dataset), desc="interactions", unit="img", disable=not progress)  # type: ignore[arg-type]
    for batch in batches(dataset, 1, config.limit, config.seed, skips):
        image, label = batch.images[0], int(batch.labels[0])
        _, h, w = image.shape
        filler = fill_image(image, config.fill, config.blur_sigma)
        variants, index = [image], []  # index: (gap i, position of x_A, x_B, x_AB in variants)
        for i, gap in enumerate(config.gaps):
            for ay, ax, by, bx in region_pairs(h, w, r, gap, config.pairs_per_gap, generator):
                xa, xb = image.clone(), image.clone()
                xa[:, ay : ay + r, ax : ax + r] = filler[:, ay : ay + r, ax : ax + r]
                xb[:, by : by + r, bx : bx + r] = filler[:, by : by + r, bx : bx + r]
                xab = xa.clone()
                xab[:, by : by + r, bx : bx + r] = filler[:, by : by + r, bx : bx + r]
                index.append((i, len(variants), len(variants) + 1, len(variants) + 2))
                variants += [xa, xb, xab]
        stack = torch.stack(variants)
        for name, model in models.items():
            device = model_device(model, config.device)
            logits = torch.cat([logits_of(model, chunk.to(device), num_classes, name)[:, label].cpu()
                                for chunk in stack.split(config.batch_size)])
            base = logits[0]
            s = sums[name]
            for i, ia, ib, iab in index:
                ea, eb, joint = base - logits[ia], base - logits[ib], base - logits[iab]
                inter = float((joint - ea - eb).abs())
                single = float(ea.abs() + eb.abs())
                s["abs"][i] += inter
                s["effect"][i] += single / 2
                s["count"][i] += 1
                if single > 0:
                    s["norm"][i] += inter / single
                else:
                    s["excluded"][i] += 1
        total += 1
        bar.update(1)
    bar.close()
    if total == 0:
        raise ValueError("no readable images in the dataset")

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
        config={k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()},
        skipped=dict(skips.paths),
    )
