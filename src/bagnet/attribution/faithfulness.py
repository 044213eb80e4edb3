"""Faithfulness of attribution maps without favouring any method: deletion and insertion curves over square
patches, with random orders as the floor."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..masks import FILLS, block_mask, block_order, check_fill, fill_images
from ..plumbing import (Result, RunOptions, config_record, deprecated_option, eval_mode, model_device, model_dtype, option,
                        run_options, warn_run_fields)
from .methods import _check_images


@dataclass(frozen=True)
class FaithfulnessConfig:
    """Deletion/insertion settings: square patches of ``patch`` px, replaced by (deletion) or revealed from
    (insertion) the ``fill`` image, at ``steps`` equal fractions of the patches; ``random_orders`` random rankings
    per image give the floor."""

    patch: int = option(8, "deletion/insertion: patch side in px", min=1, metavar="PX")
    fill: str = option("blur", "deletion/insertion fill", choices=FILLS)
    blur_sigma: float = option(4.0, "deletion/insertion blur fill: the Gaussian's sigma in px", min=0.0, metavar="PX")
    steps: int = option(16, "deletion/insertion: points on each curve", min=1)
    random_orders: int = option(3, "random rankings per image (the floor)", min=0, metavar="N")
    # deprecated run options (keyword arguments of deletion_insertion since 0.2; removed in 0.3)
    seed: Optional[int] = deprecated_option()
    batch_size: Optional[int] = deprecated_option()

    def __post_init__(self) -> None:
        warn_run_fields(self)
        check_fill(self.fill)
        if self.patch < 1 or self.steps < 1 or self.random_orders < 0:
            raise ConfigError(f"patch and steps must be >= 1 and random_orders >= 0, got {self.patch}, {self.steps}, "
                             f"{self.random_orders}")


@dataclass(frozen=True)
class Faithfulness(Result):
    """Target-class probability after deleting / inserting the top fraction of patches, per method and image.

    ``deletion[m][n][i]`` is image n's probability with the top ``fractions[i]`` of the patches, ranked by method m,
    replaced by the fill; ``insertion`` starts from the fill image and reveals them. Lower deletion AUC and higher
    insertion AUC mean a more faithful ranking; ``random`` is the mean over random orders.
    """

    stem: ClassVar[str] = "faithfulness"

    model: str
    methods: list[str]
    fractions: list[float]
    deletion: dict[str, list[list[float]]]
    insertion: dict[str, list[list[float]]]
    patch: int
    fill: str
    config: dict[str, Any] = field(default_factory=dict)

    def auc(self) -> dict[str, dict[str, float]]:
        """Mean area under the deletion and insertion curves per method (fraction axis from 0 to 1)."""
        x = np.asarray(self.fractions)
        return {m: {"deletion": float(np.mean([np.trapezoid(c, x) for c in self.deletion[m]])),
                    "insertion": float(np.mean([np.trapezoid(c, x) for c in self.insertion[m]]))}
                for m in self.methods}

    def rows(self) -> list[dict[str, Any]]:
        return [{"model": self.model, "method": m, "deletion_auc": a["deletion"], "insertion_auc": a["insertion"]}
                for m, a in self.auc().items()]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "auc": self.auc()}

    def figures(self) -> dict[str, Any]:
        """deletion.png and insertion.png: the curves averaged over images, one line per method."""
        from ..viz import line_figure

        figures = {}
        for kind, curves in (("deletion", self.deletion), ("insertion", self.insertion)):
            series = {m: (self.fractions, np.mean(curves[m], axis=0).tolist()) for m in self.methods}
            figures[f"{kind}.png"] = line_figure(
                series, xlabel=f"fraction of {self.patch}-px patches {kind.rstrip('ion')}ed",
                ylabel="target probability", title=f"{self.model}: {kind} (fill={self.fill})")
        return figures


# ---------------------------------------------------------------------------------------------------- faithfulness
def deletion_insertion(
    model: nn.Module,
    images: Tensor,
    targets: Union[Sequence[int], Tensor],
    maps: Mapping[str, Union[np.ndarray, Tensor]],
    config: FaithfulnessConfig = FaithfulnessConfig(),
    name: Optional[str] = None,
    device: Any = None,
    *,
    seed: Optional[int] = None,
    batch_size: Optional[int] = None,
) -> Faithfulness:
    """Deletion and insertion curves of the target's softmax probability for every map, plus random orders.

    All maps are reduced to the same grid of ``config.patch``-px squares by summing inside each square, so no method
    gains from its resolution; every curve uses the same fill image.
    """
    run = run_options(config, RunOptions(batch_size=64), seed=seed, batch_size=batch_size)
    device = model_device(model, device)
    images = _check_images(images).to(device=device, dtype=model_dtype(model))
    n, _, H, W = images.shape
    targets = torch.as_tensor(targets, dtype=torch.long).reshape(-1).to(device)
    if targets.numel() != n:
        raise ValueError(f"{targets.numel()} targets for {n} images")
    blocks = (H // config.patch) * (W // config.patch)
    if blocks == 0:
        raise ValueError(f"{H}×{W} images hold no {config.patch}-px patch")
    orders: dict[str, Tensor] = {}
    for method, m in maps.items():
        m = torch.as_tensor(np.asarray(m) if not isinstance(m, Tensor) else m).float().cpu()
        if m.shape != (n, H, W):
            raise ValueError(f"map {method!r} has shape {tuple(m.shape)}, expected {(n, H, W)}")
        orders[method] = block_order(m, config.patch)
    generator = torch.Generator().manual_seed(run.seed)
    randoms = [torch.stack([torch.randperm(blocks, generator=generator) for _ in range(n)])
               for _ in range(config.random_orders)]
    ks = sorted({round(i * blocks / config.steps) for i in range(config.steps + 1)})
    fractions = [k / blocks for k in ks]
    fills = fill_images(images.cpu(), config.fill, config.blur_sigma).to(device)
    with eval_mode(model):
        curves = {}
        for method, order in list(orders.items()) + [(f"random{i}", o) for i, o in enumerate(randoms)]:
            curves[method] = _curves(model, images, fills, targets, order, ks, config.patch, run.batch_size)
    deletion = {m: c[0] for m, c in curves.items() if not m.startswith("random")}
    insertion = {m: c[1] for m, c in curves.items() if not m.startswith("random")}
    methods = list(orders)
    if randoms:
        rnd = [curves[f"random{i}"] for i in range(len(randoms))]
        deletion["random"] = np.mean([r[0] for r in rnd], axis=0).tolist()
        insertion["random"] = np.mean([r[1] for r in rnd], axis=0).tolist()
        methods.append("random")
    return Faithfulness(model=name or getattr(model, "name", type(model).__name__), methods=methods,
                        fractions=fractions, deletion=deletion, insertion=insertion, patch=config.patch,
                        fill=config.fill, config={**config_record(config), "seed": run.seed, "batch_size": run.batch_size})


def _curves(model: nn.Module, images: Tensor, fills: Tensor, targets: Tensor, order: Tensor, ks: list[int],
            patch: int, batch_size: int) -> tuple[list[list[float]], list[list[float]]]:
    """Deletion and insertion probabilities (N lists of len(ks)) for one ranking."""
    n, _, H, W = images.shape
    deletion, insertion = [], []
    for i in range(n):
        masks = torch.stack([block_mask(order[i : i + 1], k, patch, H, W)[0] for k in ks]).to(images.device)
        img, fill = images[i : i + 1], fills[i : i + 1]
        deleted = torch.where(masks[:, None], fill, img)
        inserted = torch.where(masks[:, None], img, fill)
        probs = []
        with torch.no_grad():
            for batch in torch.cat([deleted, inserted]).split(batch_size):
                probs.append(model(batch).float().softmax(1)[:, targets[i]])
        p = torch.cat(probs).cpu().tolist()
        deletion.append(p[: len(ks)])
        insertion.append(p[len(ks):])
    return deletion, insertion
