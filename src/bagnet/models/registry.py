"""Named constructors: ``bagnet9/17/33``, ``load(name_or_path)`` and ``list_models()``.

Names are the same in the Python API and the CLI: ``bagnet33`` (random weights), ``bagnet33:imagenet`` (the released
ImageNet weights), ``bagnet33:PATH`` (that architecture, weights from a file) or just ``PATH`` (architecture read
from the file).
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import torch

from .bagnet import BagNet, BagNetConfig
from .external import is_external, load_external
from .hub import HF_PREFIX, hf_folder
from .meta import ModelMeta, attach_meta, read_sidecar
from .preprocess import INTERPOLATIONS, imagenet_categories, make_preprocess

from .pretrained import PATCH_SIZES, VARIANTS, WEIGHTS, PretrainedWeights, architecture_meta, get_weights
from .weights import (WeightsError, check_fits, infer_config, load_into, parse_bagnet_config, read_checkpoint,
                      read_header)

PAPER_KERNEL3: dict[int, tuple[int, int, int, int]] = {
    9: (1, 1, 0, 0),
    17: (1, 1, 1, 0),
    33: (1, 1, 1, 1),
}
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".tar", ".bin", ".ckpt")
WeightsArg = Optional[Union[str, os.PathLike, PretrainedWeights]]


#: The release that stops accepting a positional ``weights`` argument in the builders.
POSITIONAL_WEIGHTS_REMOVED_IN = "0.3"


def _keyword_only_weights(builder: Callable[..., BagNet]) -> Callable[..., BagNet]:
    """torchvision's kind of shim for one release: ``bagnet33("imagenet")`` still works and warns."""

    @functools.wraps(builder)
    def wrapper(*args: Any, **kwargs: Any) -> BagNet:
        if args:
            if len(args) > 1 or "weights" in kwargs:
                raise TypeError(f"{builder.__name__}() takes keyword arguments only (weights=, num_classes=, …)")
            warnings.warn(f"{builder.__name__}: passing weights positionally is deprecated and stops working in "
                          f"bagnet {POSITIONAL_WEIGHTS_REMOVED_IN}; write {builder.__name__}(weights={args[0]!r})",
                          DeprecationWarning, stacklevel=2)
            kwargs["weights"] = args[0]
        return builder(**kwargs)

    return wrapper


def _paper_bagnet(patch_size: int, weights: WeightsArg, num_classes: int, progress: bool, variant: str) -> BagNet:
    if variant not in VARIANTS:
        raise ValueError(f"variant must be 'paper' (the released BagNets) or 'v2' (BagNets v2), got {variant!r}")
    named = _named_weights(patch_size, weights)
    v2 = variant == "v2" or (named is not None and named.variant == "v2")
    config = BagNetConfig(layers=(3, 4, 6, 3), kernel3=PAPER_KERNEL3[patch_size], num_classes=num_classes,
                          **(BagNetConfig.V2_LAYOUT if v2 else {}))
    model = BagNet(config)
    if weights is None:
        return attach_meta(model, architecture_meta(patch_size, "v2" if v2 else "paper"))
    if named is not None:
        if num_classes != 1000:
            raise ValueError(
                f"the ImageNet weights have 1000 classes, not num_classes={num_classes}; to fine-tune, load them "
                f"with num_classes=1000 and replace the classifier (model.reset_classifier(n))"
            )
        load_into(model, named.state_dict(progress=progress), f"{named.name} weights")
        return attach_meta(model, named.meta)
    path = Path(weights)  # type: ignore[arg-type]
    checkpoint = read_checkpoint(path)
    load_into(model, checkpoint.state_dict, str(path))
    default = architecture_meta(patch_size, "v2" if v2 else "paper").replace(source=os.fspath(path))
    return attach_meta(model, _file_meta(validate_metadata(checkpoint.metadata, str(path)), path, default,
                                         model.num_classes))


def _named_weights(patch_size: int, weights: WeightsArg) -> Optional[PretrainedWeights]:
    """The table entry ``weights`` names (an entry, its tag ``imagenet`` or its full name), None for a path."""
    if isinstance(weights, PretrainedWeights):
        if weights.patch_size != patch_size:
            raise ValueError(f"{weights.name} are BagNet-{weights.patch_size} weights, not BagNet-{patch_size}'s")
        return weights
    if isinstance(weights, str) and weights in WEIGHTS:
        return _named_weights(patch_size, WEIGHTS[weights])
    if isinstance(weights, str) and any(w.tag == weights for w in WEIGHTS.values()):
        return get_weights(patch_size, weights)
    return None


