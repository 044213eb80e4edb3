"""Certified, clean and attacked accuracy over a dataset: the loop ``bagnet certify`` runs, and its result."""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Optional, Sequence

import torch
from torch import Tensor

from ..models.bagnet import BagNet, require_bagnet
from ..plumbing import Result, eval_mode, model_device
from .attack import AttackConfig, sticker_attack, sticker_positions
from .certificates import DefenceConfig, certify, sticker_window


@dataclass(frozen=True)
class RobustnessResult(Result):
    """Clean, certified and attacked accuracy of a BagNet, undefended and under each defence, per sticker size.

    ``defences``: one dict per defence (defence, sticker, window, clean, certified; attacked and the clean/certified
    accuracy on the attacked subset, the first ``attacked_images``, None if not attacked); ``rows()`` returns them
    (the CSV), and the JSON keeps them under ``rows`` as before.
    """

    stem = "robustness"

    model: str
    images: int
    clean_undefended: float
    defences: list[dict[str, Any]]
    attacked_undefended: dict[str, Optional[float]] = field(default_factory=dict)  # sticker px → accuracy
    attacked_images: int = 0
    clean_undefended_attacked_subset: Optional[float] = None
    config: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["rows"] = data.pop("defences")
        return data

    def rows(self) -> list[dict[str, Any]]:
        return [dict(row) for row in self.defences]

    def figures(self) -> dict[str, Any]:
        """robustness.png: accuracies against sticker size."""
        from ..viz import line_figure

        series: dict[str, tuple[list, list]] = {}
        for row in self.defences:
            for key in ("clean", "certified", "attacked"):
                if row.get(key) is not None:
                    xs, ys = series.setdefault(f"{row['defence']}: {key}", ([], []))
                    xs.append(row["sticker"])
                    ys.append(100 * row[key])
        und = {int(k): v for k, v in self.attacked_undefended.items() if v is not None}
        if und:
            series["undefended: attacked"] = (sorted(und), [100 * und[k] for k in sorted(und)])
        fig = line_figure(series, xlabel="sticker side (px)", ylabel="accuracy (%)",
                          title=f"{self.model}: clean {100 * self.clean_undefended:.1f} % ({self.images} images)")
        return {"robustness.png": fig}


@dataclass
class _Tally:
    """Counts of one process's images: per defence (clean, certified; on the attacked subset clean, certified,
    attacked, and certified images the attack flipped, which must stay 0) and for the undefended model."""

    defences: int
    stickers: list[int]
    counts: dict[int, dict[str, int]] = field(default_factory=dict)
    und_attacked: dict[int, int] = field(default_factory=dict)
    clean_und: int = 0
    clean_und_sub: int = 0
    total: int = 0
    attacked: int = 0

    def __post_init__(self) -> None:
        keys = ("clean", "certified", "attacked", "clean_sub", "certified_sub", "broken")
        self.counts = {i: dict.fromkeys(keys, 0) for i in range(self.defences)}
        self.und_attacked = {p: 0 for p in self.stickers}

    def merged(self) -> "_Tally":
        """The counts summed over the processes of a ``torchrun`` run (this process's own otherwise)."""
        from ..parallel import merged_sum

        out = _Tally(self.defences, self.stickers)
        out.counts, out.und_attacked = merged_sum(self.counts), merged_sum(self.und_attacked)
        out.clean_und, out.clean_und_sub, out.total, out.attacked = merged_sum(
            [self.clean_und, self.clean_und_sub, self.total, self.attacked])
        return out


def robustness(
    model: BagNet,
    dataset: torch.utils.data.Dataset,
    defences: Sequence[DefenceConfig],
    attack: Optional[AttackConfig] = None,
    limit: Optional[int] = None,
    attack_limit: Optional[int] = None,
    batch_size: int = 32,
    seed: int = 0,
    progress: bool = True,
    device: Any = None,
) -> RobustnessResult:
    """Certify every image of ``dataset`` (the first ``limit`` of a seeded order) under each defence; optionally
    attack the undefended and defended model on the first ``attack_limit`` of them (attacks cost far more).
    ``device``: where to compute (default: the model's device; the model is never moved)."""
    from ..data import SkipLog, check_dataset, subset_indices, tracked_batches
    from ..parallel import is_main, merged_dict

    require_bagnet(model, "certificates (they bound each patch's evidence)")
    if not defences:
        raise ValueError("give at least one defence")
    check_dataset(dataset)
    device = _own_device(model, device)
    skips = SkipLog()
    tally = _Tally(len(defences), sorted({d.sticker for d in defences}))
    # the attacked images are the first ``attack_limit`` of the seeded order, decided by position, not by batch
    position = {idx: p for p, idx in enumerate(subset_indices(len(dataset), limit, seed))}
    planned = 0 if attack is None else min(len(position), attack_limit or len(position))
    started, estimated = time.perf_counter(), False
    with eval_mode(model):
        for batch in tracked_batches(dataset, batch_size, limit, seed, skips, "certify", progress):
            sub = torch.tensor([attack is not None and (attack_limit is None or position[int(i)] < attack_limit)
                                for i in batch.indices], dtype=torch.bool)
            x = batch.images.to(device, model.fc.weight.dtype)
            if bool(sub.any()) and not estimated and progress and is_main():
                _say_attack_plan(model, x, tally.stickers, defences, attack, planned)
            _tally_batch(tally, model, x, batch.labels, sub, defences, attack)
            if tally.attacked and not estimated and progress and is_main():  # the cost, from the first attacked batch
                per_image = (time.perf_counter() - started) / tally.attacked
                print(f"certify: the first {tally.attacked} attacked images took {per_image * tally.attacked:.0f} s: "
                      f"about {per_image * planned / 60:.1f} min for all {planned}", file=sys.stderr)
                estimated = True
    t = tally.merged()
    n, a = t.total, t.attacked
    return RobustnessResult(
        model=model.name, images=n, clean_undefended=t.clean_und / n, defences=_defence_rows(model, defences, t),
        attacked_undefended={str(p): (t.und_attacked[p] / a if a else None) for p in t.stickers},
        attacked_images=a, clean_undefended_attacked_subset=t.clean_und_sub / a if a else None,
        config={"attack": asdict(attack) if attack else None, "limit": limit, "attack_limit": attack_limit,
                "seed": seed},
        skipped=merged_dict(dict(skips.paths)),
    )


