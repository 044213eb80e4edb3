"""What a shortcut audit found (:class:`ShortcutAudit`), saved as ``audit.json``, ``strategies.csv``,
``decisions.csv``, ``leakage.csv``, one figure per class and a self-contained ``report.html``."""

from __future__ import annotations

import html
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..plumbing import SCHEMA_VERSION, Result, safe_stem, write_bytes, write_csv, write_json, write_text


@dataclass(frozen=True)
class AuditRule:
    """The stated rules: a strategy *appears* in an image when its cells carry ≥ ``threshold`` of the image's evidence
    of the strategy's class and sign; it is a *cross-class* candidate shortcut when it appears in ≥
    ``cross_class_rate`` of the images of another class; ``decisions.csv`` lists the images in which a positive
    strategy of the predicted class carries ≥ ``decision_share`` of that class's positive evidence."""

    threshold: float
    cross_class_rate: float
    decision_share: float
    cells_per_image: int
    strategies: int

    def text(self) -> str:
        return (f"A strategy appears in an image when its cells carry at least {self.threshold:.0%} of the image's "
                f"evidence for the strategy's class (of the strategy's sign). It is flagged cross-class when it "
                f"appears in at least {self.cross_class_rate:.0%} of the images of another class. Strategies are "
                f"up to {self.strategies} spherical k-means clusters, per class and sign, of the {self.cells_per_image}"
                f" cells of each image with the most evidence for its own class; a cell of any image belongs to "
                f"the nearest strategy of a class when it is as similar to its centroid as 90 % of the strategy's "
                f"own patches. Evidence excludes the classifier's bias.")


@dataclass
class Strategy:
    """One strategy of one class: ``share`` of the class's total evidence of its sign (over the class's images) that
    its cells carry; ``images`` of the class's ``class_images`` in which it appears; ``other_classes``: the share
    of each other class's images in which it appears, and ``other_images`` the images of other classes where it
    carries the largest share (image, source, class, share); ``accuracy_without``: the model's accuracy on the whole
    dataset with the strategy's cells removed from every image's evidence (the logits the mean over the remaining
    cells; exact, no retraining); ``class_accuracy`` and ``class_accuracy_without``: the same on the class's own
    images; ``class_accuracy_without_union``: … with this strategy and every positive strategy of the class ranked
    above it removed together (``union``: their ids within the class; a concept k-means split in several clusters
    is worth what the union is worth); ``positions``: its evidence by cell over the class's images; ``examples``:
    its strongest patches (image, source, cell, box, evidence)."""

    id: int
    sign: str
    category: str
    share: float
    images: int
    class_images: int
    other_classes: dict[str, float]
    cross_class: bool
    other_images: list[dict[str, Any]]
    accuracy_without: float
    class_accuracy: float
    class_accuracy_without: float
    class_accuracy_without_union: float
    union: list[int]
    positions: list[list[float]]
    examples: list[dict[str, Any]]
    crops: list[np.ndarray] = field(default_factory=list, repr=False)

    def row(self, accuracy: float) -> dict[str, Any]:
        worst = max(self.other_classes.items(), key=lambda kv: kv[1], default=("", 0.0))
        return {"id": self.id, "class": self.category, "sign": self.sign, "share": round(self.share, 4),
                "images": self.images, "class_images": self.class_images,
                "image_rate": round(self.images / max(self.class_images, 1), 4),
                "top_other_class": worst[0], "top_other_rate": round(worst[1], 4), "cross_class": self.cross_class,
                "accuracy_without": round(self.accuracy_without, 4),
                "accuracy_change": round(self.accuracy_without - accuracy, 4),
                "class_accuracy": round(self.class_accuracy, 4),
                "class_accuracy_without": round(self.class_accuracy_without, 4),
                "class_accuracy_without_union": round(self.class_accuracy_without_union, 4),
                "union_size": len(self.union)}


@dataclass(frozen=True)
class ShortcutAudit(Result):
    """Every class's strategies (positive, then negative, largest share first), with the rule that decided them."""

    model: str
    data: str
    categories: list[str]
    images: int
    accuracy: float
    patch_size: int
    grid: list[int]
    rule: AuditRule
    strategies: list[Strategy]
    decisions: list[dict[str, Any]]
    leakage: list[dict[str, Any]]
    skipped: dict[str, str]
    preprocess: dict[str, Any]
    example_images: dict[int, np.ndarray] = field(default_factory=dict, repr=False)  # pixels of the examples' images

    def top(self, category: str, sign: str = "positive") -> Strategy:
        """The strategy of ``category`` with the largest share of its evidence of that sign."""
        mine = [s for s in self.strategies if s.category == category and s.sign == sign]
        if not mine:
            raise KeyError(f"no {sign} strategy for class {category!r}")
        return max(mine, key=lambda s: s.share)

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "model": self.model, "data": self.data,
                "categories": self.categories, "images": self.images, "accuracy": self.accuracy,
                "patch_size": self.patch_size, "grid": self.grid,
                "rule": {**asdict(self.rule), "text": self.rule.text()},
                "strategies": [{k: v for k, v in asdict(s).items() if k != "crops"} for s in self.strategies],
                "decisions": self.decisions, "leakage": self.leakage, "skipped": self.skipped}

    def rows(self) -> list[dict[str, Any]]:
        return [s.row(self.accuracy) for s in self.strategies]

    def write(self, out: Path) -> None:
        from ..viz import figure_png

        write_json(out / "audit.json", self.to_dict())
        write_csv(out / "strategies.csv", self.rows())
        write_csv(out / "decisions.csv", self.decisions,
                  header=["image", "source", "label", "predicted", "strategy", "share"])
        write_csv(out / "leakage.csv", self.leakage, header=["image", "source", "indexed_source", "matching_cells",
                                                              "cells"])
        figures = {}
        for c, name in enumerate(self.categories):
            mine = [s for s in self.strategies if s.category == name]
            if mine:
                png = figure_png(strategies_figure(name, mine, self.grid))
                write_bytes(out / f"strategies_{c:03d}_{safe_stem(name)}.png", png)
                figures[name] = png
        from .report import audit_report

        write_text(out / "report.html", audit_report(self, figures))


def strategies_figure(category: str, strategies: list[Strategy], grid: list[int]):
    """One row per strategy: where its evidence sits (the class's images, by cell), then its strongest patches."""
    from ..viz import _plt

    plt = _plt()
    cols = 1 + max((len(s.crops) for s in strategies), default=0)
    fig, axes = plt.subplots(len(strategies), cols, figsize=(1.3 * cols + 1.5, 1.5 * len(strategies) + 0.5),
                             squeeze=False)
    for r, s in enumerate(strategies):
        ax = axes[r, 0]
        ax.imshow(np.asarray(s.positions), cmap="Reds" if s.sign == "positive" else "Blues")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(f"#{s.id} {s.sign[:3]}\n{s.share:.0%}" + (" ⚑" if s.cross_class else ""), fontsize=7)
        for c in range(1, cols):
            ax = axes[r, c]
            ax.axis("off")
            if c - 1 < len(s.crops):
                ax.imshow(s.crops[c - 1], interpolation="nearest")
                value = s.examples[c - 1]["evidence"] * (1 if s.sign == "positive" else -1)
                ax.set_title(f"{value:+.2f}", fontsize=6)
    fig.suptitle(f"{category}: strategies (share of the class's evidence of that sign, ⚑ cross-class; where, "
                 f"by cell; strongest patches)", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))  # room for the title above the first captions
    return fig


def escape(value: Any) -> str:
    return html.escape(str(value))
