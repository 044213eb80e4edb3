"""Evaluating a classifier on a dataset: predictions, top-k accuracy, per-class accuracy, the confusion matrix, and the
check that the model's classes are the dataset's before anything is predicted."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..data import SkipLog, collate, pin_for, sample_path
from ..models import BagNet
from .config import TrainConfig
from ..plumbing import Result, eval_mode, model_device, write_rows_csv
from .metrics import task_metrics

def predict(model: nn.Module, dataset: torch.utils.data.Dataset, batch_size: int = 64, device: Any = None,
            workers: int = 2, progress: bool = False, skips: Optional[SkipLog] = None) -> tuple[Tensor, Tensor, Tensor]:
    """Logits (N, C), labels (N,) and dataset indices (N,) of every readable sample (others go to ``skips``); under
    ``torchrun`` each process predicts its shard and every process gets all of them, in dataset order."""
    return _predict(model, dataset, batch_size, device, workers, progress, skips)[:3]


@torch.no_grad()
def _predict(model: nn.Module, dataset: torch.utils.data.Dataset, batch_size: int = 64, device: Any = None,
             workers: int = 2, progress: bool = False, skips: Optional[SkipLog] = None, sparsity: bool = False
             ) -> tuple[Tensor, Tensor, Tensor, Optional[Tensor]]:
    """:func:`predict`, and with ``sparsity`` (a BagNet) each image's (top-5 % share, Gini) of its predicted-class
    evidence (N, 2), from the same pass."""
    from ..parallel import merged_cat, merged_dict, shard, world
    from ..sparsity import logits_and_sparsity

    device = model_device(model, device)
    if world()[1] > 1:
        dataset = torch.utils.data.Subset(dataset, shard(range(len(dataset))))
    log = skips if skips is not None else SkipLog()
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=collate, num_workers=workers,
                                         generator=torch.Generator().manual_seed(0),  # leaves the global RNG alone
                                         pin_memory=pin_for(device), persistent_workers=False)
    logits, labels, indices, sparse = [], [], [], []
    sparsity = sparsity and isinstance(model, BagNet)
    with eval_mode(model):
        for batch in _iter_progress(loader, progress, "evaluate"):
            log.add(batch.skipped)
            if len(batch) == 0:
                continue
            images = batch.images.to(device, non_blocking=True)
            if sparsity:
                out, measured = logits_and_sparsity(model, images)  # type: ignore[arg-type]
                sparse.append(torch.stack([measured.top_share, measured.gini], 1).cpu())
            else:
                out = model(images)
            logits.append(out.float().cpu())
            labels.append(batch.labels)
            indices.append(batch.indices)
    log.paths.update(merged_dict(dict(log.paths)))
    empty = torch.zeros(0, dtype=torch.long)
    key = torch.cat(indices) if indices else empty
    extra = [torch.cat(sparse) if sparse else torch.zeros(0, 2, dtype=torch.float64)] if sparsity else []
    out_logits, out_labels, out_indices, *out_sparse = merged_cat(
        torch.cat(logits) if logits else torch.zeros(0, 0), torch.cat(labels) if labels else empty, key, *extra,
        key=key)
    if out_labels.numel() == 0:
        raise ValueError("no readable images to evaluate")
    return out_logits, out_labels, out_indices, (out_sparse[0] if out_sparse else None)


def _iter_progress(loader, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(loader, desc=desc, unit="batch", disable=not enabled, leave=False)


def topk_accuracy(logits: Tensor, labels: Tensor, ks: Sequence[int] = (1, 5)) -> list[float]:
    """Fraction of samples whose label is among the top-k logits, for each k (k capped at the class count)."""
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
    hits = top == labels[:, None]
    return [float(hits[:, : min(k, logits.shape[1])].any(1).float().mean()) for k in ks]


def evaluate_accuracy(model: nn.Module, dataset: Optional[torch.utils.data.Dataset], config: TrainConfig,
                      device: torch.device) -> tuple[float, float]:
    if dataset is None or len(dataset) == 0:  # type: ignore[arg-type]
        return float("nan"), float("nan")
    logits, labels, _ = predict(model, dataset, batch_size=max(32, config.batch_size), device=device,
                                workers=config.workers)
    top1, top5 = topk_accuracy(logits, labels)
    return top1, top5


@dataclass(frozen=True)
class EvaluationResult(Result):
    """Accuracy of one model on one dataset, with per-class figures, the confusion matrix and every prediction.
    ``save(dir)`` writes evaluation.json, predictions.csv (one row per image) and confusion.png."""

    stem = "evaluation"
    csv_stem = "predictions"

    model: str
    dataset: str
    top1: float
    top5: float
    categories: list[str]
    per_class_top1: list[float]
    confusion: list[list[int]]  # rows: true class, columns: predicted class
    predictions: list[dict[str, Any]]
    skipped: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)  # bagnet.train.metrics.task_metrics: with intervals
    sparsity: Optional[dict[str, float]] = None  # BagNets: mean top-5 % share and Gini (bagnet.sparsity)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("predictions")
        return {**d, "images": len(self.predictions)}

    def rows(self) -> list[dict[str, Any]]:
        return list(self.predictions)

    def metric_rows(self) -> list[dict[str, Any]]:
        """metrics.csv: one row per headline metric (value and interval), then per class precision and recall."""
        rows = [{"metric": name, "class": "", "value": m["value"], "low": m["low"], "high": m["high"]}
                for name, m in self.metrics.items() if isinstance(m, dict) and "value" in m]
        for name, m in self.metrics.get("per_class", {}).items():
            rows += [{"metric": key, "class": name, "value": m[key], "low": None, "high": None}
                     for key in ("precision", "recall", "support")]
        rows += [{"metric": key, "class": "", "value": value, "low": None, "high": None}
                 for key, value in (self.sparsity or {}).items()]
        return rows

    def write(self, out: Any) -> None:
        super().write(out)
        write_rows_csv(out / "metrics.csv", self.metric_rows())

    def figures(self) -> dict[str, Any]:
        from ..viz import confusion_matrix_figure

        return {"confusion.png": confusion_matrix_figure(
            np.array(self.confusion), self.categories, f"{self.model} on {self.dataset}: top-1 {100 * self.top1:.1f}%")}


def model_outputs(model: nn.Module) -> Optional[int]:
    """The number of classes a classifier predicts, read from its last linear layer (None when it has none)."""
    if isinstance(model, BagNet):
        return model.num_classes
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return int(linears[-1].out_features) if linears else None


def check_categories(model: nn.Module, categories: Sequence[str], model_name: str = "the model",
                     dataset_name: str = "the dataset") -> None:
    """Refuse, before any image is predicted, a model whose classes are not the dataset's: a different count, or
    the same count under different names (which would score near 0 % without a word)."""
    outputs = model_outputs(model)
    if outputs is not None and outputs != len(categories):
        raise ValueError(f"{model_name} predicts {outputs} classes but {dataset_name} has {len(categories)}: they "
                         f"cannot be scored against each other")
    own = getattr(model, "categories", None)
    if own is not None and all(re.fullmatch(r"n\d{8}", str(c)) for c in categories) and len(categories) == len(own):
        return  # class folders named by WordNet id: a naming scheme, not other classes (issue: map ids to names)
    if own is not None and list(map(str, own)) != list(map(str, categories)):
        if sorted(map(str, own)) == sorted(map(str, categories)):
            raise ValueError(f"{model_name} and {dataset_name} have the same classes in a different order (model: "
                             f"{_abbrev_list(own)}; data: {_abbrev_list(categories)}); class indices would not match")
        differ = [f"{a!r} vs {b!r}" for a, b in zip(own, categories) if str(a) != str(b)]
        raise ValueError(f"{model_name}'s classes are not {dataset_name}'s ({len(differ)} of {len(categories)} "
                         f"differ, e.g. {', '.join(differ[:3])} (model vs data)); evaluate it on the data it was "
                         f"trained for")


def _abbrev_list(items: Sequence[Any], n: int = 4) -> str:
    items = [str(i) for i in items]
    return ", ".join(items[:n]) + (f", … ({len(items)})" if len(items) > n else "")


def evaluate(model: nn.Module, dataset: torch.utils.data.Dataset, categories: Sequence[str],
             model_name: str = "model", dataset_name: str = "dataset", batch_size: int = 64, device: Any = None,
             workers: int = 2, progress: bool = True, bootstrap: int = 1000) -> EvaluationResult:
    """Top-1/top-5, the task metrics with ``bootstrap``-resample intervals (:func:`~bagnet.train.metrics.task_metrics`),
    per-class accuracy, confusion matrix, per-image predictions and, for a BagNet, the sparsity of its evidence
    (:mod:`bagnet.sparsity`); unreadable images are skipped and listed in the result."""
    check_categories(model, categories, model_name, dataset_name)
    skips = SkipLog()
    logits, labels, indices, sparse = _predict(model, dataset, batch_size, device, workers, progress, skips,
                                               sparsity=True)
    if logits.shape[1] != len(categories):
        raise ValueError(f"the model has {logits.shape[1]} outputs but the dataset {len(categories)} classes")
    top1, top5 = topk_accuracy(logits, labels)
    metrics = task_metrics(logits, labels, categories, bootstrap=bootstrap)
    probs = logits.softmax(1)
    pred = probs.argmax(1)
    n = len(categories)
    confusion = torch.zeros(n, n, dtype=torch.long)
    confusion.index_put_((labels, pred), torch.ones_like(labels), accumulate=True)
    per_class = (confusion.diag().float() / confusion.sum(1).clamp(min=1).float()).tolist()
    predictions = [
        {"path": sample_path(dataset, int(i)), "label": categories[int(y)], "predicted": categories[int(p)],
         "confidence": round(float(probs[k, p]), 6), "correct": bool(y == p),
         **({"top5_share": float(sparse[k, 0]), "gini": float(sparse[k, 1])} if sparse is not None else {})}
        for k, (i, y, p) in enumerate(zip(indices, labels, pred))
    ]
    measured = None
    if sparse is not None:
        from ..sparsity import Sparsity

        measured = Sparsity(sparse[:, 0], sparse[:, 1]).mean()
    return EvaluationResult(model_name, dataset_name, top1, top5, list(categories), per_class,
                            confusion.tolist(), predictions, dict(skips.paths), metrics, measured)


def final_evaluation(model: nn.Module, splits: Any, config: TrainConfig, device: Any,
                     say: Callable[[str], None]) -> dict[str, Any]:
    """A finished run's model on its validation (and test) split: top-1, the task metrics with bootstrap intervals
    and the sparsity of its evidence, said (``say``) and returned for summary.json and the model card."""
    from .metrics import format_metrics

    parts = (("train", splits.train), ("val", splits.val), ("test", splits.test))
    out: dict[str, Any] = {"sizes": {name: len(ds) for name, ds in parts if ds is not None}}
    for name, dataset in parts[1:]:
        if dataset is None or len(dataset) == 0:
            continue
        result = evaluate(model, dataset, splits.categories, "model", name, max(32, config.batch_size), device,
                          config.workers, progress=False)
        out[name] = {"top1": result.top1, "metrics": result.metrics, "sparsity": result.sparsity}
        say(f"{name} ({len(result.predictions)} images):\n" + "\n".join(
            "  " + line for line in format_metrics(result.metrics).splitlines()))
        if result.sparsity:
            say(f"  evidence sparsity: top-5 % share {result.sparsity['top5_share']:.3f}, Gini "
                f"{result.sparsity['gini']:.3f}")
    return out
