"""Models from torchvision and timm by name, with their own preprocessing and class names in a :class:`ModelMeta`.

Specs (the same in the API and on the command line):

- ``torchvision:NAME``: any classification model of ``torchvision.models`` with its default weights, downloaded once
  into torch.hub's cache and hash-checked; ``torchvision:NAME:WEIGHTS`` a named weights entry
  (``torchvision:vgg16:IMAGENET1K_V1``); ``torchvision:NAME:PATH`` that architecture with a local state dict.
- ``timm:NAME``: any timm model with its pretrained weights through timm's own loader and cache;
  ``timm:NAME:PATH`` that architecture with a local state dict.

Local files are read without unpickling code (safetensors, or ``torch.load(weights_only=True)``); the number of
classes is read from the file's classifier.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from torch import nn

from .meta import ModelMeta, attach_meta
from .preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess, imagenet_categories
from .weights import WeightsError, WeightsUnavailableError, fetch_verified, read_state_dict

PREFIXES = ("torchvision", "timm")


def is_external(spec: str) -> bool:
    """Whether ``spec`` names a torchvision or timm model (``torchvision:…``, ``timm:…``)."""
    return spec.split(":", 1)[0] in PREFIXES and ":" in spec


def load_external(spec: str, progress: bool = True) -> nn.Module:
    """The model a ``torchvision:…`` or ``timm:…`` spec names, in eval mode, with ``model.meta`` attached."""
    library, _, rest = spec.partition(":")
    name, _, weights = rest.partition(":")
    if not name:
        raise WeightsError(f"{spec!r} names no model; write {library}:NAME (e.g. torchvision:resnet50, "
                           f"timm:vit_small_patch16_224)")
    if library == "torchvision":
        return _torchvision(name, weights, progress)
    return _timm(spec, name, weights)


def _looks_like_path(text: str) -> bool:
    return bool(text) and (os.sep in text or "/" in text or Path(text).suffix in
                           (".pth", ".pt", ".safetensors", ".bin", ".tar", ".ckpt") or Path(text).exists())


# ---------------------------------------------------------------------------------------------------- torchvision
def _torchvision(name: str, weights: str, progress: bool) -> nn.Module:
    import torchvision.models as tvm

    known = tvm.list_models(module=tvm)
    if name not in known:
        raise WeightsError(f"torchvision has no classification model {name!r}; known: {', '.join(known)}")
    enum = tvm.get_model_weights(name)
    if _looks_like_path(weights):
        path = Path(weights)
        state = _fix_torchvision_keys(name, read_state_dict(path))
        num_classes = _classifier_outputs(state, path)
        model = tvm.get_model(name, weights=None, num_classes=num_classes)
        _load_state(model, state, path)
        default = getattr(enum, "DEFAULT", None)
        preprocess = _torchvision_preprocess(default) if default is not None else Preprocess()
        meta = ModelMeta(name=f"torchvision:{name}", arch=name, preprocess=preprocess,
                         categories=imagenet_categories() if num_classes == 1000 else None,
                         resolution=preprocess.crop, source=os.fspath(path))
        return attach_meta(model.eval(), meta)
    try:
        entry = enum.DEFAULT if not weights or weights == "DEFAULT" else enum[weights]
    except KeyError:
        raise WeightsError(f"torchvision's {name} has no weights {weights!r}; known: "
                           f"{', '.join(w.name for w in enum)} (or a path to a local state dict)") from None
    path = fetch_verified(entry.url, progress=progress, what=f"torchvision's {name} weights {entry.name}")
    state = _fix_torchvision_keys(name, read_state_dict(path))
    model = tvm.get_model(name, weights=None, num_classes=len(entry.meta["categories"]))
    _load_state(model, state, path)
    metrics = {f"imagenet/val (reported by torchvision, {entry.name})": {
        "top1": v["acc@1"] / 100, "top5": v["acc@5"] / 100}
        for k, v in entry.meta.get("_metrics", {}).items() if k.startswith("ImageNet-1K") and "acc@1" in v}
    preprocess = _torchvision_preprocess(entry)
    meta = ModelMeta(name=f"torchvision:{name}", arch=name, preprocess=preprocess,
                     categories=tuple(entry.meta["categories"]), resolution=preprocess.crop,
                     source=f"torchvision {name} {entry.name} ({entry.url})", metrics=metrics)
    return attach_meta(model.eval(), meta)


def _torchvision_preprocess(entry: Any) -> Preprocess:
    """torchvision's ``weights.transforms()`` (resize, crop, mean, std, interpolation) as a :class:`Preprocess`."""
    t = entry.transforms()
    mode = str(getattr(t, "interpolation", "bilinear")).split(".")[-1].lower()
    first = lambda v: int(v[0] if isinstance(v, (list, tuple)) else v)  # noqa: E731
    return Preprocess(first(t.resize_size), first(t.crop_size), tuple(t.mean), tuple(t.std),  # type: ignore[arg-type]
                      mode if mode in ("bilinear", "bicubic", "nearest") else "bilinear")


