"""The two passes of a shortcut audit over a dataset, in bounded memory.

Evidence here is a BagNet's class evidence with the classifier's bias excluded (``W · f`` per cell: what a patch
adds to a class's logit, times the number of cells). Pass 1 keeps, for each image, the ``cells_per_image`` cells with
the most positive and the most negative evidence for its own class, with their (normalised) features: the candidates
the strategies are clustered from. Pass 2 assigns *every* cell of every image to the nearest strategy of each class
(when it is as close as the strategy's own members are) and adds up, exactly, what each strategy carries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..data import SkipLog, tracked_batches
from ..models.bagnet import BagNet
from ..plumbing import model_device

SIGNS = {"positive": 1.0, "negative": -1.0}


def feature_batches(model: BagNet, dataset: torch.utils.data.Dataset, batch_size: int, skips: SkipLog,
                    desc: str, progress: bool, workers: int, device: Any
                    ) -> Iterator[tuple[Tensor, Tensor, Tensor, Tensor]]:
    """``(indices, labels, normalised features (B, h, w, D), bias-free evidence (B, C, h, w))`` of every batch, in
    the dataset's order."""
    dev = model_device(model, device)
    weight = model.fc.weight.float()
    for batch in tracked_batches(dataset, batch_size, None, 0, skips, desc, progress, workers):
        with torch.no_grad():
            feats = model.forward_features(batch.images.to(dev, model.fc.weight.dtype)).float()
            evidence = F.conv2d(feats, weight[:, :, None, None])
        yield (batch.indices, batch.labels, F.normalize(feats, dim=1).permute(0, 2, 3, 1).cpu(), evidence.cpu())


