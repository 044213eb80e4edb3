"""What defines a training run: :class:`TrainConfig` (saved as ``config.yaml``; every field is a ``bagnet train``
flag), validated field by field, and the network and metadata a config describes."""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from torch import nn

from ..errors import ConfigError
from ..models import BagNet, BagNetConfig
from ..models.cnn import CNN_BUILDERS, build_cnn
from ..models.external import is_external
from ..plumbing import is_window, write_text

CHECKPOINT = "checkpoint.pt"
#: Per-image augmentation policies of ``TrainConfig.augment`` (torchvision's, after the random crop and flip).
AUGMENTS = ("none", "trivialaugment", "randaugment")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (saved as config.yaml; every field is a ``bagnet train`` flag)."""

    arch: str = "bagnet"  # bagnet | resnet18 | resnet50 | vgg11_bn | vgg16_bn | densenet121 | vit
    patch_size: int = 17  # BagNets: patch size q; ViT: token size in pixels
    width: int = 64  # base width (BagNet, ResNet-18, VGG); ViT: embedding dimension
    layers: tuple[int, ...] = (3, 4, 6, 3)  # BagNet blocks per stage; ViT: (depth,)
    init: Optional[str] = None  # a model to start from: any spec bagnet.load takes
    freeze_stages: int = 0  # with init: 0 none, k the stem and the first k stages, -1 all but the classifier
    freeze_bn: bool = False  # BatchNorm statistics fixed during training (small batches)
    precise_bn: int = 0  # BatchNorm statistics re-estimated over this many training batches after every epoch
    pretrained_lr_mult: float = 1.0  # with init: learning rate of the pretrained layers / that of the new head
    data: str = "imagenette"  # imagenette | fashion-mnist | a folder with train/ and val/ sub-folders
    train_subset: Optional[str] = None  # a list file of training images (Imagenette's train_subset300.txt)
    holdout_per_class: int = 0  # training images per class held out (for choices; never tune on val)
    val_fraction: float = 0.0  # a folder of class folders only: the share of each class kept for validation
    test_fraction: float = 0.0  # ... and for the test split (reported, never tuned on)
    classes: Optional[tuple[str, ...]] = None  # class order (graded labels: none, mild, severe); default: sorted
    intensity_window: Optional[tuple[float, ...]] = None  # 16-bit/float images: LOW,HIGH → 0,255 (default: own range)
    mean: Optional[tuple[float, ...]] = None  # normalisation per RGB channel (default: --init's, else ImageNet's)
    std: Optional[tuple[float, ...]] = None
    class_weights: bool = False  # imbalanced data: each class's loss weighted by N / (C · its image count)
    balanced_sampler: bool = False  # imbalanced data: batches drawn with every class equally likely
    limit_train: Optional[int] = None  # use only the first N training images (after the hold-out)
    limit_val: Optional[int] = None
    image_size: int = 128
    resize: Optional[int] = None  # evaluation: resize the short side to this before the centre crop
    min_scale: float = 0.35  # RandomResizedCrop scale range lower bound
    augment: str = "none"  # none | trivialaugment | randaugment (after the crop and flip)
    random_erasing: float = 0.0  # probability of erasing one random rectangle of each training image
    mixup: float = 0.0  # Beta(a, a) mixing of image pairs in every batch (0: off)
    cutmix: float = 0.0  # Beta(a, a) CutMix of image pairs (0: off; with mixup too, each batch picks one, 50/50)
    drop_path: float = 0.0  # ViT: stochastic depth rate
    epochs: int = 30
    batch_size: int = 64  # global batch (split across ranks)
    optimizer: str = "adamw"  # adamw | sgd
    lr: float = 2e-3
    weight_decay: float = 0.05
    momentum: float = 0.9
    warmup_epochs: float = 2.0
    label_smoothing: float = 0.1
    evidence_l1: float = 0.0  # BagNets: weight of the L1 penalty on the class-evidence maps (sparse evidence)
    amp: bool = True  # mixed precision where the hardware has it (CUDA; bf16 on CPUs with AVX-512 BF16)
    channels_last: bool = True
    activation_checkpointing: bool = False  # BagNets: recompute each block in the backward pass (less memory)
    compile: bool = False  # torch.compile the training step's network (fused BatchNorm/ReLU; slow first step)
    workers: int = 2
    sync_bn: bool = True  # distributed runs: BatchNorm statistics over the global batch, as in one process
    seed: int = 0
    device: Optional[str] = None
    out: str = "runs/run"

    def __post_init__(self) -> None:
        _check_types(self)
        _check_ranges(self)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["layers"] = list(self.layers)
        d["classes"] = None if self.classes is None else list(self.classes)
        for name in ("intensity_window", "mean", "std"):
            value = getattr(self, name)
            d[name] = None if value is None else list(value)
        return d

    def save(self, path: Path) -> None:
        import yaml

        write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "TrainConfig":
        """Read a YAML (or TOML, by its suffix) config file. Syntax errors, unknown keys, wrong types and values out
        of range raise :class:`ConfigError` naming the file, the line and the field."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"cannot read the config file {path}: {err}") from err
        data, lines = _parse_config(text, path)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            where = f", line {lines[unknown[0]]}" if unknown[0] in lines else ""
            raise ConfigError(f"{path}{where}: unknown config keys {unknown}; known keys: {sorted(known)}", unknown[0])
        try:
            return cls(**data)
        except ConfigError as err:
            where = f", line {lines[err.field]}" if err.field in lines else ""
            raise ConfigError(f"{path}{where}: {err}", err.field) from None

    def replace(self, **overrides: Any) -> "TrainConfig":
        data = self.to_dict()
        data.update({k: v for k, v in overrides.items()})
        return TrainConfig(**data)


