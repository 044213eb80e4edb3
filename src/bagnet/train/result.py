"""What a training run produced, one epoch at a time and as a whole: a :class:`~bagnet.plumbing.Result`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Optional

from ..plumbing import SCHEMA_VERSION, Result
from .config import TrainConfig


@dataclass
class EpochMetrics:
    epoch: int
    train_loss: float
    train_top1: float
    images_per_s: float
    lr: float
    val_top1: float
    val_top5: float
    holdout_top1: Optional[float]
    skipped_total: int
    seconds: float
    evidence_l1: Optional[float] = None  # mean |class evidence| per cell on the training batches (evidence_l1 > 0)


@dataclass(frozen=True)
class TrainResult(Result):
    """What a run produced: its directory, per-epoch metrics and the final weights file. ``save(dir)`` writes
    summary.json, metrics.csv (one row per epoch) and curves.png (loss and accuracy per epoch)."""

    stem: ClassVar[str] = "summary"
    csv_stem: ClassVar[Optional[str]] = "metrics"

    out: Path
    config: TrainConfig
    history: list[EpochMetrics]
    weights: Optional[Path]
    skipped: int
    wall_seconds: float
    completed: bool
    commands: list[str] = field(default_factory=list)
    stopped: Optional[str] = None  # why a run stopped early (a divergence), None otherwise
    # a completed run: per split ("val", "test"): {"top1", "metrics" (with intervals), "sparsity"}, and the split sizes
    evaluation: dict[str, Any] = field(default_factory=dict)
    init: Optional[str] = None  # what the run kept of --init's model (InitReport.describe())

    def to_dict(self) -> dict[str, Any]:
        data = {"schema_version": SCHEMA_VERSION, "out": str(self.out), "config": self.config.to_dict(),
                "history": [asdict(h) for h in self.history], "weights": str(self.weights) if self.weights else None,
                "skipped": self.skipped, "wall_seconds": self.wall_seconds, "completed": self.completed,
                "commands": self.commands, "evaluation": self.evaluation, "init": self.init}
        return {**data, "stopped": self.stopped} if self.stopped is not None else data

    def rows(self) -> list[dict[str, Any]]:
        return [asdict(h) for h in self.history]

    def figures(self) -> dict[str, Any]:
        """curves.png: training loss, and training and validation top-1, per epoch."""
        if not self.history:
            return {}
        from ..viz import line_figure

        epochs = [h.epoch for h in self.history]
        accuracy = {"train top-1": (epochs, [h.train_top1 for h in self.history]),
                    "val top-1": (epochs, [h.val_top1 for h in self.history])}
        fig = line_figure({"train loss": (epochs, [h.train_loss for h in self.history]), **accuracy}, "epoch",
                          "loss / accuracy", title=f"{self.config.arch} on {self.config.data}")
        return {"curves.png": fig}
