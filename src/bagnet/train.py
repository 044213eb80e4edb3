"""Training and evaluation: BagNets of any patch size and width, and the standard CNNs they are compared with.

- One config (:class:`TrainConfig`) saved as ``config.yaml`` beside every run; the same fields are CLI flags.
- Reproducible: every epoch's data order and every sample's augmentation are functions of (seed, epoch, index), and
  the checkpoint holds the model, optimiser and RNG states, so ``resume=True`` continues a killed run to the same
  weights it would have reached without the kill (checkpoints are written atomically every epoch and on Ctrl-C).
- Distributed: run the same command under ``torchrun --nproc_per_node N``; DistributedDataParallel with NCCL on
  GPUs and Gloo on CPUs, each rank taking its share of every global batch; rank 0 logs and writes checkpoints.
"""

from __future__ import annotations

import math
import re
import os
import random
import signal
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torchvision import transforms

from .data import Batch, SkipLog, collate, fashion_mnist, imagenette, ImageFolderDataset
from .models import BagNet, BagNetConfig, save_weights
from .models.cnn import CNN_BUILDERS, build_cnn
from .errors import ConfigError, RunFolderError, TrainingDiverged
from .models.preprocess import IMAGENET_MEAN, IMAGENET_STD
from .plumbing import SCHEMA_VERSION, eval_mode, model_device, output_lock, write_csv, write_json, write_text

CHECKPOINT = "checkpoint.pt"
#: Per-image augmentation policies of ``TrainConfig.augment`` (torchvision's, after the random crop and flip).
AUGMENTS = ("none", "trivialaugment", "randaugment")


# ---------------------------------------------------------------------------------------------------- config
@dataclass
class TrainConfig:
    """Everything that defines a training run (saved as config.yaml; every field is a ``bagnet train`` flag)."""

    arch: str = "bagnet"  # bagnet | resnet18 | resnet50 | vgg11_bn | vgg16_bn | densenet121 | vit
    patch_size: int = 17  # BagNets: patch size q; ViT: token size in pixels
    width: int = 64  # base width (BagNet, ResNet-18, VGG); ViT: embedding dimension
    layers: tuple[int, ...] = (3, 4, 6, 3)  # BagNet blocks per stage; ViT: (depth,)
    init: Optional[str] = None  # weights file to start from
    data: str = "imagenette"  # imagenette | fashion-mnist | a folder with train/ and val/ sub-folders
    train_subset: Optional[str] = None  # a list file of training images (Imagenette's train_subset300.txt)
    holdout_per_class: int = 0  # training images per class held out (for choices; never tune on val)
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
    amp: bool = True  # mixed precision where the hardware has it (CUDA; bf16 on CPUs with AVX-512 BF16)
    channels_last: bool = True
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
        if typing.get_origin(base) is tuple:
            if not isinstance(value, (list, tuple)) or not value or not all(_is_int(v) for v in value):
                raise ConfigError(f"{_flag(f.name)} must be a list of integers, got {value!r}", f.name)
            setattr(config, f.name, tuple(int(v) for v in value))
        elif base is bool:
            if not isinstance(value, bool):
                raise ConfigError(f"{_flag(f.name)} must be true or false, got {value!r}", f.name)
        elif base is int:
            if not _is_int(value):
                raise ConfigError(f"{_flag(f.name)} must be an integer, got {value!r}", f.name)
        elif base is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"{_flag(f.name)} must be a finite number, got {value!r}", f.name)
            setattr(config, f.name, float(value))
        elif base is str:
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{_flag(f.name)} must be a non-empty string, got {value!r}", f.name)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