@dataclass
class Candidates:
    """Pass 1's keep for one class and sign: features (n, D) fp16, evidence magnitudes, image ids and cells."""

    features: list[np.ndarray] = field(default_factory=list)
    values: list[np.ndarray] = field(default_factory=list)
    images: list[np.ndarray] = field(default_factory=list)
    cells: list[np.ndarray] = field(default_factory=list)
    total: float = 0.0  # Σ of this sign's evidence magnitude over every cell of the class's images

    def add(self, feats: Tensor, magnitude: Tensor, image: int, m: int) -> None:
        """The ``m`` cells of one image with the largest (positive) ``magnitude`` (h, w)."""
        self.total += float(magnitude.clamp(min=0).sum())
        flat = magnitude.flatten()
        k = min(m, int((flat > 0).sum()))
        if k == 0:
            return
        top = flat.topk(k).indices
        w = magnitude.shape[1]
        self.features.append(feats.reshape(-1, feats.shape[-1])[top].numpy().astype(np.float16))
        self.values.append(flat[top].numpy())
        self.images.append(np.full(k, image, np.int64))
        self.cells.append(np.stack([(top // w).numpy(), (top % w).numpy()], 1))

    def arrays(self) -> dict[str, np.ndarray]:
        if not self.values:
            return {"features": np.zeros((0, 0), np.float32), "values": np.zeros(0), "images": np.zeros(0, np.int64),
                    "cells": np.zeros((0, 2), np.int64)}
        return {"features": np.concatenate(self.features).astype(np.float32), "values": np.concatenate(self.values),
                "images": np.concatenate(self.images), "cells": np.concatenate(self.cells)}


def collect_candidates(batches: Iterator[tuple[Tensor, Tensor, Tensor, Tensor]], num_classes: int,
                       cells_per_image: int) -> tuple[dict[tuple[str, int], Candidates], dict[str, Any]]:
    """Pass 1: the candidates of every (sign, class) and, per image, its label and the evidence grid size."""
    keep = {(sign, c): Candidates() for sign in SIGNS for c in range(num_classes)}
    labels: dict[int, int] = {}
    grid: Optional[tuple[int, int]] = None
    for indices, batch_labels, feats, evidence in batches:
        grid = grid or tuple(evidence.shape[-2:])  # type: ignore[assignment]
        for b, (index, label) in enumerate(zip(indices.tolist(), batch_labels.tolist())):
            labels[index] = label
            if not 0 <= label < num_classes:
                continue
            for sign, s in SIGNS.items():
                keep[(sign, label)].add(feats[b], s * evidence[b, label], index, cells_per_image)
    return keep, {"labels": labels, "grid": grid}


@dataclass
class Tally:
    """Pass 2's exact sums for every strategy (columns) of every (sign, class): see :func:`tally`."""

    strategies: list[tuple[str, int, int]]  # (sign, class, k) of each column
    grid: tuple[int, int]
    num_classes: int
    threshold: float  # a strategy "appears" in an image when it carries ≥ this share of the image's evidence
    mass: np.ndarray = field(init=False)  # (S,) Σ over the class's images of the evidence its cells carry
    occurs: np.ndarray = field(init=False)  # (S, C) images of each class in which the strategy appears
    class_images: np.ndarray = field(init=False)  # (C,) images per class
    positions: np.ndarray = field(init=False)  # (S, h, w) its evidence in the class's images, by cell
    correct_without: np.ndarray = field(init=False)  # (S,) images still right with the strategy's cells removed
    class_correct: np.ndarray = field(init=False)  # (C,) images of each class classified right
    class_correct_without: np.ndarray = field(init=False)  # (S,) … of the strategy's class, its cells removed
    class_correct_without_union: np.ndarray = field(init=False)  # (S,) … its union's cells removed (see unions)
    unions: Optional[list[list[int]]] = None  # per column: it and the same class's positive strategies ranked above
    correct: int = 0
    images: int = 0
    decisions: list[dict[str, Any]] = field(default_factory=list)
    others_kept: int = 8  # per strategy, the images of other classes where it carries the largest share
    others: dict[int, list[tuple[float, int, int]]] = field(default_factory=dict)  # column → [(share, image, label)]

    def __post_init__(self) -> None:
        S, C, (h, w) = len(self.strategies), self.num_classes, self.grid
        self.mass, self.occurs = np.zeros(S), np.zeros((S, C), np.int64)
        self.class_images, self.positions = np.zeros(C, np.int64), np.zeros((S, h, w))
        self.correct_without = np.zeros(S, np.int64)
        self.class_correct = np.zeros(C, np.int64)
        self.class_correct_without = np.zeros(S, np.int64)
        self.class_correct_without_union = np.zeros(S, np.int64)
        if self.unions is None:
            self.unions = [[s] for s in range(S)]
        self.column_class = np.array([c for _, c, _ in self.strategies], np.int64)
        self.column_sign = np.array([SIGNS[s] for s, _, _ in self.strategies])


def tally(batches: Iterator[tuple[Tensor, Tensor, Tensor, Tensor]], centroids: Tensor, radii: Tensor, tally_: Tally,
          bias: Tensor, decision_share: float = 0.5) -> Tally:
    """Pass 2. A cell belongs to strategy s of class c when s is the nearest of c's same-sign strategies and its
    cosine similarity to s's centroid is at least ``radii[s]``. Per image: what each strategy carries of its
    class's evidence of its sign (≥ ``threshold`` of the image's total: it appears there), where, and the image's
    prediction with the strategy's cells removed from the evidence (the mean over the remaining cells)."""
    t = tally_
    groups = _groups(t.strategies)
    for indices, labels, feats, evidence in batches:
        B, h, w, D = feats.shape
        sims = feats.reshape(B, h * w, D) @ centroids.T  # (B, hw, S)
        member = torch.zeros_like(sims, dtype=torch.bool)
        for cols in groups:
            best = sims[:, :, cols].argmax(2)  # nearest strategy of this class and sign
            chosen = torch.tensor(cols)[best]
            near = sims.gather(2, chosen[..., None])[..., 0] >= radii[chosen]
            member.scatter_(2, chosen[..., None], near[..., None])
        ev = evidence.reshape(B, -1, h * w)  # (B, C, hw), bias-free
        signed = ev[:, t.column_class, :].permute(0, 2, 1) * torch.from_numpy(t.column_sign).float()  # (B, hw, S)
        carried = (signed.clamp(min=0) * member).sum(1)  # (B, S)
        total = signed.clamp(min=0).sum(1).clamp(min=1e-12)  # (B, S): the image's evidence of that class and sign
        share = carried / total
        logits = ev.mean(2) + bias  # (B, C)
        union = torch.stack([member[..., cols].any(-1) for cols in t.unions], -1)  # type: ignore[union-attr]
        without, without_union = _logits_without(ev, member, bias), _logits_without(ev, union, bias)
        for b, (index, label) in enumerate(zip(indices.tolist(), labels.tolist())):
            _tally_image(t, index, label, share[b], carried[b], member[b], signed[b], logits[b],
                         without[b], without_union[b], decision_share)
    return t


def _logits_without(ev: Tensor, cells: Tensor, bias: Tensor) -> Tensor:
    """(B, S, C): each image's logits with the cells of each column of ``cells`` (B, hw, S) removed, the mean over the
    remaining cells (bias-free evidence ``ev`` (B, C, hw) plus ``bias``)."""
    removed = ev.sum(2)[:, None, :] - torch.einsum("bcn,bns->bsc", ev, cells.float())
    count = (ev.shape[2] - cells.sum(1)).clamp(min=1)  # (B, S)
    return removed / count[..., None] + bias


def _tally_image(t: Tally, index: int, label: int, share: Tensor, carried: Tensor, member: Tensor, signed: Tensor,
                 logits: Tensor, logits_without: Tensor, logits_without_union: Tensor, decision_share: float) -> None:
    h, w = t.grid
    t.images += 1
    if 0 <= label < t.num_classes:
        t.class_images[label] += 1
        appears = (share >= t.threshold).numpy()
        t.occurs[appears, label] += 1
        for column in np.flatnonzero(appears & (t.column_class != label)):  # it fires on another class's image
            kept = t.others.setdefault(int(column), [])
            kept.append((float(share[column]), index, label))
            kept.sort(key=lambda item: -item[0])
            del kept[t.others_kept:]
        own = np.flatnonzero(t.column_class == label)
        t.mass[own] += carried[own].numpy()
        cells = (signed[:, own].clamp(min=0) * member[:, own]).T.reshape(len(own), h, w)
        t.positions[own] += cells.numpy()
        t.class_correct[label] += int(int(logits.argmax()) == label)
        t.class_correct_without[own] += (logits_without[own].argmax(1) == label).numpy()
        t.class_correct_without_union[own] += (logits_without_union[own].argmax(1) == label).numpy()
    predicted = int(logits.argmax())
    t.correct += int(predicted == label)
    t.correct_without += (logits_without.argmax(1) == label).numpy()
    for s in np.flatnonzero((t.column_class == predicted) & (t.column_sign > 0)):
        if float(share[s]) >= decision_share:
            t.decisions.append({"image": index, "label": label, "predicted": predicted, "strategy": int(s),
                                "share": float(share[s])})


def _groups(strategies: list[tuple[str, int, int]]) -> list[list[int]]:
    by: dict[tuple[str, int], list[int]] = {}
    for column, (sign, c, _) in enumerate(strategies):
        by.setdefault((sign, c), []).append(column)
    return list(by.values())
