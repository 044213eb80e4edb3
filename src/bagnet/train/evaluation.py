"""Evaluating a classifier on a dataset: predictions, top-k accuracy, per-class accuracy, the confusion matrix, and the
check that the model's classes are the dataset's before anything is predicted."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..data import SkipLog, collate, pin_for, sample_path
from ..models import BagNet
from .config import TrainConfig
from ..plumbing import Result, eval_mode, model_device

@torch.no_grad()
def predict(model: nn.Module, dataset: torch.utils.data.Dataset, batch_size: int = 64, device: Any = None,
            workers: int = 2, progress: bool = False, skips: Optional[SkipLog] = None) -> tuple[Tensor, Tensor, Tensor]:
    """Logits (N, C), labels (N,) and dataset indices (N,) of every readable sample (others go to ``skips``); under
    ``torchrun`` each process predicts its shard and every process gets all of them, in dataset order."""
    from ..parallel import merged_cat, merged_dict, shard, world

    device = model_device(model, device)
    if world()[1] > 1:
        dataset = torch.utils.data.Subset(dataset, shard(range(len(dataset))))
    log = skips if skips is not None else SkipLog()
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=collate, num_workers=workers,
                                         generator=torch.Generator().manual_seed(0),  # leaves the global RNG alone
                                         pin_memory=pin_for(device), persistent_workers=False)
    logits, labels, indices = [], [], []
    with eval_mode(model):
        for batch in _iter_progress(loader, progress, "evaluate"):
            log.add(batch.skipped)
            if len(batch) == 0:
                continue
            logits.append(model(batch.images.to(device, non_blocking=True)).float().cpu())
            labels.append(batch.labels)
            indices.append(batch.indices)
    log.paths.update(merged_dict(dict(log.paths)))
    empty = torch.zeros(0, dtype=torch.long)
    key = torch.cat(indices) if indices else empty
    out_logits, out_labels, out_indices = merged_cat(torch.cat(logits) if logits else torch.zeros(0, 0),
                                                     torch.cat(labels) if labels else empty, key, key=key)
    if out_labels.numel() == 0:
        raise ValueError("no readable images to evaluate")
    return out_logits, out_labels, out_indices


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

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("predictions")
        return {**d, "images": len(self.predictions)}

    def rows(self) -> list[dict[str, Any]]:
        return list(self.predictions)

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
             workers: int = 2, progress: bool = True) -> EvaluationResult:
    """Top-1/top-5, per-class accuracy, confusion matrix and per-image predictions; unreadable images are skipped
    and listed in the result."""
    check_categories(model, categories, model_name, dataset_name)
    skips = SkipLog()
    logits, labels, indices = predict(model, dataset, batch_size, device, workers, progress, skips)
    if logits.shape[1] != len(categories):
        raise ValueError(f"the model has {logits.shape[1]} outputs but the dataset {len(categories)} classes")
    top1, top5 = topk_accuracy(logits, labels)
    probs = logits.softmax(1)
    pred = probs.argmax(1)
    n = len(categories)
    confusion = torch.zeros(n, n, dtype=torch.long)
    confusion.index_put_((labels, pred), torch.ones_like(labels), accumulate=True)
    per_class = (confusion.diag().float() / confusion.sum(1).clamp(min=1).float()).tolist()
    predictions = [
        {"path": sample_path(dataset, int(i)), "label": categories[int(y)], "predicted": categories[int(p)],
         "confidence": round(float(probs[k, p]), 6), "correct": bool(y == p)}
        for k, (i, y, p) in enumerate(zip(indices, labels, pred))
    ]
    return EvaluationResult(model_name, dataset_name, top1, top5, list(categories), per_class,
                            confusion.tolist(), predictions, dict(skips.paths))
