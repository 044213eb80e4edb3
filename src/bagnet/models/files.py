"""Models from weights files: the architecture read from a file's metadata (``arch``, ``config``) or inferred from a
plain BagNet state dict, the metadata checked before anything is built, and the :class:`ModelMeta` a file gives."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Optional

import torch

from ..plumbing import is_window
from .bagnet import BagNet
from .meta import ModelMeta, attach_meta, read_sidecar
from .preprocess import INTERPOLATIONS, imagenet_categories, make_preprocess
from .external import is_external, load_external
from .weights import WeightsError, check_fits, infer_config, load_into, read_checkpoint


WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".tar", ".bin", ".ckpt")


def load_file(path: str | os.PathLike) -> Any:
    """A model from a weights file (or a training run's folder holding ``model.safetensors``).

    The architecture is read from the file's metadata (``arch``, ``config``) or, for a plain BagNet state dict,
    inferred from its keys.
    """
    path = Path(path)
    if path.is_dir():
        if not (path / "model.safetensors").is_file():
            raise WeightsError(f"{path} is a folder without a model.safetensors (a finished training run has one)")
        path = path / "model.safetensors"
    checkpoint = read_checkpoint(path)
    source = os.fspath(path)
    metadata = validate_metadata(checkpoint.metadata, source)
    arch = metadata.get("arch", "bagnet")
    if is_external(arch):  # a torchvision or timm architecture fine-tuned by bagnet train
        model = load_external(f"{arch}:{source}")
        default = model.meta.replace(name=arch, source=source, categories=None)
        return attach_meta(model, file_meta(metadata, path, default, _num_outputs(model)))
    if arch == "bagnet":
        inferred = infer_config(checkpoint.state_dict)
        config = checkpoint.config or inferred
        differ = {k: (getattr(config, k), getattr(inferred, k)) for k in ("layers", "kernel3", "width", "num_classes")
                  if getattr(config, k) != getattr(inferred, k)}
        if differ:
            raise WeightsError(f"{source}: the BagNet config in its metadata does not match its tensors "
                               f"(metadata, tensors): {differ}")

        def build() -> Any:
            return BagNet(config)

        num_classes = config.num_classes
    else:
        from .cnn import build_cnn

        num_classes = int(checkpoint.state_dict[_classifier_key(checkpoint.state_dict)].shape[0])
        kwargs = metadata.get("arch_kwargs", {})

        def build() -> Any:
            return build_cnn(arch, num_classes=num_classes, **kwargs)

    # build on the meta device first (nothing allocated) so that a file whose metadata asks for a huge model fails
    # on the shapes of the tensors it actually holds
    try:
        with torch.device("meta"):
            skeleton = build()
    except (TypeError, ValueError) as err:
        raise WeightsError(f"{source}: its metadata describes no buildable {arch} ({err})") from err
    check_fits(skeleton, checkpoint.state_dict, source)
    del skeleton
    model = build()
    load_into(model, checkpoint.state_dict, source)
    default = ModelMeta(name=arch, arch=arch, source=source,
                        patch_size=model.patch_size if isinstance(model, BagNet) else None,
                        categories=imagenet_categories() if num_classes == 1000 else None)
    return attach_meta(model, file_meta(metadata, path, default, _num_outputs(model)))


#: Metadata entries a weights file may carry that change how it is loaded, and the keys each allows.
PREPROCESS_KEYS = ("resize", "crop", "mean", "std", "interpolation")


def validate_metadata(metadata: dict[str, Any], source: str) -> dict[str, Any]:
    """The metadata entries that act on loading (``arch``, ``arch_kwargs``, ``categories``, ``preprocess``,
    ``name``), checked for type, known keys and bounds before anything is built; other entries are kept as they are.
    """
    from .cnn import CNN_BUILDERS
    from .vit import VIT_KWARGS

    meta = dict(metadata)
    arch = meta.get("arch", "bagnet")
    if not isinstance(arch, str):
        raise WeightsError(f"{source}: metadata arch must be a string, got {arch!r}")
    if arch.startswith("bagnet"):
        arch = "bagnet"
    if is_external(arch):
        meta["arch"], meta["arch_kwargs"] = arch, {}
        return _validated_rest(meta, source)
    if arch != "bagnet" and arch not in CNN_BUILDERS:
        raise WeightsError(f"{source}: metadata names an unknown architecture {arch!r}; known: bagnet, "
                           f"{', '.join(CNN_BUILDERS)}")
    meta["arch"] = arch
    kwargs = meta.get("arch_kwargs", {}) or {}
    if not isinstance(kwargs, dict):
        raise WeightsError(f"{source}: metadata arch_kwargs must be a mapping, got {type(kwargs).__name__}")
    allowed = VIT_KWARGS if arch == "vit" else ({"width": (1, 4096)} if arch != "bagnet" else {})
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise WeightsError(f"{source}: metadata arch_kwargs has keys {unknown} that {arch} does not take; "
                           f"allowed: {sorted(allowed) or 'none'}")
    for key, value in kwargs.items():
        low, high = allowed[key]
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise WeightsError(f"{source}: metadata arch_kwargs {key}={value!r} must be an integer in [{low}, {high}]")
    meta["arch_kwargs"] = kwargs
    return _validated_rest(meta, source)


def _validated_rest(meta: dict[str, Any], source: str) -> dict[str, Any]:
    """The entries every architecture shares: ``categories``, ``preprocess``, ``name``."""
    categories = meta.get("categories")
    if categories is not None and (not isinstance(categories, list)
                                   or not all(isinstance(c, (str, int)) for c in categories)):
        raise WeightsError(f"{source}: metadata categories must be a list of class names")
    prep = meta.get("preprocess")
    if prep is not None:
        if not isinstance(prep, dict) or set(prep) - set(PREPROCESS_KEYS):
            raise WeightsError(f"{source}: metadata preprocess must be a mapping with keys among {PREPROCESS_KEYS}, "
                               f"got {prep!r}")
        for key in ("resize", "crop"):
            value = prep.get(key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 8192):
                raise WeightsError(f"{source}: metadata preprocess {key}={value!r} must be None or pixels in [1, 8192]")
        for key in ("mean", "std"):
            value = prep.get(key)
            if value is not None and (not isinstance(value, list) or len(value) != 3
                                      or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and
                                                 math.isfinite(v) for v in value)
                                      or (key == "std" and min(value) <= 0)):
                raise WeightsError(f"{source}: metadata preprocess {key}={value!r} must be 3 finite numbers"
                                   + (" > 0" if key == "std" else ""))
        if prep.get("interpolation", "bilinear") not in INTERPOLATIONS:
            raise WeightsError(f"{source}: metadata preprocess interpolation={prep['interpolation']!r} must be one of "
                               f"{sorted(INTERPOLATIONS)}")
    if "name" in meta and not isinstance(meta["name"], str):
        raise WeightsError(f"{source}: metadata name must be a string, got {meta['name']!r}")
    window = meta.get("intensity_window")
    if window is not None and not (isinstance(window, list) and is_window(window)):
        raise WeightsError(f"{source}: metadata intensity_window={window!r} must be two finite numbers LOW < HIGH")
    return meta


def _classifier_key(state_dict: dict) -> str:
    """The weight of the last linear layer (the classifier) of a CNN state dict."""
    candidates = [k for k, v in state_dict.items() if k.endswith("weight") and v.dim() == 2]
    if not candidates:
        raise WeightsError("the checkpoint has no linear classifier weight")
    return candidates[-1]


def file_meta(metadata: dict[str, Any], path: Path, default: ModelMeta, outputs: Optional[int] = None) -> ModelMeta:
    """``default`` with the class names, preprocessing, name and resolution a weights file records, and the metrics
    of a ``.json`` beside it; the class names are checked against the classifier's ``outputs`` when given."""
    changes: dict[str, Any] = {}
    categories = metadata.get("categories")
    if categories is not None:
        if outputs is not None and len(categories) != outputs:
            raise WeightsError(
                f"the checkpoint lists {len(categories)} class names but its classifier has {outputs} outputs"
            )
        changes["categories"] = [str(c) for c in categories]
    prep = metadata.get("preprocess")
    if isinstance(prep, dict):
        changes["preprocess"] = make_preprocess(**prep)
        changes["resolution"] = prep.get("crop") or prep.get("resize")
    if isinstance(metadata.get("name"), str):
        changes["name"] = metadata["name"]
    if metadata.get("intensity_window") is not None:
        changes["intensity_window"] = tuple(float(v) for v in metadata["intensity_window"])
    try:
        sidecar = read_sidecar(path)
    except ValueError as err:
        raise WeightsError(str(err)) from err
    if sidecar.get("metrics"):
        changes["metrics"] = sidecar["metrics"]
    return default.replace(**changes)


def _num_outputs(model: Any) -> int:
    if isinstance(model, BagNet):
        return model.num_classes
    linears = [m for m in model.modules() if type(m).__name__ == "Linear"]
    return int(linears[-1].out_features)
