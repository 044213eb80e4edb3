"""What real tasks are judged by, from a model's logits and the true labels, through torchmetrics: balanced accuracy,
macro-F1, per-class precision and recall, ROC AUC (binary, or one-vs-rest macro), quadratic weighted kappa (graded
labels, in the class order given), expected calibration error — each headline figure with a bootstrap confidence
interval (small test sets)."""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

#: Headline metrics, in the order they are printed.
HEADLINE = ("accuracy", "balanced_accuracy", "macro_f1", "roc_auc", "quadratic_kappa", "ece")
#: Above this many classes (ImageNet) ROC AUC and quadratic kappa are not computed: one-vs-rest AUC over a thousand
#: mostly absent classes and a kappa of unordered classes mean little, and their bootstrap would take minutes.
MANY_CLASSES = 100


def _functions(num_classes: int) -> dict[str, Callable[[Tensor, Tensor], Tensor]]:
    """Each headline metric as ``f(probabilities (N, C), labels (N,)) -> scalar`` (torchmetrics' functional API)."""
    from torchmetrics.functional import classification as tm

    c = num_classes

    def auc(p: Tensor, y: Tensor) -> Tensor:
        if c == 2:
            return tm.binary_auroc(p[:, 1], y)
        return tm.multiclass_auroc(p, y, num_classes=c, average="macro")

    return {
        "accuracy": lambda p, y: tm.multiclass_accuracy(p, y, num_classes=c, average="micro"),
        "balanced_accuracy": lambda p, y: tm.multiclass_accuracy(p, y, num_classes=c, average="macro"),
        "macro_f1": lambda p, y: tm.multiclass_f1_score(p, y, num_classes=c, average="macro"),
        "roc_auc": auc,
        "quadratic_kappa": lambda p, y: tm.multiclass_cohen_kappa(p, y, num_classes=c, weights="quadratic"),
        "ece": lambda p, y: tm.multiclass_calibration_error(p, y, num_classes=c, n_bins=15, norm="l1"),
    }


def task_metrics(logits: Tensor, labels: Tensor, categories: Sequence[str], bootstrap: int = 1000, seed: int = 0,
                 level: float = 0.95) -> dict[str, Any]:
    """The metrics of a classification task with ``level`` bootstrap intervals (``bootstrap`` resamples of the images
    with replacement, seeded; percentile intervals): ``{"accuracy": {"value", "low", "high"}, …, "per_class": {name:
    {"precision", "recall", "support"}}, "images": N}``. Classes absent from the labels get NaN recall; ROC AUC
    and kappa are NaN when they are undefined (one class only), and left out above :data:`MANY_CLASSES` classes."""
    from torchmetrics.functional import classification as tm

    logits, labels = logits.detach().double().cpu(), labels.detach().long().cpu()
    n, c = logits.shape
    if n == 0 or labels.shape != (n,):
        raise ValueError(f"need (N, C) logits and (N,) labels with N > 0, got {tuple(logits.shape)} and "
                         f"{tuple(labels.shape)}")
    if len(categories) != c:
        raise ValueError(f"{len(categories)} class names for {c} outputs")
    probs = logits.softmax(1).float()
    functions = _functions(c)
    if c > MANY_CLASSES:
        functions = {k: f for k, f in functions.items() if k not in ("roc_auc", "quadratic_kappa")}
    out: dict[str, Any] = {"images": n, "bootstrap": bootstrap, "level": level}
    generator = torch.Generator().manual_seed(seed)
    draws = [torch.randint(n, (n,), generator=generator) for _ in range(bootstrap)]
    for name, f in functions.items():
        value = _safe(f, probs, labels)
        samples = [v for v in (_safe(f, probs[i], labels[i]) for i in draws) if not math.isnan(v)]
        low, high = _interval(samples, level)
        out[name] = {"value": value, "low": low, "high": high}
    precision = tm.multiclass_precision(probs, labels, num_classes=c, average=None)
    recall = tm.multiclass_recall(probs, labels, num_classes=c, average=None)
    support = torch.bincount(labels, minlength=c)
    out["per_class"] = {str(name): {"precision": float(precision[k]), "recall": float(recall[k]) if support[k] else
                                    float("nan"), "support": int(support[k])} for k, name in enumerate(categories)}
    return out


def _safe(f: Callable[[Tensor, Tensor], Tensor], probs: Tensor, labels: Tensor) -> float:
    """``f``'s value, NaN where it is undefined (torchmetrics warns and returns 0 or NaN for one-class samples)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return float(f(probs, labels))
        except (ValueError, RuntimeError):
            return float("nan")


def _interval(samples: list[float], level: float) -> tuple[float, float]:
    if not samples:
        return float("nan"), float("nan")
    values = torch.tensor(samples, dtype=torch.float64)
    tail = (1 - level) / 2
    return float(values.quantile(tail)), float(values.quantile(1 - tail))


def format_metrics(metrics: dict[str, Any]) -> str:
    """One line per headline metric: ``balanced accuracy 0.812 [0.771, 0.850]``."""
    lines = []
    for name in HEADLINE:
        m = metrics.get(name)
        if m is None:
            continue
        lines.append(f"{name.replace('_', ' '):<18} {m['value']:.3f} [{m['low']:.3f}, {m['high']:.3f}]")
    return "\n".join(lines)