#: Allowed ranges of the numeric fields: (low, high, whether low itself is allowed); None: unbounded.
_RANGES: dict[str, tuple[Optional[float], Optional[float], bool]] = {
    "patch_size": (1, 512, True), "width": (1, 4096, True), "holdout_per_class": (0, None, True),
    "limit_train": (1, None, True), "limit_val": (1, None, True), "image_size": (8, 4096, True),
    "resize": (8, 8192, True), "min_scale": (0, 1, False), "random_erasing": (0, 1, True), "mixup": (0, 100, True),
    "cutmix": (0, 100, True), "drop_path": (0, 0.99, True), "epochs": (1, 1_000_000, True),
    "batch_size": (1, 1 << 20, True), "lr": (0, None, False), "weight_decay": (0, None, True),
    "momentum": (0, 0.999, True), "warmup_epochs": (0, None, True), "label_smoothing": (0, 0.99, True),
    "workers": (0, 256, True), "seed": (0, 2**31 - 1, True),
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
            span = f"{'[' if low_ok else '('}{lo}, {'inf' if high is None else f'{high:g}'}{']' if high is not None else ')'}"
            raise ConfigError(f"{_flag(name)} must lie in {span}, got {value!r}", name)
    choices = {"arch": ARCHES, "optimizer": ("adamw", "sgd"), "augment": AUGMENTS}
    for name, allowed in choices.items():
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


# ---------------------------------------------------------------------------------------------------- models
def build_model(config: TrainConfig, num_classes: int) -> nn.Module:
    """The network a config describes, freshly initialised (or loaded from ``config.init``)."""
    if config.arch == "bagnet":
        bag_config = BagNetConfig.for_patch_size(config.patch_size, layers=config.layers, width=config.width,
                                                 num_classes=num_classes)
        model: nn.Module = BagNet(bag_config)
    elif config.arch == "vit":
        model = build_cnn("vit", num_classes=num_classes, **_vit_kwargs(config), drop_path=config.drop_path)
    else:
        model = build_cnn(config.arch, num_classes=num_classes, width=config.width)
    if config.init:
        from .models.weights import load_into, read_checkpoint

        load_into(model, read_checkpoint(config.init).state_dict, config.init)
    return model


def model_metadata(config: TrainConfig, categories: Sequence[str]) -> dict[str, Any]:
    """What a saved model needs to be loaded and used: architecture, class names and preprocessing."""
    if config.arch == "vit":
        arch_kwargs: dict[str, Any] = _vit_kwargs(config)
    else:
        arch_kwargs = {"width": config.width} if config.arch != "bagnet" else {}
    return {
        "arch": config.arch,
        "arch_kwargs": arch_kwargs,
        "categories": list(categories),
        "preprocess": {"resize": config.resize or config.image_size, "crop": config.image_size},
    }


def _vit_kwargs(config: TrainConfig) -> dict[str, Any]:
    """The ViT's architecture in the config's fields: token size, embedding width, depth."""
    if len(config.layers) != 1:
        raise ValueError(f"a ViT's layers is its depth, one number (e.g. [8]), got {list(config.layers)}")
    return {"image_size": config.image_size, "patch_size": config.patch_size, "width": config.width,
            "depth": config.layers[0], "heads": max(1, config.width // 64), "mlp_ratio": 4}


# ---------------------------------------------------------------------------------------------------- data
def train_transform(config: TrainConfig) -> Callable:
    steps: list[Callable] = [
        transforms.RandomResizedCrop(config.image_size, scale=(config.min_scale, 1.0), antialias=True),
        transforms.RandomHorizontalFlip(),
    ]
    if config.augment == "trivialaugment":
        steps.append(transforms.TrivialAugmentWide())
    elif config.augment == "randaugment":
        steps.append(transforms.RandAugment())
    steps += [transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    if config.random_erasing > 0:
        steps.append(transforms.RandomErasing(p=config.random_erasing, value=0))
    return transforms.Compose(steps)


def mix_batch(images: Tensor, mixup: float, cutmix: float, rng: np.random.Generator
              ) -> tuple[Tensor, Optional[Tensor], float]:
    """MixUp or CutMix of a batch with a permutation of itself: ``(mixed, permutation, lam)``; the loss is
    ``lam · loss(labels) + (1 − lam) · loss(labels[permutation])``. ``(images, None, 1.0)`` when both are off."""
    n = images.shape[0]
    if n < 2 or (mixup <= 0 and cutmix <= 0):
        return images, None, 1.0
    use_cutmix = cutmix > 0 and (mixup <= 0 or rng.random() < 0.5)
    lam = float(rng.beta(cutmix, cutmix) if use_cutmix else rng.beta(mixup, mixup))
    perm = torch.from_numpy(rng.permutation(n)).to(images.device)
    if not use_cutmix:
        return images * lam + images[perm] * (1 - lam), perm, lam
    h, w = images.shape[-2:]
    cut = math.sqrt(1 - lam)
    ch, cw = int(h * cut), int(w * cut)
    cy, cx = int(rng.integers(h)), int(rng.integers(w))
    top, bottom = max(cy - ch // 2, 0), min(cy + ch // 2, h)
    left, right = max(cx - cw // 2, 0), min(cx + cw // 2, w)
    mixed = images.clone()
    mixed[..., top:bottom, left:right] = images[perm][..., top:bottom, left:right]
    return mixed, perm, 1 - (bottom - top) * (right - left) / (h * w)


def eval_transform(config: TrainConfig) -> Callable:
    return transforms.Compose([
        transforms.Resize(config.resize or config.image_size, antialias=True),
        transforms.CenterCrop(config.image_size),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


@dataclass
class Splits:
    train: torch.utils.data.Dataset
    holdout: Optional[torch.utils.data.Dataset]
    val: torch.utils.data.Dataset
    categories: list[str]


def make_splits(config: TrainConfig) -> Splits:
    """Training, held-out and validation datasets; the hold-out is a fixed, seeded choice of training images."""
    train_t, eval_t = train_transform(config), eval_transform(config)
    if config.data == "imagenette":
        train_full = imagenette("train", train_t, subset=config.train_subset)
        train_eval = imagenette("train", eval_t, subset=config.train_subset)
        val = imagenette("val", eval_t)
    elif config.data == "fashion-mnist":
        train_full, train_eval = fashion_mnist("train", train_t), fashion_mnist("train", eval_t)
        val = fashion_mnist("test", eval_t)
    else:
        root = Path(config.data)
        train_full = ImageFolderDataset(root / "train", train_t)
        train_eval = ImageFolderDataset(root / "train", eval_t)
        val = ImageFolderDataset(root / "val", eval_t)
        if train_full.classes != val.classes:
            raise ValueError(f"class folders differ between {root / 'train'} and {root / 'val'}")
    targets = list(train_full.targets)
    rng = random.Random(config.seed)
    holdout_idx: list[int] = []
    if config.holdout_per_class:
        for c in sorted(set(targets)):
            members = [i for i, t in enumerate(targets) if t == c]
            holdout_idx += sorted(rng.sample(members, min(config.holdout_per_class, len(members) // 2)))
    held = set(holdout_idx)
    train_idx = [i for i in range(len(targets)) if i not in held]
    if config.limit_train is not None:
        train_idx = sorted(random.Random(config.seed + 1).sample(train_idx, min(config.limit_train, len(train_idx))))
    val_idx = list(range(len(val)))
    if config.limit_val is not None:
        val_idx = sorted(random.Random(config.seed + 2).sample(val_idx, min(config.limit_val, len(val_idx))))
    return Splits(
        train=torch.utils.data.Subset(train_full, train_idx),
        holdout=torch.utils.data.Subset(train_eval, holdout_idx) if holdout_idx else None,
        val=torch.utils.data.Subset(val, val_idx),
        categories=list(train_full.categories),
    )


class SeededSamples(torch.utils.data.Dataset):
    """Wraps a dataset so that item ``(i, seed)`` is drawn with the torch RNG seeded by ``seed``: each sample's
    augmentation depends only on (run seed, epoch, index), whatever the worker, rank or resume point."""

    def __init__(self, dataset: torch.utils.data.Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, item: tuple[int, int]) -> Any:
        index, seed = item
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            sample = self.dataset[index]
        if isinstance(sample, tuple):  # report the index in the wrapped dataset
            sample = (sample[0], sample[1], index)
        return sample


class EpochBatches(torch.utils.data.Sampler):
    """Global batches of a seeded per-epoch permutation; rank ``r`` of ``world`` takes ``batch[r::world]``."""

    def __init__(self, n: int, batch_size: int, seed: int, epoch: int, rank: int = 0, world: int = 1,
                 skip: int = 0) -> None:
        if batch_size % world:
            raise ValueError(f"the global batch size {batch_size} must be divisible by the {world} processes")
        self.n, self.batch_size, self.seed, self.epoch = n, batch_size, seed, epoch
        self.rank, self.world, self.skip = rank, world, skip

    def __len__(self) -> int:
        return self.n // self.batch_size - self.skip

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.n, generator=g).tolist()
        for b in range(self.skip, self.n // self.batch_size):
            batch = order[b * self.batch_size : (b + 1) * self.batch_size]
            yield [(i, sample_seed(self.seed, self.epoch, i)) for i in batch[self.rank :: self.world]]


def sample_seed(seed: int, epoch: int, index: int) -> int:
    return (seed * 1_000_003 + epoch * 10_007 + index) % (2**31)


# ---------------------------------------------------------------------------------------------------- training
@dataclass
class EpochMetrics:
    epoch: int
    train_loss: float
    train_top1: float
    images_per_s: float
    lr: float
    val_top1: float
    val_top5: float
    holdout_top1: Optional[float]
    skipped_total: int
    seconds: float


@dataclass
class TrainResult:
    """What a run produced: its directory, per-epoch metrics and the final weights file."""

    out: Path
    config: TrainConfig
    history: list[EpochMetrics]
    weights: Optional[Path]
    skipped: int
    wall_seconds: float
    completed: bool
    commands: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "out": str(self.out), "config": self.config.to_dict(),
                "history": [asdict(h) for h in self.history], "weights": str(self.weights) if self.weights else None,
                "skipped": self.skipped, "wall_seconds": self.wall_seconds, "completed": self.completed,
                "commands": self.commands}


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm whose training statistics are taken over the global batch of all processes (any device).

    torch.nn.SyncBatchNorm runs only on GPUs; this one all-reduces the per-channel sums with the differentiable
    ``torch.distributed.nn.functional.all_reduce``, so gradients flow across processes as in one big batch and a
    DDP run computes what a single process with the same global batch computes.
    """

    #: Process group for the statistics; its own, so that its collectives never interleave with DDP's.
    group: Any = None

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or not dist.is_initialized():
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        c = x.shape[1]
        count = torch.full((1,), x.numel() / c, dtype=x.dtype, device=x.device)
        local_sum = x.sum(dim=(0, 2, 3))
        stats = all_reduce(torch.cat([local_sum, count]), group=self.group)
        n = stats[-1]
        mean = stats[:c] / n
        centred = x - mean[None, :, None, None]
        var = all_reduce((centred * centred).sum(dim=(0, 2, 3)), group=self.group) / n
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * n / (n - 1), alpha=m)
        out = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            out = out * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return out


def use_global_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Make every BatchNorm2d compute global-batch statistics in a distributed run (parameters unchanged)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    group = dist.new_group(backend="gloo")
    for module in model.modules():
        if type(module) is nn.BatchNorm2d:
            module.__class__ = GlobalBatchNorm2d
            module.group = group
    return model


class _Interrupted(Exception):
    pass


def lr_at(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Linear warm-up, then cosine decay to zero, as a function of the global step."""
    total = config.epochs * steps_per_epoch
    warm = int(config.warmup_epochs * steps_per_epoch)
    if step < warm:
        return config.lr * (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    return config.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.dim() <= 1 else decay).append(p)  # no weight decay on biases and norm parameters
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=config.lr)


def _dist_info() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return rank, world, local


def train(
    config: TrainConfig,
    resume: bool = False,
    progress: bool = True,
    log: Optional[Callable[[str], None]] = None,
    stop_after_steps: Optional[int] = None,
    command: Optional[str] = None,
) -> TrainResult:
    """Train the model ``config`` describes; resume from ``out/checkpoint.pt`` when ``resume`` is set.

    ``stop_after_steps`` interrupts the run after that many optimiser steps as Ctrl-C would (for tests);
    ``command`` (the command line that started it) is recorded in summary.json. A second process training into the
    same folder fails at once (:class:`bagnet.outputs.OutputBusyError`); a run whose loss or weights become
    non-finite stops with :class:`bagnet.errors.TrainingDiverged`, keeping its last checkpoint and saving no model.
    """
    rank = _dist_info()[0]
    if rank != 0:
        return _train(config, resume, progress, log, stop_after_steps, command)
    with output_lock(config.out):
        return _train(config, resume, progress, log, stop_after_steps, command)


def _train(config: TrainConfig, resume: bool, progress: bool, log: Optional[Callable[[str], None]],
           stop_after_steps: Optional[int], command: Optional[str]) -> TrainResult:
    rank, world, local_rank = _dist_info()
    distributed = world > 1
    log = log or (lambda msg: print(msg, file=sys.stderr))
    say = log if rank == 0 else (lambda msg: None)
    if config.device:
        device = torch.device(config.device)
    elif torch.cuda.is_available():
        device = torch.device("cuda", local_rank if distributed else 0)
    else:
        device = torch.device("cpu")
    if distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    out = Path(config.out)
    ckpt_path = out / CHECKPOINT
    state: Optional[dict[str, Any]] = None
    # everything about the run folder is checked before anything in it is written
    if resume:
        state = read_run_checkpoint(ckpt_path, config)
    elif rank == 0 and ckpt_path.exists():
        raise FileExistsError(f"{ckpt_path} exists: pass --resume to continue that run, or choose another --out")
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        if not resume:
            config.save(out / "config.yaml")

    torch.manual_seed(config.seed)
    random.seed(config.seed)
    np.random.seed(config.seed)
    splits = make_splits(config)
    model = build_model(config, len(splits.categories)).to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = _optimizer(config, model)
    amp_dtype = autocast_dtype(device) if config.amp else None
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    steps_per_epoch = len(splits.train) // config.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"{len(splits.train)} training images give no full batch of {config.batch_size}")

    history: list[EpochMetrics] = []
    start_epoch, start_step, wall_before, skipped_paths = 0, 0, 0.0, {}
    resume_stats: Optional[tuple] = None
    commands: list[str] = []
    if state is not None:
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scaler.load_state_dict(state["scaler"])
            torch.set_rng_state(state["torch_rng"])
        except (RuntimeError, KeyError, TypeError, ValueError) as err:
            raise RunFolderError(f"{ckpt_path} does not fit the model and optimiser of {out / 'config.yaml'} "
                                 f"({type(err).__name__}: {str(err)[:300]}); restore the run's own checkpoint, or "
                                 f"start over in another --out") from None
        start_epoch, start_step = state["epoch"], state["step_in_epoch"]
        history = [EpochMetrics(**h) for h in state["history"]]
        wall_before = state["wall_seconds"]
        skipped_paths = dict(state.get("skipped", {}))
        resume_stats = state.get("epoch_stats")
        commands = list(state.get("commands", []))
        say(f"resuming {out} at epoch {start_epoch + 1}, step {start_step}/{steps_per_epoch}")

    net: nn.Module = model
    if distributed:
        if config.sync_bn:
            use_global_batchnorm(model, device)
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                                  broadcast_buffers=not config.sync_bn)
    skips = SkipLog(say)
    skips.paths.update(skipped_paths)
    if command:
        commands.append(command)
    started = time.time()

    def save_checkpoint(epoch: int, step_in_epoch: int, epoch_stats: Optional[tuple] = None) -> None:
        if rank != 0:
            return
        state = {
            "config": config.to_dict(), "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(), "torch_rng": torch.get_rng_state(), "epoch": epoch,
            "step_in_epoch": step_in_epoch, "history": [asdict(h) for h in history],
            "wall_seconds": wall_before + time.time() - started, "skipped": dict(skips.paths),
            "epoch_stats": epoch_stats, "commands": commands,
        }
        tmp = ckpt_path.with_name(ckpt_path.name + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, ckpt_path)

    def check_finite(loss: float, epoch: int, step: int) -> None:
        bad = not math.isfinite(loss)
        if _any_rank(bad, distributed, device):
            last = (f"the last checkpoint, {ckpt_path}, written before the loss broke, is kept"
                    if ckpt_path.exists() else "no checkpoint had been written yet")
            raise TrainingDiverged(
                f"training diverged: the loss became {loss} at epoch {epoch + 1}, step {step + 1}; {last}; no model "
                f"was saved. Lower the learning rate (--lr, now {config.lr:g}) or the warm-up (--warmup-epochs), "
                f"then start a new run (--out)")

    interrupted = {"flag": False}
    previous_handler = None
    if rank == 0 and _in_main_thread():
        previous_handler = signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGINT, lambda *_: interrupted.__setitem__("flag", True))

    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    steps_done = 0
    completed = False
    diverged: Optional[TrainingDiverged] = None
    try:
        for epoch in range(start_epoch, config.epochs):
            skip = start_step if epoch == start_epoch else 0
            sampler = EpochBatches(len(splits.train), config.batch_size, config.seed, epoch, rank, world, skip)
            loader = torch.utils.data.DataLoader(
                SeededSamples(splits.train), batch_sampler=sampler, collate_fn=collate,
                num_workers=config.workers, generator=torch.Generator().manual_seed(config.seed + epoch),
            )
            net.train()
            epoch_start, seen, loss_sum, correct = time.time(), 0, 0.0, 0
            if skip and resume_stats:
                loss_sum, correct, seen, elapsed = resume_stats
                epoch_start -= elapsed
            bar = _bar(len(sampler), f"epoch {epoch + 1}/{config.epochs}", progress and rank == 0)
            for step, batch in enumerate(loader, start=skip):
                skips.add(batch.skipped)
                global_step = epoch * steps_per_epoch + step
                lr = lr_at(config, global_step, steps_per_epoch)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                mix_rng = np.random.default_rng([config.seed, global_step, rank])
                loss, n_correct, n = _train_step(net, batch, loss_fn, optimizer, scaler, device, amp_dtype,
                                                 config.channels_last, config, mix_rng)
                check_finite(loss, epoch, step)
                seen += n
                loss_sum += loss * n
                correct += n_correct
                bar.update(1)
                bar.set_postfix(loss=f"{loss_sum / max(seen, 1):.3f}", acc=f"{correct / max(seen, 1):.3f}",
                                img_s=f"{seen * world / (time.time() - epoch_start):.0f}")
                steps_done += 1
                if stop_after_steps is not None and steps_done >= stop_after_steps:
                    interrupted["flag"] = True
                if _any_rank(interrupted["flag"], distributed, device):
                    save_checkpoint(epoch, step + 1, (loss_sum, correct, seen, time.time() - epoch_start))
                    raise _Interrupted()
            bar.close()
            stats = torch.tensor([loss_sum, correct, seen], dtype=torch.float64, device=device)
            if distributed:
                dist.all_reduce(stats)
            seconds = time.time() - epoch_start
            broken = [n for n, p in model.state_dict().items() if p.is_floating_point() and not bool(torch.isfinite(p).all())]
            if _any_rank(bool(broken), distributed, device):
                raise TrainingDiverged(f"training diverged: non-finite weights ({', '.join(broken[:3])}) after epoch "
                                       f"{epoch + 1}; the checkpoint {ckpt_path} of the last finite epoch is kept and "
                                       f"no model was saved. Lower the learning rate (--lr, now {config.lr:g})")
            val = evaluate_accuracy(model, splits.val, config, device) if rank == 0 else (0.0, 0.0)
            held = evaluate_accuracy(model, splits.holdout, config, device)[0] if splits.holdout and rank == 0 else None
            history.append(EpochMetrics(
                epoch=epoch + 1, train_loss=float(stats[0] / max(stats[2], 1)),
                train_top1=float(stats[1] / max(stats[2], 1)), images_per_s=float(stats[2]) / seconds,
                lr=lr_at(config, (epoch + 1) * steps_per_epoch - 1, steps_per_epoch),
                val_top1=val[0], val_top5=val[1], holdout_top1=held, skipped_total=len(skips), seconds=seconds,
            ))
            save_checkpoint(epoch + 1, 0)
            if rank == 0:
                _write_metrics(out, history)
                h = history[-1]
                say(f"epoch {h.epoch}: loss {h.train_loss:.3f} train {h.train_top1:.3f} val top-1 {h.val_top1:.3f} "
                    f"top-5 {h.val_top5:.3f}" + (f" holdout {h.holdout_top1:.3f}" if h.holdout_top1 is not None else "")
                    + f" ({h.images_per_s:.0f} img/s)")
            if distributed:
                dist.barrier()
        completed = True
    except (_Interrupted, KeyboardInterrupt):
        say(f"interrupted: checkpoint saved to {ckpt_path}; continue with --resume")
    except TrainingDiverged as err:
        diverged = err
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGINT, previous_handler)

    weights = None
    if completed and rank == 0:
        weights = save_weights(model, out / "model.safetensors", model_metadata(config, splits.categories))
    result = TrainResult(out, config, history, weights, len(skips), wall_before + time.time() - started, completed,
                         commands)
    if rank == 0:
        summary = result.to_dict()
        if diverged is not None:
            summary["stopped"] = str(diverged)
        write_json(out / "summary.json", summary)
        if skips.paths:
            say(f"{len(skips)} unreadable images were skipped (listed in {out / 'summary.json'})")
            write_text(out / "skipped.txt", "".join(f"{p}\t{r}\n" for p, r in skips.paths.items()))
    if diverged is not None:
        raise diverged
    return result


#: What a training checkpoint holds (all plain data and tensors: it is read with ``weights_only=True``).
CHECKPOINT_KEYS = ("config", "model", "optimizer", "scaler", "torch_rng", "epoch", "step_in_epoch", "history",
                   "wall_seconds")


def read_run_checkpoint(path: Path, config: TrainConfig) -> dict[str, Any]:
    """A run's checkpoint for ``--resume``, read without executing anything (``weights_only``) and checked: that it
    is a bagnet training checkpoint and that it was written with the same settings as ``config``."""
    if not path.is_file():
        raise RunFolderError(f"--resume: there is no checkpoint {path}; start the run without --resume (or point "
                             f"--out at the run's folder)")
    fix = (f"it cannot be resumed: restore an intact copy of {path.name}, or start over in another --out (or delete "
           f"{path.parent})")
    if path.stat().st_size == 0:
        raise RunFolderError(f"{path} is empty (0 bytes; an interrupted copy?); {fix}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a broken or hostile file (pickle, zip, EOF, runtime)
        from .models.weights import describe_load_error

        raise RunFolderError(f"{path} {describe_load_error(err)}; {fix}") from None
    if not isinstance(state, dict) or any(k not in state for k in CHECKPOINT_KEYS):
        missing = [k for k in CHECKPOINT_KEYS if not isinstance(state, dict) or k not in state]
        raise RunFolderError(f"{path} is not a bagnet training checkpoint (missing {missing}); {fix}")
    if not isinstance(state["config"], dict):
        raise RunFolderError(f"{path} holds no training config; {fix}")
    defaults = TrainConfig().to_dict()  # fields added since the checkpoint was written count as defaults
    saved = {k: state["config"].get(k, defaults[k]) for k in defaults}
    now = config.to_dict()
    if saved != now:
        diff = {k: (saved[k], v) for k, v in now.items() if saved[k] != v}
        raise ConfigError(f"--resume: the settings differ from those of the checkpoint {path} (checkpoint, now): "
                             f"{diff}; resume with the run's own settings (its config.yaml), or start a new run in "
                             f"another --out")
    return state


def autocast_dtype(device: torch.device) -> Optional[torch.dtype]:
    """The mixed-precision type this hardware trains well in: fp16 (with loss scaling) or bf16 on CUDA, bf16 on
    CPUs with AVX-512 BF16 (1.5× faster training here, benchmarks/train.py), else None (fp32)."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu":
        check = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
        return torch.bfloat16 if check is not None and check() else None
    return None


def _train_step(net: nn.Module, batch: Batch, loss_fn: nn.Module, optimizer: torch.optim.Optimizer,
                scaler: torch.amp.GradScaler, device: torch.device, amp_dtype: Optional[torch.dtype],
                channels_last: bool, config: Optional[TrainConfig] = None,
                mix_rng: Optional[np.random.Generator] = None) -> tuple[float, int, int]:
    if len(batch) == 0:
        return 0.0, 0, 0
    images = batch.images.to(device, non_blocking=True)
    labels = batch.labels.to(device, non_blocking=True)
    perm, lam = None, 1.0
    if config is not None and mix_rng is not None:
        images, perm, lam = mix_batch(images, config.mixup, config.cutmix, mix_rng)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        logits = net(images)
        loss = loss_fn(logits, labels)
        if perm is not None:
            loss = lam * loss + (1 - lam) * loss_fn(logits, labels[perm])
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return float(loss.detach()), int((logits.argmax(1) == labels).sum()), int(labels.shape[0])


def _any_rank(flag: bool, distributed: bool, device: torch.device) -> bool:
    if not distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t)
    return bool(t.item() > 0)


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _write_metrics(out: Path, history: list[EpochMetrics]) -> None:
    rows = [asdict(h) for h in history]
    write_json(out / "metrics.json", rows)
    write_csv(out / "metrics.csv", rows)
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # TensorBoard is optional
        return
    writer = SummaryWriter(str(out / "tensorboard"))
    h = history[-1]
    for key, value in asdict(h).items():
        if key != "epoch" and value is not None:
            writer.add_scalar(key, value, h.epoch)
    writer.close()


def _bar(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="batch", disable=not enabled, leave=False)


# ---------------------------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def predict(model: nn.Module, dataset: torch.utils.data.Dataset, batch_size: int = 64, device: Any = None,
            workers: int = 2, progress: bool = False, skips: Optional[SkipLog] = None) -> tuple[Tensor, Tensor, Tensor]:
    """Logits (N, C), labels (N,) and dataset indices (N,) of every readable sample (others go to ``skips``)."""
    device = model_device(model, device)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=collate, num_workers=workers,
                                         generator=torch.Generator().manual_seed(0))  # leaves the global RNG alone
    logits, labels, indices = [], [], []
    with eval_mode(model):
        for batch in _iter_progress(loader, progress, "evaluate"):
            if skips is not None:
                skips.add(batch.skipped)
            if len(batch) == 0:
                continue
            logits.append(model(batch.images.to(device)).float().cpu())
            labels.append(batch.labels)
            indices.append(batch.indices)
    if not logits:
        raise ValueError("no readable images to evaluate")
    return torch.cat(logits), torch.cat(labels), torch.cat(indices)


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
class EvaluationResult:
    """Accuracy of one model on one dataset, with per-class figures, the confusion matrix and every prediction."""

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
        return {"schema_version": SCHEMA_VERSION, **d, "images": len(self.predictions)}

    def save(self, out: str | os.PathLike) -> Path:
        """Write evaluation.json, predictions.csv and confusion.png into ``out``."""
        from .viz import confusion_matrix_figure, save_figure

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "evaluation.json", self.to_dict())
        write_csv(out / "predictions.csv", self.predictions)
        fig = confusion_matrix_figure(np.array(self.confusion), self.categories,
                                      f"{self.model} on {self.dataset}: top-1 {100 * self.top1:.1f}%")
        save_figure(fig, out / "confusion.png")
        return out


def sample_path(dataset: torch.utils.data.Dataset, index: int) -> str:
    """File path of sample ``index`` of an ImageFolder-style dataset (through Subsets), or '#index'."""
    while isinstance(dataset, torch.utils.data.Subset):
        dataset = dataset.dataset
    samples = getattr(dataset, "samples", None)
    return samples[index][0] if samples is not None else f"#{index}"


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