_DENSENET_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.([12]\..+)$")


def _fix_torchvision_keys(name: str, state: dict) -> dict:
    """DenseNet checkpoints use the old key names ``norm.1``; torchvision renames them to ``norm1`` when it loads."""
    if not name.startswith("densenet"):
        return state
    fixed = {}
    for key, value in state.items():
        match = _DENSENET_KEY.match(key)
        fixed[match.group(1) + match.group(2) if match else key] = value
    return fixed


# ---------------------------------------------------------------------------------------------------- timm
def _timm(spec: str, name: str, weights: str) -> nn.Module:
    import timm

    if not timm.list_models(name) and name not in timm.list_models(pretrained=True):
        raise WeightsError(f"timm has no model {name!r} (timm.list_models() lists them)")
    if _looks_like_path(weights):
        path = Path(weights)
        state = read_state_dict(path)
        num_classes = _classifier_outputs(state, path)
        model = timm.create_model(name, pretrained=False, num_classes=num_classes)
        _load_state(model, state, path)
        source = os.fspath(path)
    elif weights:
        raise WeightsError(f"{spec!r}: after timm:NAME comes a path to a local state dict, not {weights!r}")
    else:
        try:
            model = timm.create_model(name, pretrained=True)
        except Exception as err:  # timm reports a missing network/cache with many exception types
            cfg = timm.models.get_pretrained_cfg(name)
            where = (cfg.hf_hub_id and f"the Hugging Face Hub repository {cfg.hf_hub_id}") or cfg.url or "its source"
            from huggingface_hub.constants import HF_HUB_CACHE

            raise WeightsUnavailableError(
                f"could not load timm's pretrained {name} ({type(err).__name__}: {err}). Its weights come from {where}, "
                f"cached under {HF_HUB_CACHE}; without network, download the weights file elsewhere and load it with "
                f"timm:{name}:/path/to/file") from None
        num_classes = model.num_classes
        source = f"timm {name} pretrained ({model.pretrained_cfg.get('hf_hub_id') or model.pretrained_cfg.get('url')})"
    preprocess = _timm_preprocess(model)
    meta = ModelMeta(name=f"timm:{name}", arch=name, preprocess=preprocess,
                     categories=imagenet_categories() if num_classes == 1000 else None,
                     resolution=preprocess.crop, source=source)
    return attach_meta(model.eval(), meta)


def _timm_preprocess(model: nn.Module) -> Preprocess:
    """timm's data config (input size, crop fraction, mean, std, interpolation) as a :class:`Preprocess`."""
    from timm.data import resolve_data_config

    cfg = resolve_data_config({}, model=model)
    crop = int(cfg["input_size"][-1])
    mode = cfg.get("interpolation", "bilinear")
    return Preprocess(int(crop / cfg.get("crop_pct", 0.875)), crop, tuple(cfg.get("mean", IMAGENET_MEAN)),
                      tuple(cfg.get("std", IMAGENET_STD)),  # type: ignore[arg-type]
                      mode if mode in ("bilinear", "bicubic", "nearest") else "bilinear")


# ---------------------------------------------------------------------------------------------------- shared
def _classifier_outputs(state: dict, path: Path) -> int:
    """The number of classes of a state dict: rows of its last 2-D weight (the classifier)."""
    weights = [v for k, v in state.items() if k.endswith("weight") and getattr(v, "dim", lambda: 0)() == 2]
    if not weights:
        raise WeightsError(f"{path}: no linear classifier weight among its tensors; is it a classification model?")
    return int(weights[-1].shape[0])


def _load_state(model: nn.Module, state: dict, path: Path) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        raise WeightsError(f"{path} does not fit {type(model).__name__}: {' '.join(first[:3])[:600]}") from None


__all__ = ["PREFIXES", "is_external", "load_external"]
