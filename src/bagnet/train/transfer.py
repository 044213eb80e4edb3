"""Starting a run from a trained model: any spec :func:`bagnet.load` accepts, its classifier replaced when the class
count differs, its architecture and resolution taken from its metadata, and the transfer options people reach for
(frozen stages or a linear probe, frozen BatchNorm statistics, a smaller learning rate for the pretrained layers)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..models.bagnet import BagNet
from ..models.external import is_external
from ..models.preprocess import IMAGENET_MEAN, IMAGENET_STD
from ..models.runtime import batchnorms
from ..sparsity import unbiased_evidence
from .config import TrainConfig

STEM = ("conv1.", "bn1.", "conv2.", "bn2.")


@dataclass(frozen=True)
class InitReport:
    """What a run kept of its initial model and what is new."""

    source: str
    kept: int  # parameters taken from the initial model
    new: int  # parameters initialised afresh (the replaced classifier)
    classifier: str  # the classifier's module name
    old_classes: int
    new_classes: int
    reordered: bool = False  # the same classes in another order: the classifier's rows were permuted to match

    def describe(self) -> str:
        head = (f"a new {self.classifier} for your {self.new_classes} classes ({self.new:,} parameters; the initial "
                f"model's predicted {self.old_classes} others)" if self.new else
                f"its {self.classifier} (the same {self.new_classes} classes"
                + (", its rows put in your class order)" if self.reordered else ")"))
        return f"--init {self.source}: kept {self.kept:,} pretrained parameters; {head}"


def load_initial(spec: str) -> nn.Module:
    """The model ``spec`` names (any :func:`bagnet.load` spec), in training mode on the CPU; a clear ConfigError when
    it cannot be loaded."""
    from ..models import load
    from ..models.weights import WeightsError

    try:
        model = load(spec)
    except (KeyError, WeightsError, OSError, ValueError) as err:
        raise ConfigError(f"--init {spec}: {str(err).strip(chr(39))}", "init") from None
    return model.train()


def resolve_init(config: TrainConfig, model: Optional[nn.Module] = None) -> TrainConfig:
    """``config`` with the architecture fields of its initial model (BagNets: patch size, width, blocks per stage)
    and, unless set, its resolution and its normalisation (mean/std, when not ImageNet's); a field set to something
    else than both its default and the model's is a usage error (a ConfigError naming it)."""
    if not config.init:
        return config
    model = model if model is not None else load_initial(config.init)
    meta = getattr(model, "meta", None)
    found: dict[str, Any] = {}
    if isinstance(model, BagNet):
        found = {"arch": "bagnet", "patch_size": model.patch_size, "width": model.config.width,
                 "layers": tuple(model.config.layers)}
    elif is_external(config.init):
        found = {"arch": ":".join(config.init.split(":")[:2])}  # torchvision:NAME, timm:NAME
    elif meta is not None and meta.arch in _cnn_arches():
        found = {"arch": meta.arch}
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    changes: dict[str, Any] = {}
    for name, value in found.items():
        mine = getattr(config, name)
        if mine == value:
            continue
        if mine != defaults[name]:
            raise ConfigError(f"{name.replace('_', '-')} {_show(mine)} contradicts --init {config.init}, whose weights "
                              f"have {name.replace('_', '-')} {_show(value)}; leave it out (it is read from the "
                              f"weights)", name)
        changes[name] = value
    resolution = getattr(meta, "resolution", None)
    if resolution and config.image_size == defaults["image_size"] and config.arch != "vit":
        changes["image_size"] = int(resolution)
    prep = getattr(meta, "preprocess", None)  # the normalisation the initial weights expect (a timm model's 0.5s)
    for name, imagenet in (("mean", IMAGENET_MEAN), ("std", IMAGENET_STD)):
        theirs = getattr(prep, name, None)
        if getattr(config, name) is None and theirs is not None and not np.allclose(theirs, imagenet):
            changes[name] = tuple(float(v) for v in theirs)  # ImageNet's stays implicit: older runs resume as before
    return config.replace(**changes) if changes else config


def initial_model(config: TrainConfig, categories: Sequence[str], model: Optional[nn.Module] = None
                  ) -> tuple[nn.Module, InitReport]:
    """The initial model of ``config.init`` with a fresh classifier for ``categories`` unless it already predicts
    exactly these classes (a run that continues training on the same classes keeps its head, its rows permuted
    when ``categories`` lists them in another order)."""
    model = model if model is not None else load_initial(config.init)  # type: ignore[arg-type]
    name, head = classifier(model)
    old = int(head.out_features)
    own = [str(c) for c in getattr(model, "categories", None) or []]
    wanted = [str(c) for c in categories]
    same = old == len(wanted) == len(own) == len(set(own)) and sorted(own) == sorted(wanted)
    reordered = same and own != wanted
    if reordered:
        row = {c: i for i, c in enumerate(own)}
        order = torch.tensor([row[c] for c in wanted])
        with torch.no_grad():
            head.weight.copy_(head.weight[order])
            if head.bias is not None:
                head.bias.copy_(head.bias[order])
    total = sum(p.numel() for p in model.parameters())
    new = 0
    if not same:
        replace_classifier(model, name, len(categories))
        new = sum(p.numel() for p in classifier(model)[1].parameters())
        total = sum(p.numel() for p in model.parameters())
    for attr in ("meta", "name", "categories", "preprocess"):  # the run's own are written when it is saved
        if attr in vars(model):
            delattr(model, attr)
    return model, InitReport(config.init, total - new, new, name, old, len(categories),  # type: ignore[arg-type]
                             reordered)


def classifier(model: nn.Module) -> tuple[str, nn.Linear]:
    """The classifier: a BagNet's (and timm's) ``get_classifier()``, else the last ``nn.Linear``."""
    if isinstance(model, BagNet):
        return "fc", model.fc
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ConfigError(f"--init: {type(model).__name__} has no linear classifier to replace", "init")
    return linears[-1]


def replace_classifier(model: nn.Module, name: str, num_classes: int) -> None:
    """A freshly initialised ``nn.Linear`` with ``num_classes`` outputs in place of the module ``name``."""
    if isinstance(model, BagNet):
        model.reset_classifier(num_classes)
        return
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old = getattr(parent, child)
    setattr(parent, child, nn.Linear(old.in_features, num_classes, bias=old.bias is not None))


def stages(model: nn.Module) -> list[list[str]]:
    """The parameter-name prefixes of the model's stages in forward order: the stem, then ``layer1`` … ``layerN``
    (BagNets and ResNets); other models have no stages bagnet can name (empty list)."""
    names = [n for n, _ in model.named_children()]
    layers = [n for n in names if n.startswith("layer") and n[5:].isdigit()]
    if not layers:
        return []
    stem = [n + "." for n in names if n + "." in STEM]
    return [stem + [layers[0] + "."]] + [[n + "."] for n in layers[1:]]


def frozen_prefixes(model: nn.Module, freeze_stages: int) -> list[str]:
    """The parameter-name prefixes ``freeze_stages`` freezes: 0 none; k the stem and the first k residual stages;
    -1 everything but the classifier (a linear probe on the features)."""
    if freeze_stages == 0:
        return []
    head, _ = classifier(model)
    if freeze_stages == -1:
        return [n + "." for n, _ in model.named_children() if not (head + ".").startswith(n + ".")] or [""]
    found = stages(model)
    if not found:
        raise ConfigError(f"freeze-stages {freeze_stages}: {type(model).__name__} has no residual stages (layer1 …); "
                          f"use freeze-stages -1 (everything but the classifier) or 0", "freeze_stages")
    if freeze_stages > len(found):
        raise ConfigError(f"freeze-stages {freeze_stages}: the model has {len(found)} residual stages; use 1 to "
                          f"{len(found)}, or -1 for everything but the classifier", "freeze_stages")
    return [p for stage in found[:freeze_stages] for p in stage]


def freeze(model: nn.Module, prefixes: list[str]) -> list[nn.Module]:
    """Turn off gradients of the parameters under ``prefixes``; returns the frozen modules (kept in eval mode during
    training, so their BatchNorm statistics stay those of the initial model)."""
    for name, p in model.named_parameters():
        if any(name.startswith(prefix) for prefix in prefixes):
            p.requires_grad_(False)
    return [m for n, m in model.named_modules() if n and any((n + ".").startswith(prefix) for prefix in prefixes)]


def hold_frozen(model: nn.Module, frozen: list[nn.Module], freeze_bn: bool) -> None:
    """After ``model.train()``: frozen modules back in eval mode, and with ``freeze_bn`` every BatchNorm too (its
    statistics fixed; its scale and shift still train unless frozen)."""
    for m in frozen:
        m.eval()
    if freeze_bn:
        for m in batchnorms(model):
            m.eval()


def precise_bn(model: nn.Module, dataset: torch.utils.data.Dataset, config: TrainConfig, epoch: int,
               device: torch.device, rank: int = 0, world: int = 1) -> int:
    """"Precise BN": the running statistics of every BatchNorm in training mode (frozen ones are left alone)
    re-estimated as the plain average over ``config.precise_bn`` batches of the training images, the first batches
    of epoch ``epoch``'s seeded order with its augmentation (so a resumed run re-estimates the same statistics).
    Returns the number of layers re-estimated; with no batch to read, the statistics stay as they were. In a
    distributed run the ranks agree on every batch (one whose images were all unreadable on any rank is skipped by
    all), so global BatchNorm's collective calls always match."""
    from .distributed import any_rank
    from .splits import epoch_loader

    layers = [m for m in batchnorms(model) if m.training and m.track_running_stats] if config.precise_bn else []
    if not layers:
        return 0
    saved = [(m.momentum, {k: v.clone() for k, v in m.state_dict().items()}) for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches
    seen = 0
    with torch.no_grad():
        for batch in epoch_loader(dataset, config, epoch, rank, world):
            if not any_rank(len(batch.images) == 0, world > 1, device):
                model(batch.images.to(device))
                seen += 1
            if seen == config.precise_bn:
                break  # before the loader reads a batch more
    for m, (momentum, state) in zip(layers, saved):
        m.momentum = momentum
        if not seen:
            m.load_state_dict(state)
    return len(layers) if seen else 0


def precise_bn_note(model: nn.Module, frozen: list[nn.Module], config: TrainConfig) -> Optional[str]:
    """A line for the log when ``--precise-bn`` has nothing to re-estimate: no BatchNorm layer with running statistics
    outside the frozen modules (a ViT, a linear probe); None otherwise."""
    held = {id(m) for f in frozen for m in f.modules()}
    if not config.precise_bn or any(m.track_running_stats and id(m) not in held for m in batchnorms(model)):
        return None
    where = "outside the frozen stages" if held else "at all"
    return (f"note: --precise-bn {config.precise_bn} changes nothing here: {type(model).__name__} has no BatchNorm "
            f"layer with running statistics {where}")


def parameter_groups(model: nn.Module, config: TrainConfig, new: set[str]) -> list[dict[str, Any]]:
    """Optimiser groups: weight decay on weights only; the pretrained parameters at ``pretrained_lr_mult`` times the
    learning rate (``lr_scale``), the new ones (``new``) at the full rate; frozen parameters left out."""
    groups: dict[tuple[bool, float], list[Tensor]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        scale = 1.0 if (not config.init or name in new) else config.pretrained_lr_mult
        groups.setdefault((p.dim() > 1, scale), []).append(p)
    if not groups:
        raise ConfigError("every parameter is frozen: nothing to train (lower --freeze-stages)", "freeze_stages")
    return [{"params": params, "weight_decay": config.weight_decay if decay else 0.0, "lr_scale": scale}
            for (decay, scale), params in sorted(groups.items(), key=lambda kv: (not kv[0][0], -kv[0][1]))]


def evidence_l1(model: nn.Module, images: Tensor) -> tuple[Tensor, Tensor]:
    """A BagNet's logits and the mean |class evidence| of its cells (the classifier's bias excluded): the sparsity
    penalty of Djoumessi et al. (MIDL 2023), from one forward pass."""
    logits, maps = unbiased_evidence(model, images)
    return logits, maps.abs().mean()


class WithEvidenceL1(nn.Module):
    """A BagNet whose forward returns ``(logits, mean |evidence|)``: what a run with ``evidence_l1 > 0`` trains (and
    what DistributedDataParallel wraps, so the penalty's gradients are reduced like the loss's)."""

    def __init__(self, model: BagNet) -> None:
        super().__init__()
        self.model = model
        self.last = 0.0  # the last batch's mean |evidence| (for the epoch's log)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        logits, l1 = evidence_l1(self.model, images)
        self.last = float(l1.detach())
        return logits, l1


def batchnorm_hint(epoch: Any, num_classes: int, config: TrainConfig, model: nn.Module) -> Optional[str]:
    """A line for the log when an epoch's validation top-1 stays near chance while its training top-1 does not, in a
    model with BatchNorm: the sign of running statistics that do not fit the batches' (small batches, frames mostly
    one colour), which ``--precise-bn`` or ``--freeze-bn`` avoid; None otherwise."""
    chance = 1.0 / max(num_classes, 2)
    near_chance, fitted = chance + 0.1 * (1 - chance), chance + 0.6 * (1 - chance)
    if (config.freeze_bn or not (math.isfinite(epoch.val_top1) and math.isfinite(epoch.train_top1))
            or epoch.val_top1 > near_chance or epoch.train_top1 < fitted
            or not batchnorms(model)):
        return None
    cure = ("--freeze-bn (the initial model's statistics)" if config.precise_bn else
            "--precise-bn 20 (statistics re-estimated after every epoch) or --freeze-bn (the initial model's)")
    return (f"note: validation top-1 {epoch.val_top1:.3f} is near chance ({chance:.3f}) while training top-1 is "
            f"{epoch.train_top1:.3f}; when batches are small or images mostly uniform background, BatchNorm's running "
            f"statistics may not fit (the model predicts well only in training mode): try {cure}")


def _cnn_arches() -> tuple[str, ...]:
    from ..models.cnn import CNN_BUILDERS

    return tuple(CNN_BUILDERS)


def _show(value: Any) -> str:
    return " ".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)
