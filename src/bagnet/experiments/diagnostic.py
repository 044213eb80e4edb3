"""Experiment 6 — a dataset diagnostic: how much does a dataset reward spatial relations?

Train BagNets of growing patch size and a standard CNN with the same recipe (``bagnet.train``), then report the
validation accuracy against patch size next to the CNN's. A curve that reaches the CNN at a small patch size means
local features suffice on this dataset; a gap that stays open means the CNN uses relations between distant parts.
Runs that exist already (a ``model.safetensors`` in their folder) are reused; interrupted ones are resumed.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from .common import out_dir, write_csv, write_json


@dataclass(frozen=True)
class DiagnosticResult:
    dataset: str
    patch_sizes: list[int]
    bagnet_top1: list[float]
    cnn: str
    cnn_top1: float
    runs: dict[str, str]
    scrambling_gap: Optional[float] = None  # CNN accuracy unscrambled minus scrambled at tiles ≥ the largest q
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, out: str | os.PathLike) -> Path:
        """diagnostic.json, diagnostic.csv and diagnostic.png (accuracy against patch size, the CNN as a line)."""
        from ..viz import line_figure, save_figure

        out = out_dir(out)
        write_json(out / "diagnostic.json", self.to_dict())
        write_csv(out / "diagnostic.csv", [{"model": f"bagnet{q}", "patch_size": q, "top1": a}
                                           for q, a in zip(self.patch_sizes, self.bagnet_top1)]
                  + [{"model": self.cnn, "patch_size": "", "top1": self.cnn_top1}])
        fig = line_figure({"BagNets": (self.patch_sizes, [100 * a for a in self.bagnet_top1])},
                          xlabel="BagNet patch size q (px)", ylabel="validation top-1 (%)",
                          title=f"Does {self.dataset} reward spatial relations?", log_x=True)
        ax = fig.axes[0]
        ax.axhline(100 * self.cnn_top1, color="black", linestyle="--", label=f"{self.cnn}")
        if self.scrambling_gap is not None:
            ax.text(0.02, 0.02, f"{self.cnn} scrambling gap: {100 * self.scrambling_gap:.1f} points",
                    transform=ax.transAxes, fontsize=8)
        ax.legend(fontsize=8)
        save_figure(fig, out / "diagnostic.png")
        return out


def dataset_diagnostic(
    base: Any,
    patch_sizes: Sequence[int] = (9, 17, 33),
    cnn: str = "resnet18",
    runs_dir: str | os.PathLike = "runs/diagnostic",
    scrambling_gap: Optional[float] = None,
    progress: bool = True,
) -> DiagnosticResult:
    """Train (or reuse) one BagNet per patch size and one CNN from the ``base`` TrainConfig; collect accuracies."""
    from ..train import TrainConfig, train

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
    return DiagnosticResult(
        dataset=base.data, patch_sizes=list(patch_sizes),
        bagnet_top1=[accuracy[f"bagnet{q}"] for q in patch_sizes], cnn=cnn, cnn_top1=accuracy[cnn], runs=runs,
        scrambling_gap=scrambling_gap, config=base.to_dict(),
    )
