"""A shortcut audit of a BagNet over a whole dataset: for each class, the *strategies* (clusters of the patches that
carry its positive, and its negative, evidence), what each is worth, where it sits, and where else it fires.

:func:`audit` runs two passes over the data (:mod:`.collect`), clusters in between (:mod:`.strategies`) and returns a
:class:`ShortcutAudit` (:mod:`.result`), which saves JSON, CSV, figures and one self-contained HTML report.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Union

import numpy as np
import torch

from ..data import SkipLog, check_dataset, sample_path
from ..errors import ConfigError
from ..models.bagnet import BagNet
from ..models.meta import model_meta
from ..models.registry import load_bagnet
from ..plumbing import eval_mode, option
from .collect import Tally, collect_candidates, feature_batches, tally
from .result import AuditRule, ShortcutAudit, Strategy
from .strategies import cluster, examples

__all__ = ["audit", "AuditConfig", "ShortcutAudit", "Strategy", "AuditRule"]


@dataclass(frozen=True)
class AuditConfig:
    """Settings of :func:`audit` (``bagnet audit`` flags)."""

    strategies: int = option(5, "strategies (clusters) per class and sign", min=1)
    cells_per_image: int = option(4, "candidate patches per image and sign: its cells with the most evidence for its "
                                     "own class", min=1)
    threshold: float = option(0.25, "a strategy appears in an image when its cells carry at least this share of the "
                                    "image's evidence for its class")
    cross_class_rate: float = option(0.1, "flag a strategy that appears in at least this share of another class's "
                                          "images")
    decision_share: float = option(0.5, "decisions.csv lists images in which one strategy carries at least this "
                                        "share of the predicted class's positive evidence")
    examples: int = option(8, "example patches shown per strategy", min=1)

    def __post_init__(self) -> None:
        for name in ("strategies", "cells_per_image", "examples"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} (--{name.replace('_', '-')}) must be an integer ≥ 1, got {value!r}", name)
        for name, low_open in (("threshold", True), ("cross_class_rate", False), ("decision_share", True)):
            value = getattr(self, name)
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value <= 1 and (
                value > 0 if low_open else value >= 0)
            if not ok:
                raise ConfigError(f"{name} (--{name.replace('_', '-')}) must lie in {'(0' if low_open else '[0'}, 1], "
                                  f"got {value!r}", name)


def audit(model: Union[BagNet, str], dataset: torch.utils.data.Dataset, config: Optional[AuditConfig] = None, *,
          index: Any = None, data: str = "", batch_size: int = 32, workers: int = 0, device: Any = None,
          progress: bool = True) -> ShortcutAudit:
    """Audit ``model`` (a BagNet: its evidence is exact) on ``dataset`` (items ``(normalised image, label, index)``,
    labels in the model's class order) as ``config`` (:class:`AuditConfig`) says: per class and sign, up to
    ``strategies`` clusters of the ``cells_per_image`` strongest cells of each image; a strategy *appears* in an image
    when its cells carry ≥ ``threshold`` of the image's evidence of its class and sign, and is a *cross-class*
    candidate shortcut when it appears in ≥ ``cross_class_rate`` of another class's images. ``index``: a
    :class:`~bagnet.patches.PatchIndex` built with the same model on another split, searched for near-duplicate
    patches and images (leakage)."""
    cfg = config if config is not None else AuditConfig()
    model = load_bagnet(model, device, "a shortcut audit",
                        "fine-tune a BagNet on the same data (bagnet train --init bagnet33:imagenet) and audit it: its "
                        "strategies are hypotheses about the dataset")
    check_dataset(dataset)
    if index is not None:
        from ..patches.store import check_model

        check_model(index.manifest, model, index.folder)
    C = model.num_classes
    skips = SkipLog()

    def passes(desc: str):
        return feature_batches(model, dataset, batch_size, skips, desc, progress, workers, device)

    with eval_mode(model):
        keep, info = collect_candidates(passes("audit 1/2"), C, cfg.cells_per_image)
        clusters = {key: cluster(cands, cfg.strategies) for key, cands in keep.items()}
        columns = [(sign, c, k) for (sign, c), cl in clusters.items() if cl is not None
                   for k in range(len(cl.centroids))]
        if not columns:
            raise ValueError("no image of the dataset has any evidence for its own class: nothing to audit (are the "
                             "labels in the model's class order?)")
        centroids = torch.from_numpy(np.concatenate([clusters[(s, c)].centroids[k:k + 1] for s, c, k in columns]))
        radii = torch.from_numpy(np.array([clusters[(s, c)].radii[k] for s, c, k in columns], np.float32))
        leakage = _Leakage(index, dataset, model.fc.bias.detach().float().cpu()) if index is not None else None
        second = passes("audit 2/2")
        t = tally(second if leakage is None else leakage.watch(second), centroids, radii,
                  Tally(columns, info["grid"], C, cfg.threshold, unions=_unions(columns, clusters)),
                  model.fc.bias.detach().float().cpu(), cfg.decision_share)
    rule = AuditRule(cfg.threshold, cfg.cross_class_rate, cfg.decision_share, cfg.cells_per_image, cfg.strategies)
    return _result(model, dataset, data, keep, clusters, columns, t, skips, leakage.rows if leakage else [],
                   cfg.examples, rule)


def _unions(columns: list[tuple[str, int, int]], clusters: dict) -> list[list[int]]:
    """For each column: itself and, for a positive strategy, the same class's positive strategies with more candidate
    evidence (pass 1's ranking), so that removing a union measures what the top strategies are worth together."""
    mass = [float(clusters[(sign, c)].candidates["values"][clusters[(sign, c)].assignment == k].sum())
            for sign, c, k in columns]
    return [[o for o, other in enumerate(columns) if other[:2] == col[:2] and mass[o] >= mass[s]]
            if col[0] == "positive" else [s] for s, col in enumerate(columns)]


def _result(model: BagNet, dataset: Any, data: str, keep: dict, clusters: dict, columns: list, t: Tally,
            skips: SkipLog, leakage: list, n_examples: int, rule: AuditRule) -> ShortcutAudit:
    categories = list(model.categories or [str(c) for c in range(model.num_classes)])
    meta = model_meta(model)
    accuracy = t.correct / max(t.images, 1)
    found = []
    pictures: dict[int, Optional[np.ndarray]] = {}  # the examples' images, each read once
    for s, (sign, c, k) in enumerate(columns):
        others = {categories[o]: float(t.occurs[s, o] / t.class_images[o])
                  for o in range(len(categories)) if o != c and t.class_images[o]}
        chosen = examples(clusters[(sign, c)], k, n_examples)
        elsewhere = [{"image": i, "source": sample_path(dataset, i), "class": categories[label], "share": share}
                     for share, i, label in t.others.get(s, [])]
        for e in chosen:
            e["source"] = sample_path(dataset, e["image"])
            e["box"] = list(model.patch_box(*e["cell"]))
        total = keep[(sign, c)].total
        for e in chosen:
            if e["image"] not in pictures:
                pictures[e["image"]] = _pixels(dataset, e["image"], meta.preprocess)
        crops = [_crop(pictures[e["image"]], e["box"]) for e in chosen]
        found.append(Strategy(
            id=s, sign=sign, category=categories[c], share=float(t.mass[s] / total) if total else 0.0,
            images=int(t.occurs[s, c]), class_images=int(t.class_images[c]), other_classes=others,
            cross_class=any(v >= rule.cross_class_rate for v in others.values()), other_images=elsewhere,
            accuracy_without=float(t.correct_without[s] / max(t.images, 1)),
            class_accuracy=float(t.class_correct[c] / max(t.class_images[c], 1)),
            class_accuracy_without=float(t.class_correct_without[s] / max(t.class_images[c], 1)),
            class_accuracy_without_union=float(t.class_correct_without_union[s] / max(t.class_images[c], 1)),
            union=list((t.unions or [[s]])[s]), positions=t.positions[s].tolist(),
            examples=chosen, crops=[c for c in crops if c is not None]))
    found.sort(key=lambda st: (st.category, st.sign != "positive", -st.share))
    decisions = [{**d, "source": sample_path(dataset, d["image"]), "label": categories[d["label"]]
                  if 0 <= d["label"] < len(categories) else d["label"], "predicted": categories[d["predicted"]],
                  "strategy": d["strategy"]} for d in t.decisions]
    return ShortcutAudit(model=model.name, data=data, categories=categories, images=t.images, accuracy=accuracy,
                         patch_size=model.patch_size, grid=list(t.grid), rule=rule, strategies=found,
                         decisions=decisions, leakage=leakage, skipped=dict(skips.paths),
                         preprocess=meta.preprocess.to_dict(),
                         example_images={i: px for i, px in pictures.items() if px is not None})


def _pixels(dataset: Any, image: int, preprocess: Any) -> Optional[np.ndarray]:
    """The pixels (H, W, 3) uint8 of a dataset image as the model saw it, read again (None when it cannot be now)."""
    item = dataset[image]
    if not isinstance(item, tuple) or not isinstance(item[0], torch.Tensor):
        return None
    return (preprocess.denormalize(item[0].float()).clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).numpy()


def _crop(pixels: Optional[np.ndarray], box: list[int]) -> Optional[np.ndarray]:
    if pixels is None:
        return None
    top, left, bottom, right = box
    return pixels[max(top, 0):bottom, max(left, 0):right]


class _Leakage:
    """Near-duplicates between the audited images and the split ``index`` holds, found during the audit's second pass
    (no pass of its own): for each image, its ``cells`` cells with the most evidence for its predicted class, searched
    in the index; a pair of images is reported when at least ``image_share`` of those cells find a patch of the same
    indexed image with cosine similarity ≥ ``patch_similarity``."""

    def __init__(self, index: Any, dataset: Any, bias: torch.Tensor, cells: int = 16, patch_similarity: float = 0.95,
                 image_share: float = 0.5) -> None:
        self.index, self.dataset, self.bias = index, dataset, bias
        self.cells, self.patch_similarity, self.image_share = cells, patch_similarity, image_share
        self.rows: list[dict] = []

    def watch(self, batches: Any) -> Any:
        """``batches`` unchanged, each one searched on its way through."""
        for batch in batches:
            self.add(*batch)
            yield batch

    def add(self, indices: torch.Tensor, labels: torch.Tensor, feats: torch.Tensor, evidence: torch.Tensor) -> None:
        B, h, w, D = feats.shape
        predicted = (evidence.mean((2, 3)) + self.bias).argmax(1)
        for b, index_b in enumerate(indices.tolist()):
            top = evidence[b, predicted[b]].flatten().topk(min(self.cells, h * w)).indices
            scores, ids = self.index.search(feats[b].reshape(-1, D)[top].numpy(), 1)
            hits: dict[int, int] = {}
            for score, pid in zip(scores[:, 0], ids[:, 0]):
                if pid >= 0 and score >= self.patch_similarity:
                    image = int(self.index.image[pid])
                    hits[image] = hits.get(image, 0) + 1
            for image, n in hits.items():
                if n / len(top) >= self.image_share:
                    self.rows.append({"image": index_b, "source": sample_path(self.dataset, index_b),
                                      "indexed_source": self.index.sources.get(image, f"#{image}"),
                                      "matching_cells": n, "cells": len(top)})
