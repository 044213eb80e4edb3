"""Experiment 3 — how similar are the decisions of several models on the same images?

For every pair of models:
- correlation of their per-class accuracies (Pearson, over classes);
- error consistency (Geirhos et al., 2020): Cohen's kappa of "correct / wrong" on the same images,
  κ = (c_obs − c_exp) / (1 − c_exp), with c_obs the fraction of images both get right or both get wrong and
  c_exp = p₁p₂ + (1 − p₁)(1 − p₂) what independent models of accuracies p₁, p₂ would share;
- logit correlation: Pearson correlation of the two logit vectors of an image, averaged over images.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from typing_extensions import Unpack
import numpy as np
import torch
from torch import Tensor, nn

from ..plumbing import Result, RunKwargs, RunOptions, config_record, model_device
from ..data import SkipLog, pin_for, tracked_batches
from ..parallel import merged_cat, merged_dict
from .common import DeprecatedRunFields, logits_of, start


@dataclass(frozen=True)
class SimilarityConfig(DeprecatedRunFields):
    """The settings of :func:`similarity`: none besides the run options, which are its keyword arguments."""


def error_consistency(correct_a: Tensor, correct_b: Tensor) -> float:
    """Cohen's kappa of two models' correct/wrong vectors (NaN when chance agreement is 1)."""
    a, b = correct_a.double(), correct_b.double()
    if a.shape != b.shape or a.numel() == 0:
        raise ValueError(f"need two non-empty vectors of the same length, got {tuple(a.shape)} and {tuple(b.shape)}")
    observed = float((a == b).double().mean())
    pa, pb = float(a.mean()), float(b.mean())
    expected = pa * pb + (1 - pa) * (1 - pb)
    return float("nan") if expected >= 1 else (observed - expected) / (1 - expected)


def mean_logit_correlation(logits_a: Tensor, logits_b: Tensor) -> float:
    """Pearson correlation of the two logit vectors of each image, averaged over images."""
    a = logits_a.double() - logits_a.double().mean(1, keepdim=True)
    b = logits_b.double() - logits_b.double().mean(1, keepdim=True)
    denom = a.norm(dim=1) * b.norm(dim=1)
    valid = denom > 0
    return float(((a * b).sum(1)[valid] / denom[valid]).mean()) if valid.any() else float("nan")


def per_class_accuracy(predictions: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """Accuracy per class (NaN for classes without images)."""
    acc = torch.full((num_classes,), float("nan"), dtype=torch.float64)
    for c in range(num_classes):
        mask = labels == c
        if mask.any():
            acc[c] = (predictions[mask] == c).double().mean()
    return acc


def _pearson(x: Tensor, y: Tensor) -> float:
    keep = ~(x.isnan() | y.isnan())
    x, y = x[keep] - x[keep].mean(), y[keep] - y[keep].mean()
    denom = float(x.norm() * y.norm())
    return float((x * y).sum()) / denom if denom > 0 else float("nan")


@dataclass(frozen=True)
class SimilarityResult(Result):
    """Matrices indexed [i][j] by ``models``; the diagonal compares a model with itself."""

    stem = "similarity"

    models: list[str]
    images: int
    accuracy: dict[str, float]
    class_accuracy_correlation: list[list[float]]
    error_consistency: list[list[float]]
    logit_correlation: list[list[float]]
    per_class_accuracy: dict[str, list[float]] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def rows(self) -> list[dict[str, Any]]:
        n = len(self.models)
        return [{"model_a": self.models[i], "model_b": self.models[j],
                 "class_accuracy_correlation": self.class_accuracy_correlation[i][j],
                 "error_consistency": self.error_consistency[i][j], "logit_correlation": self.logit_correlation[i][j]}
                for i in range(n) for j in range(n) if i < j]

    def figures(self) -> dict[str, Any]:
        """similarity.png: the three matrices."""
        from ..viz import matrices_figure

        return {"similarity.png": matrices_figure(
            {"per-class accuracy correlation": np.array(self.class_accuracy_correlation),
             "error consistency (κ)": np.array(self.error_consistency),
             "logit correlation": np.array(self.logit_correlation)},
            self.models, title=f"Similarity of decisions ({self.images} images)")}


def similarity(
    models: Mapping[str, nn.Module],
    dataset: torch.utils.data.Dataset,
    num_classes: int,
    config: SimilarityConfig = SimilarityConfig(),
    progress: bool = True,
    **options: Unpack[RunKwargs],
) -> SimilarityResult:
    """Pairwise similarity of the models' decisions on the same images."""
    run = start("similarity", models, dataset, config, RunOptions(batch_size=64), 2, **options)
    logits: dict[str, list[Tensor]] = {m: [] for m in models}
    labels: list[Tensor] = []
    indices: list[Tensor] = []
    skips = SkipLog()
    for batch in tracked_batches(dataset, run.batch_size, run.limit, run.seed, skips, "similarity", progress,
                                 pin_memory=pin_for(run.device)):
        for name, model in models.items():
            logits[name].append(logits_of(model, batch.images.to(model_device(model, run.device)), num_classes,
                                          name).cpu())
        labels.append(batch.labels)
        indices.append(batch.indices)
    names = list(models)
    # every process's images, in dataset order (one process: the same images, reordered)
    y, *stacked = merged_cat(torch.cat(labels), *(torch.cat(logits[m]) for m in names), key=torch.cat(indices))
    all_logits = dict(zip(names, stacked))
    preds = {m: v.argmax(1) for m, v in all_logits.items()}
    correct = {m: p == y for m, p in preds.items()}
    class_acc = {m: per_class_accuracy(p, y, num_classes) for m, p in preds.items()}
    return SimilarityResult(
        models=names, images=int(y.numel()),
        accuracy={m: float(correct[m].double().mean()) for m in names},
        class_accuracy_correlation=[[_pearson(class_acc[a], class_acc[b]) for b in names] for a in names],
        error_consistency=[[error_consistency(correct[a], correct[b]) for b in names] for a in names],
        logit_correlation=[[mean_logit_correlation(all_logits[a], all_logits[b]) for b in names] for a in names],
        per_class_accuracy={m: class_acc[m].tolist() for m in names},
        config=config_record(config, run), skipped=merged_dict(dict(skips.paths)),
    )
