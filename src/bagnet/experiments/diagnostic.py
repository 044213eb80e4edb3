"""Experiment 6 — a dataset diagnostic: how much does a dataset reward spatial relations?

Train BagNets of growing patch size and a standard CNN with the same recipe (``bagnet.train``), then report the
validation accuracy against patch size next to the CNN's. A curve that reaches the CNN at a small patch size means
local features suffice on this dataset; a gap that stays open means the CNN uses relations between distant parts.
Runs that exist already (a ``model.safetensors`` in their folder) are reused; interrupted ones are resumed.

With ``scramble_grid`` set, every trained model is also evaluated on validation images scrambled into that many
tiles per side (experiment 1): the CNN's drop is the dataset's *scrambling gap*, the share of its accuracy that
depends on where parts are; the BagNets' drops show which patch sizes still fit inside a tile.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence


from ..plumbing import Result
from .scrambling import ScramblingResult


@dataclass(frozen=True)
class DiagnosticResult(Result):
    """Accuracy against BagNet patch size next to a standard CNN, with the CNN's scrambling gap."""

    stem = "diagnostic"

    dataset: str
    patch_sizes: list[int]
    bagnet_top1: list[float]
    cnn: str
    cnn_top1: float
    runs: dict[str, str]
    scrambling_gap: Optional[float] = None  # the CNN's top-1 unscrambled minus scrambled at ``scramble_grid``
    scramble_grid: Optional[int] = None  # tiles per side of the scrambled images (None: not measured)
    scramble_tile_px: Optional[int] = None
    scrambled_top1: dict[str, float] = field(default_factory=dict)  # every model's top-1 on the scrambled images
    config: dict[str, Any] = field(default_factory=dict)

    def rows(self) -> list[dict[str, Any]]:
        """One row per model: name, patch size ("" for the CNN), top-1 and scrambled top-1 ("" if not measured)."""
        names = [f"bagnet{q}" for q in self.patch_sizes] + [self.cnn]
        return [{"model": name, "patch_size": q, "top1": a, "scrambled_top1": self.scrambled_top1.get(name, "")}
                for name, q, a in zip(names, [*self.patch_sizes, ""], [*self.bagnet_top1, self.cnn_top1])]

    @classmethod
    def from_scrambling(
        cls, result: ScramblingResult, bagnets: Mapping[int, str], cnn: str, grid: int, dataset: str
    ) -> "DiagnosticResult":
        """The diagnostic for models trained already (the shipped ones), read off a scrambling run over them:
        ``bagnets`` maps each patch size to its model's name in ``result``; accuracies are those at grid 1."""
        missing = [m for m in [*bagnets.values(), cnn] if m not in result.models]
        if missing:
            raise ValueError(f"models {missing} are not in the scrambling result (it has {result.models})")
        if 1 not in result.grids or grid not in result.grids:
            raise ValueError(f"the scrambling result needs grids 1 and {grid}; it has {result.grids}")
        i0, i = result.grids.index(1), result.grids.index(grid)
        qs = sorted(bagnets)
        names = {**{f"bagnet{q}": bagnets[q] for q in qs}, cnn: cnn}
        return cls(
            dataset=dataset, patch_sizes=qs, bagnet_top1=[result.top1[bagnets[q]][i0] for q in qs], cnn=cnn,
            cnn_top1=result.top1[cnn][i0], runs=names,
            scrambling_gap=result.top1[cnn][i0] - result.top1[cnn][i], scramble_grid=grid,
            scramble_tile_px=result.tile_sizes[i], scrambled_top1={k: result.top1[v][i] for k, v in names.items()},
            config={"source": "scrambling result", "images": result.images},
        )

    def figures(self) -> dict[str, Any]:
        """diagnostic.png: accuracy against patch size, the CNN as a line."""
        from ..viz import line_figure

        curves = {"BagNets": (self.patch_sizes, [100 * a for a in self.bagnet_top1])}
        if self.scrambled_top1:
            curves[f"BagNets, {self.scramble_grid}×{self.scramble_grid} scrambled ({self.scramble_tile_px} px tiles)"] = (
                self.patch_sizes, [100 * self.scrambled_top1[f"bagnet{q}"] for q in self.patch_sizes])
        fig = line_figure(curves, xlabel="BagNet patch size q (px)", ylabel="validation top-1 (%)",
                          title=f"Does {self.dataset} reward spatial relations?", log_x=True)
        ax = fig.axes[0]
        ax.set_xticks(self.patch_sizes, [str(q) for q in self.patch_sizes], minor=False)
        ax.set_xticks([], minor=True)
        ax.axhline(100 * self.cnn_top1, color="black", linestyle="--", label=f"{self.cnn}")
        if self.scrambling_gap is not None:
            ax.axhline(100 * self.scrambled_top1[self.cnn], color="grey", linestyle=":", label=f"{self.cnn}, scrambled")
            ax.text(0.02, 0.02, f"{self.cnn} scrambling gap: {100 * self.scrambling_gap:.1f} points",
                    transform=ax.transAxes, fontsize=8)
        ax.legend(fontsize=8)
        return {"diagnostic.png": fig}