@_keyword_only_weights
def bagnet9(*, weights: WeightsArg = None, progress: bool = True, num_classes: int = 1000,
            variant: str = "paper") -> BagNet:
    """BagNet-9 (patch size 9) as released; ``weights`` is None (random), ``"imagenet"`` (the paper's),
    ``"imagenet-v2"`` (BagNets v2, which also selects ``variant="v2"``: same-padded, one 3×3 stem), an entry of
    :data:`bagnet.models.pretrained.WEIGHTS`, or a file path."""
    return _paper_bagnet(9, weights, num_classes, progress, variant)


@_keyword_only_weights
def bagnet17(*, weights: WeightsArg = None, progress: bool = True, num_classes: int = 1000,
             variant: str = "paper") -> BagNet:
    """BagNet-17 (patch size 17) as released; ``weights`` as for :func:`bagnet9`."""
    return _paper_bagnet(17, weights, num_classes, progress, variant)


@_keyword_only_weights
def bagnet33(*, weights: WeightsArg = None, progress: bool = True, num_classes: int = 1000,
             variant: str = "paper") -> BagNet:
    """BagNet-33 (patch size 33) as released; ``weights`` as for :func:`bagnet9`."""
    return _paper_bagnet(33, weights, num_classes, progress, variant)


BUILDERS: dict[int, Callable[..., BagNet]] = {9: bagnet9, 17: bagnet17, 33: bagnet33}


@dataclass(frozen=True)
class ModelEntry:
    """One name in the registry: how to build it and, without building it, its :class:`ModelMeta`."""

    name: str
    build: Callable[..., Any]
    pretrained: bool
    read_meta: Callable[[], ModelMeta]
    alias_of: Optional[str] = None  # ``default`` names another entry

    @property
    def meta(self) -> ModelMeta:
        return self.read_meta()

    @property
    def description(self) -> str:
        meta = self.meta
        return "; ".join(filter(None, (meta.title, meta.describe(), meta.source)))


def _entries() -> dict[str, ModelEntry]:
    entries = {}
    for q in PATCH_SIZES:
        entries[f"bagnet{q}"] = ModelEntry(f"bagnet{q}", BUILDERS[q], False, lambda _q=q: architecture_meta(_q))
        for named in (w for w in WEIGHTS.values() if w.patch_size == q):
            entries[named.name] = ModelEntry(
                named.name,
                lambda progress=True, _n=named.name, _q=q: BUILDERS[_q](weights=_n, progress=progress),
                True,
                lambda _n=named.name: WEIGHTS[_n].meta,
            )
    return entries


#: Trained weights that ship inside the package: ``ARCH.DATA.safetensors`` (loaded as ``ARCH:DATA``) with a model card
#: ``ARCH.DATA.md`` beside it; the file ``DEFAULT`` names the model ``load("default")`` gives.
SHIPPED_DIR = Path(__file__).resolve().parents[1] / "weights"


def shipped_entries(directory: Path = SHIPPED_DIR) -> dict[str, ModelEntry]:
    """Registry entries for the weights shipped in ``directory`` (plus ``default`` when a DEFAULT file names one)."""
    entries: dict[str, ModelEntry] = {}
    for path in sorted(directory.glob("*.safetensors")):
        arch, _, data = path.name[: -len(".safetensors")].partition(".")
        name = f"{arch}:{data}" if data else arch
        entries[name] = ModelEntry(name, lambda progress=True, _p=path: _load_shipped(_p), True,
                                   lambda _p=path, _n=name: _shipped_meta(_p, _n))
    default = directory / "DEFAULT"
    if default.is_file():
        target = default.read_text().strip()
        if target not in entries:
            raise WeightsError(f"{default} names {target!r}, which is not among the shipped models {sorted(entries)}")
        entry = entries[target]
        entries["default"] = ModelEntry("default", entry.build, True, entry.read_meta, alias_of=target)
    return entries


def _load_shipped(path: Path) -> Any:
    model = load_file(path)
    return attach_meta(model, model.meta.replace(source=_shipped_source(path), title=_card_title(path)))


def _shipped_source(path: Path) -> str:
    card = path.with_suffix(".md")
    return f"shipped with bagnet ({path.name}" + (f", model card {card.name})" if card.is_file() else ")")


def _card_title(path: Path) -> str:
    card = path.with_suffix(".md")
    return card.read_text().splitlines()[0].lstrip("# ").strip() if card.is_file() else ""


def _shipped_meta(path: Path, name: str) -> ModelMeta:
    """The metadata of shipped weights from the file's header and the ``.json`` beside it (no tensor is read)."""
    metadata = validate_metadata(read_header(path), os.fspath(path))
    config = metadata.get("config")
    patch_size = parse_bagnet_config(config, path).receptive_field.size if metadata["arch"] == "bagnet" and config else None
    default = ModelMeta(name=metadata["arch"], arch=metadata["arch"], patch_size=patch_size,
                        source=_shipped_source(path), title=_card_title(path))
    return _file_meta(metadata, path, default)


_REGISTRY: dict[str, ModelEntry] = {**_entries(), **shipped_entries()}