def _own_device(model: BagNet, device: Any) -> torch.device:
    """``device`` (default: the model's), refused when the model is elsewhere: bagnet never moves a model."""
    device = model_device(model, device)
    own = model_device(model)
    if own.type != device.type or (device.index is not None and own.index not in (None, device.index)):
        raise ValueError(f"the model is on {own}, not on device={device}; move it first "
                         f"(model.to({str(device)!r})): bagnet never moves a model silently")
    return device


def _tally_batch(tally: _Tally, model: BagNet, x: Tensor, labels: Tensor, sub: Tensor,
                 defences: Sequence[DefenceConfig], attack: Optional[AttackConfig]) -> None:
    """Certify one batch under every defence and, for its images in ``sub``, attack each defence and the
    undefended model at every sticker size."""
    with torch.no_grad():
        ev = model.evidence(x)
        und_ok = ev.mean((2, 3)).argmax(1).cpu() == labels
    tally.clean_und += int(und_ok.sum())
    attacking = bool(sub.any())
    for i, d in enumerate(defences):
        pred, cert = certify(ev, d, model)
        ok, cert, c = pred.cpu() == labels, cert.cpu(), tally.counts[i]
        c["clean"] += int(ok.sum())
        c["certified"] += int((ok & cert).sum())
        if attacking:
            c["clean_sub"] += int(ok[sub].sum())
            c["certified_sub"] += int((ok & cert)[sub].sum())
            held = sticker_attack(model, x[sub.to(x.device)], labels[sub], d.sticker, d, attack).cpu()
            c["attacked"] += int(held.sum())
            c["broken"] += int(((ok & cert)[sub] & ~held).sum())  # must stay 0
    if attacking:
        tally.clean_und_sub += int(und_ok[sub].sum())
        for p in tally.stickers:
            tally.und_attacked[p] += int(sticker_attack(model, x[sub.to(x.device)], labels[sub], p, None, attack).sum())
        tally.attacked += int(sub.sum())
    tally.total += len(labels)


def _defence_rows(model: BagNet, defences: Sequence[DefenceConfig], t: _Tally) -> list[dict[str, Any]]:
    n, a = t.total, t.attacked
    return [{"defence": d.label(), "method": d.method, "sticker": d.sticker, "low": d.low, "high": d.high,
             "window_cells": sticker_window(model.patch_size, model.stride, d.sticker),
             "clean": t.counts[i]["clean"] / n, "certified": t.counts[i]["certified"] / n,
             "attacked": t.counts[i]["attacked"] / a if a else None,
             "clean_attacked_subset": t.counts[i]["clean_sub"] / a if a else None,
             "certified_attacked_subset": t.counts[i]["certified_sub"] / a if a else None,
             "certified_but_flipped": t.counts[i]["broken"] if a else None} for i, d in enumerate(defences)]


def _say_attack_plan(model: BagNet, x: Tensor, stickers: Sequence[int], defences: Sequence[DefenceConfig],
                     attack: AttackConfig, images: int) -> None:
    """The attack's planned work, said before it starts (it dominates certify's time)."""
    h, w = x.shape[-2:]
    per_image = 0
    for size in [d.sticker for d in defences] + list(stickers):  # each defence, then the undefended model per size
        grid = len(sticker_positions(h, w, size, attack.position_stride or max(1, size // 2)))
        per_image += min(grid, attack.top_positions or grid)
    print(f"certify: attacking {images} images: {per_image} sticker positions per image (all defences and sizes) × "
          f"{attack.steps} steps × {attack.restarts} restart(s) = {per_image * attack.steps * attack.restarts} "
          f"gradient steps per image", file=sys.stderr)