def _parse_config(text: str, path: Path) -> tuple[dict[str, Any], dict[str, int]]:
    """A config file's mapping and the line of each top-level key; syntax errors name the file and line."""
    if path.suffix == ".toml":
        import tomllib

        try:
            data: Any = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{path}: TOML syntax error: {err}") from None
        lines = {}
        for number, line in enumerate(text.splitlines(), start=1):
            key = line.split("=", 1)[0].strip()
            if "=" in line and key in data and key not in lines:
                lines[key] = number
        return data, lines
    import yaml

    try:
        data = yaml.safe_load(text)
        node = yaml.compose(text)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: YAML syntax error: {err.problem or err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: YAML error: {err}") from None
    if data is None:
        return {}, {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must be a mapping of field: value, got a {type(data).__name__}")
    lines = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, _ in node.value:
            lines.setdefault(str(key_node.value), key_node.start_mark.line + 1)
    return data, lines


def _flag(name: str) -> str:
    return f"{name} (--{name.replace('_', '-')})"


def _check_types(config: TrainConfig) -> None:
    """Every field has the type its annotation says (ints are accepted for floats; YAML lists for tuples)."""
    import typing

    hints = typing.get_type_hints(TrainConfig)
    for f in fields(TrainConfig):
        value = getattr(config, f.name)
        hint = hints[f.name]
        args = typing.get_args(hint)
        optional = type(None) in args
        base = next((a for a in args if a is not type(None)), hint) if optional else hint
        if value is None:
            if optional:
                continue
            raise ConfigError(f"{_flag(f.name)} must be set (got nothing)", f.name)
        if typing.get_origin(base) is tuple and typing.get_args(base)[0] is str:
            items = _names(value)
            if not items or len(set(items)) < len(items):
                raise ConfigError(f"{_flag(f.name)} must be a list of distinct, non-empty names (a,b,c), got "
                                  f"{value!r}", f.name)
            object.__setattr__(config, f.name, tuple(items))
        elif f.name in ("mean", "std"):
            if (not isinstance(value, (list, tuple)) or len(value) != 3 or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
                    or (f.name == "std" and min(value) <= 0)):
                raise ConfigError(f"{_flag(f.name)} must be three finite numbers (R G B)"
                                  + (" above 0" if f.name == "std" else "") + f", got {value!r}", f.name)
            object.__setattr__(config, f.name, tuple(float(v) for v in value))
        elif typing.get_origin(base) is tuple and typing.get_args(base)[0] is float:
            if not is_window(value):
                raise ConfigError(f"{_flag(f.name)} must be two finite numbers LOW HIGH with LOW < HIGH, got "
                                  f"{value!r}", f.name)
            object.__setattr__(config, f.name, tuple(float(v) for v in value))
        elif typing.get_origin(base) is tuple:
            if not isinstance(value, (list, tuple)) or not value or not all(_is_int(v) for v in value):
                raise ConfigError(f"{_flag(f.name)} must be a list of integers, got {value!r}", f.name)
            object.__setattr__(config, f.name, tuple(int(v) for v in value))
        elif base is bool:
            if not isinstance(value, bool):
                raise ConfigError(f"{_flag(f.name)} must be true or false, got {value!r}", f.name)
        elif base is int:
            if not _is_int(value):
                raise ConfigError(f"{_flag(f.name)} must be an integer, got {value!r}", f.name)
        elif base is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"{_flag(f.name)} must be a finite number, got {value!r}", f.name)
            object.__setattr__(config, f.name, float(value))
        elif base is str:
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{_flag(f.name)} must be a non-empty string, got {value!r}", f.name)


def _names(value: Any) -> list[str]:
    """Class names from a list, or from comma-separated text (``--classes none,mild,severe``)."""
    parts = [value] if isinstance(value, str) else list(value) if isinstance(value, (list, tuple)) else [None]
    if not all(isinstance(p, (str, int)) and not isinstance(p, bool) for p in parts):
        return []
    names = [n.strip() for p in parts for n in str(p).split(",")]
    return names if all(names) else []


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


#: What each field does (the ``bagnet train --help`` text of its flag).
FIELD_HELP: dict[str, str] = {
    "arch": "architecture: bagnet, resnet18, resnet50, vgg11_bn, vgg16_bn, densenet121 or vit",
    "patch_size": "BagNet: the patch size q each evidence cell sees; ViT: the token size in pixels",
    "width": "base width (channels of the first stage); ViT: the embedding dimension",
    "layers": "BagNet: residual blocks per stage; ViT: its depth (one number)",
    "init": "a model to start from: any name, file, run folder or hf-hub:/torchvision:/timm: spec that bagnet.load "
            "takes (bagnet33:imagenet, bagnet17:imagenette, …); its architecture and resolution are used, and its "
            "classifier is replaced when the number of classes differs",
    "freeze_stages": "with --init: freeze the stem and the first K residual stages (0: none; -1: everything but the "
                     "classifier, a linear probe on the patch features)",
    "freeze_bn": "keep every BatchNorm's statistics fixed during training (small batches)",
    "precise_bn": "after every epoch, before validation, re-estimate every training BatchNorm's statistics as the "
                  "plain average over this many training batches (\"precise BN\": running averages that lag behind the "
                  "weights or vary with small batches make the eval-mode model unstable); 0: off",
    "pretrained_lr_mult": "with --init: the pretrained layers' learning rate as a multiple of the new head's",
    "data": "imagenette, fashion-mnist, a folder with train/ and val/ class sub-folders, one folder of class folders "
            "(with --val-fraction), or a CSV of path,label[,group][,split] (paths relative to it)",
    "train_subset": "a list file of the training images to use (e.g. Imagenette's train_subset300.txt)",
    "holdout_per_class": "training images per class held out for choices (never tune on val)",
    "val_fraction": "data that is one folder of class folders: the seeded, stratified share of each class kept for "
                    "validation (the split is saved in the run)",
    "test_fraction": "… and for a test split, evaluated at the end and never used for choices",
    "intensity_window": "16-bit and float images (and DICOM, over its own window): the grey values LOW HIGH mapped "
                        "to 0 and 255, values outside clipped (default: each image's own range)",
    "mean": "normalisation mean per RGB channel, R G B (default: that of --init's model, else ImageNet's)",
    "std": "normalisation standard deviation per RGB channel, R G B (default: that of --init's model, else "
           "ImageNet's)",
    "class_weights": "imbalanced data: weight each class's loss by N / (C · its training images)",
    "balanced_sampler": "imbalanced data: draw each epoch's images with every class equally likely (with "
                        "replacement; seeded per epoch, so --resume stays exact)",
    "classes": "class order, comma-separated (graded labels: none,mild,severe; 2,10 is not sorted as text); "
               "default: the sorted folder names",
    "limit_train": "use only N seeded-random training images (after the hold-out)",
    "limit_val": "evaluate on only N seeded-random validation images",
    "image_size": "side of the square training crops and of the evaluation centre crop (px)",
    "resize": "evaluation: resize the short side to this before the centre crop (default: image_size)",
    "min_scale": "smallest area fraction of a random resized crop, in (0, 1]",
    "augment": "per-image augmentation after crop and flip: none, trivialaugment or randaugment",
    "random_erasing": "probability of erasing a random rectangle of each training image",
    "mixup": "MixUp Beta(a, a) parameter (0: off)",
    "cutmix": "CutMix Beta(a, a) parameter (0: off; with mixup, each batch uses one of them)",
    "drop_path": "ViT: stochastic depth rate",
    "epochs": "training epochs",
    "batch_size": "global batch size (split across processes under torchrun)",
    "optimizer": "adamw or sgd",
    "lr": "peak learning rate (after the warm-up; cosine decay to zero)",
    "weight_decay": "weight decay of weights (not of biases and norm parameters)",
    "momentum": "SGD momentum (Nesterov)",
    "warmup_epochs": "epochs of linear learning-rate warm-up",
    "label_smoothing": "label smoothing of the cross-entropy loss, in [0, 1)",
    "evidence_l1": "BagNets: weight λ of an L1 penalty on the class-evidence maps (sparse evidence, Djoumessi et al. "
                   "2023); 0: off",
    "amp": "mixed precision where the hardware has it (CUDA; bf16 on CPUs with AVX-512 BF16)",
    "channels_last": "channels-last memory layout",
    "activation_checkpointing": "BagNets: keep only each residual block's input and recompute the rest in the "
                                "backward pass (less memory for about one more forward pass per step; same results)",
    "compile": "torch.compile the network for training steps (BatchNorm and ReLU fused; the first step compiles "
               "for a minute or two; same computation within float rounding)",
    "workers": "data-loading worker processes",
    "sync_bn": "distributed runs: BatchNorm statistics over the global batch",
    "seed": "seed of the data order, augmentation and initialisation",
    "device": "cpu, cuda or cuda:N (default: the GPU when there is one)",
    "out": "the run folder (config.yaml, checkpoint.pt, metrics, model.safetensors)",
}

#: Allowed ranges of the numeric fields: (low, high, whether low itself is allowed); None: unbounded.
_RANGES: dict[str, tuple[Optional[float], Optional[float], bool]] = {
    "patch_size": (1, 512, True), "width": (1, 4096, True), "holdout_per_class": (0, None, True),
    "limit_train": (1, None, True), "limit_val": (1, None, True), "image_size": (8, 4096, True),
    "resize": (8, 8192, True), "min_scale": (0, 1, False), "random_erasing": (0, 1, True), "mixup": (0, 100, True),
    "cutmix": (0, 100, True), "drop_path": (0, 0.99, True), "epochs": (1, 1_000_000, True),
    "batch_size": (1, 1 << 20, True), "lr": (0, None, False), "weight_decay": (0, None, True),
    "momentum": (0, 0.999, True), "warmup_epochs": (0, None, True), "label_smoothing": (0, 0.99, True),
    "workers": (0, 64, True), "seed": (0, 2**31 - 1, True), "freeze_stages": (-1, 16, True),
    "pretrained_lr_mult": (0, None, True), "val_fraction": (0, 0.9, True), "test_fraction": (0, 0.9, True),
    "evidence_l1": (0, None, True), "precise_bn": (0, 1_000_000, True),
}
ARCHES = ("bagnet",) + tuple(CNN_BUILDERS)


def _check_ranges(config: TrainConfig) -> None:
    for name, (low, high, low_ok) in _RANGES.items():
        value = getattr(config, name)
        if value is None:
            continue
        too_low = low is not None and (value < low if low_ok else value <= low)
        if too_low or (high is not None and value > high):
            lo = "-inf" if low is None else f"{low:g}"
            hi = "inf)" if high is None else f"{high:g}]"
            span = f"{'[' if low_ok else '('}{lo}, {hi}"
            raise ConfigError(f"{_flag(name)} must lie in {span}, got {value!r}", name)
    _check_transfer(config)
    choices = {"arch": ARCHES, "optimizer": ("adamw", "sgd"), "augment": AUGMENTS}
    for name, allowed in choices.items():
        if name == "arch" and config.init and is_external(config.arch):
            continue
        if getattr(config, name) not in allowed:
            raise ConfigError(f"{_flag(name)} must be one of {', '.join(allowed)}, got {getattr(config, name)!r}", name)
    if any(not 1 <= b <= 64 for b in config.layers) or len(config.layers) > 8:
        raise ConfigError(f"{_flag('layers')} must be 1 to 8 numbers in [1, 64], got {list(config.layers)}", "layers")
    if config.arch == "bagnet":
        try:
            BagNetConfig.for_patch_size(config.patch_size, layers=config.layers, width=config.width, num_classes=2)
        except ValueError as err:
            raise ConfigError(f"{_flag('patch_size')}: {err}", "patch_size") from None
    if config.arch == "vit":
        if len(config.layers) != 1:
            raise ConfigError(f"{_flag('layers')}: a ViT's layers is its depth, one number (e.g. [8]), got "
                              f"{list(config.layers)}", "layers")
        if config.image_size % config.patch_size:
            raise ConfigError(f"{_flag('image_size')} must be a multiple of the ViT's token size patch_size="
                              f"{config.patch_size}, got {config.image_size}", "image_size")
        if config.width % max(1, config.width // 64):
            raise ConfigError(f"{_flag('width')}: the ViT's width must be divisible by its width // 64 heads, got "
                              f"{config.width}", "width")
    if config.device is not None:
        try:
            device = torch.device(config.device)
        except (RuntimeError, ValueError):
            raise ConfigError(f"{_flag('device')} must be a torch device such as cpu, cuda or cuda:1, got "
                              f"{config.device!r}", "device") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"{_flag('device')} is {config.device!r} but this machine has no CUDA GPU that PyTorch "
                              f"can use (leave it unset: training picks the GPU when there is one)", "device")


def _check_transfer(config: TrainConfig) -> None:
    """The options that only mean something together: transfer options need --init, fractions must leave data."""
    if not config.init:
        for name, neutral in (("freeze_stages", 0), ("pretrained_lr_mult", 1.0)):
            if getattr(config, name) != neutral:
                raise ConfigError(f"{_flag(name)} applies to a run that starts from --init; there is none", name)
    if config.val_fraction + config.test_fraction >= 0.9:
        raise ConfigError(f"val_fraction + test_fraction must leave training data: {config.val_fraction} + "
                          f"{config.test_fraction} >= 0.9", "val_fraction")
    if config.precise_bn and config.freeze_bn:
        raise ConfigError(f"{_flag('precise_bn')} re-estimates the BatchNorm statistics that {_flag('freeze_bn')} "
                          "keeps fixed; use one of them", "precise_bn")
    if config.evidence_l1 > 0 and config.arch != "bagnet":
        raise ConfigError(f"{_flag('evidence_l1')} penalises a BagNet's evidence maps; arch {config.arch} has none",
                          "evidence_l1")


# ---------------------------------------------------------------------------------------------------- models
def build_model(config: TrainConfig, num_classes: int) -> nn.Module:
    """The network a config describes, freshly initialised (a run with ``init`` starts from
    :func:`bagnet.train.transfer.initial_model` instead)."""
    if config.arch == "bagnet":
        bag_config = BagNetConfig.for_patch_size(config.patch_size, layers=config.layers, width=config.width,
                                                 num_classes=num_classes)
        model: nn.Module = BagNet(bag_config)
        model.checkpoint_stages = config.activation_checkpointing
    elif config.arch == "vit":
        model = build_cnn("vit", num_classes=num_classes, **_vit_kwargs(config), drop_path=config.drop_path)
    else:
        model = build_cnn(config.arch, num_classes=num_classes, width=config.width)
    return model


def model_metadata(config: TrainConfig, categories: Sequence[str]) -> dict[str, Any]:
    """What a saved model needs to be loaded and used: architecture, class names and preprocessing."""
    if config.arch == "vit":
        arch_kwargs: dict[str, Any] = _vit_kwargs(config)
    else:
        arch_kwargs = {"width": config.width} if config.arch in CNN_BUILDERS else {}
    return {
        "arch": config.arch,
        "arch_kwargs": arch_kwargs,
        "categories": list(categories),
        "preprocess": {"resize": config.resize or config.image_size, "crop": config.image_size,
                       **({"mean": list(config.mean)} if config.mean else {}),
                       **({"std": list(config.std)} if config.std else {})},
        **({"intensity_window": [float(v) for v in config.intensity_window]} if config.intensity_window else {}),
    }


def _vit_kwargs(config: TrainConfig) -> dict[str, Any]:
    """The ViT's architecture in the config's fields: token size, embedding width, depth."""
    if len(config.layers) != 1:
        raise ValueError(f"a ViT's layers is its depth, one number (e.g. [8]), got {list(config.layers)}")
    return {"image_size": config.image_size, "patch_size": config.patch_size, "width": config.width,
            "depth": config.layers[0], "heads": max(1, config.width // 64), "mlp_ratio": 4}