def dataset_diagnostic(
    base: Any,
    patch_sizes: Sequence[int] = (9, 17, 33),
    cnn: str = "resnet18",
    runs_dir: str | os.PathLike = "runs/diagnostic",
    scramble_grid: Optional[int] = None,
    progress: bool = True,
) -> DiagnosticResult:
    """Train (or reuse) one BagNet per patch size and one CNN from the ``base`` TrainConfig; collect accuracies.

    ``scramble_grid``: also score every model on the validation split (``base.limit_val`` applies) scrambled into
    that many tiles per side, with the same shuffles for every model.
    """
    from ..train import TrainConfig, make_splits, train

    if not isinstance(base, TrainConfig):
        raise TypeError(f"base must be a bagnet.train.TrainConfig, got {type(base).__name__}")
    if not patch_sizes:
        raise ValueError("give at least one patch size")
    root = Path(runs_dir)
    runs: dict[str, str] = {}
    accuracy: dict[str, float] = {}
    jobs = [(f"bagnet{q}", base.replace(arch="bagnet", patch_size=q)) for q in patch_sizes]
    jobs.append((cnn, base.replace(arch=cnn)))
    for name, config in jobs:
        out = root / name
        config = config.replace(out=str(out))
        summary = out / "summary.json"
        if not (summary.is_file() and json.loads(summary.read_text()).get("completed")):
            train(config, resume=(out / "checkpoint.pt").is_file(), progress=progress)
        history = json.loads(summary.read_text())["history"]
        accuracy[name] = history[-1]["val_top1"]
        runs[name] = str(out)
    trained = DiagnosticResult(
        dataset=base.data, patch_sizes=list(patch_sizes),
        bagnet_top1=[accuracy[f"bagnet{q}"] for q in patch_sizes], cnn=cnn, cnn_top1=accuracy[cnn], runs=runs,
        config=base.to_dict(),
    )
    if scramble_grid is None:
        return trained
    from ..models import load
    from .scrambling import ScramblingConfig, scrambling

    splits = make_splits(base)
    result = scrambling({name: load(path) for name, path in runs.items()}, splits.val, len(splits.categories),
                        ScramblingConfig(grids=(1, scramble_grid)), progress=progress, seed=base.seed,
                        device=base.device)
    measured = DiagnosticResult.from_scrambling(result, {q: f"bagnet{q}" for q in patch_sizes}, cnn,
                                                scramble_grid, base.data)
    # the accuracies stay those of the training runs; the scrambling figures come from the scrambling run
    return replace(trained, scrambling_gap=measured.scrambling_gap, scramble_grid=scramble_grid,
                   scramble_tile_px=measured.scramble_tile_px, scrambled_top1=measured.scrambled_top1)