def list_models(pretrained: Optional[bool] = None) -> list[str]:
    """Names accepted by :func:`load`; ``pretrained=True`` lists only those with trained weights."""
    return [n for n, e in _REGISTRY.items() if pretrained is None or e.pretrained == pretrained]


def model_entry(name: str) -> ModelEntry:
    """The registry entry for ``name`` (a ``KeyError`` listing the known names otherwise)."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(list_models())}") from None


def load(name_or_path: str | os.PathLike, device: Any = None, **kwargs: Any) -> Any:
    """Load a model by registry name (``bagnet33:imagenet``), ``arch:PATH``, a weights file path, a folder holding
    ``model.safetensors`` (a training run, an exported Hub folder), a Hugging Face Hub repository written by
    ``bagnet export --format hf`` (``hf-hub:ORG/NAME[@REVISION]``, through huggingface_hub's cache), or a torchvision
    or timm model (``torchvision:NAME[:WEIGHTS|:PATH]``, ``timm:NAME[:PATH]``, see :mod:`bagnet.models.external`).

    The model is returned in eval mode, on ``device`` if given, with ``preprocess`` and ``categories`` set when
    the weights define them.

    A name without trained weights (``bagnet33``) draws them from PyTorch's global random generator, so it is not
    seeded: call ``torch.manual_seed(S)`` first for the same weights in every session. Inside a ``torchrun`` run that
    splits its images (:func:`bagnet.parallel.sharded`), every rank gets rank 0's weights.
    """
    spec = os.fspath(name_or_path)
    if not spec.strip():
        raise ValueError("the model name is empty: give a registered name (bagnet.list_models()), a weights file or "
                         "a run folder")
    if spec.startswith(HF_PREFIX):
        model = load_file(hf_folder(spec))
    elif spec in _REGISTRY:
        model = _REGISTRY[spec].build(**kwargs)
    elif is_external(spec):
        model = load_external(spec, **kwargs)
    else:
        arch, sep, rest = spec.partition(":")
        if sep and f"{arch}" in _REGISTRY and not _REGISTRY[arch].pretrained and rest:
            model = _REGISTRY[arch].build(weights=rest, **kwargs)
        elif Path(spec).suffix in WEIGHT_SUFFIXES or Path(spec).exists():
            model = load_file(spec)
        else:
            raise KeyError(
                f"unknown model {spec!r}: not a registered name ({', '.join(list_models())}), not torchvision:NAME "
                f"or timm:NAME, nor a weights file"
            )
    model.eval()
    model = model.to(device) if device is not None else model
    if spec in _REGISTRY and not _REGISTRY[spec].pretrained:  # random weights: rank 0's on every torchrun rank
        from ..parallel import same_on_every_rank

        same_on_every_rank(model)
    return model


def load_bagnet(model: Any, device: Any, what: str, hint: str = "") -> BagNet:
    """``model`` itself when it is a BagNet, loaded by :func:`load` when it is a name or path; anything else is refused
    for ``what`` (a :class:`~bagnet.errors.NotABagNetError` naming it, with ``hint``)."""
    from .bagnet import require_bagnet

    if isinstance(model, (str, os.PathLike)):
        model = load(model, device=device)
    return require_bagnet(model, what, hint)


def model_label(spec: str | os.PathLike) -> str:
    """A short display name for a model spec: a file's or run folder's name without suffixes, else the spec."""
    text = os.fspath(spec)
    if is_external(text):  # torchvision:NAME:/some/file.pth → torchvision:NAME
        return ":".join(text.split(":")[:2])
    path = Path(spec)
    if path.exists():
        return path.name.split(".")[0] if path.is_file() else path.name
    return text


def load_models(specs: Sequence[str | os.PathLike], device: Any = None) -> dict[str, Any]:
    """Several models by name, file or run folder, keyed by :func:`model_label` (the full specs when two labels
    would collide); a spec given twice is loaded once. Every model is in eval mode, on ``device`` if given."""
    specs = list(dict.fromkeys(os.fspath(s) for s in specs))
    if not specs:
        raise ValueError("give at least one model")
    labels = [model_label(s) for s in specs]
    if len(set(labels)) < len(labels):
        labels = specs
    return {label: load(spec, device=device) for label, spec in zip(labels, specs)}


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
    return attach_meta(model, _file_meta(metadata, path, default, _num_outputs(model)))


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
    return meta


def _classifier_key(state_dict: dict) -> str:
    """The weight of the last linear layer (the classifier) of a CNN state dict."""
    candidates = [k for k, v in state_dict.items() if k.endswith("weight") and v.dim() == 2]
    if not candidates:
        raise WeightsError("the checkpoint has no linear classifier weight")
    return candidates[-1]


def _file_meta(metadata: dict[str, Any], path: Path, default: ModelMeta, outputs: Optional[int] = None) -> ModelMeta:
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
