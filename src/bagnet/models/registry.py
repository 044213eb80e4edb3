"""Named constructors: ``bagnet9/17/33``, ``load(name_or_path)`` and ``list_models()``.

Names are the same in the Python API and the CLI: ``bagnet33`` (random weights), ``bagnet33:imagenet`` (the released
ImageNet weights), ``bagnet33:PATH`` (that architecture, weights from a file) or just ``PATH`` (architecture read
from the file).
"""

from __future__ import annotations

import functools
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union


from .bagnet import BagNet, BagNetConfig
from .external import is_external, load_external
from .files import WEIGHT_SUFFIXES, file_meta, load_file, validate_metadata  # noqa: F401 (load_file: public here too)
from .hub import HF_PREFIX, hf_folder
from .meta import ModelMeta, attach_meta

from .pretrained import PATCH_SIZES, VARIANTS, WEIGHTS, PretrainedWeights, architecture_meta, get_weights
from .weights import (WeightsError, load_into, parse_bagnet_config, read_checkpoint,
                      read_header)

PAPER_KERNEL3: dict[int, tuple[int, int, int, int]] = {
    9: (1, 1, 0, 0),
    17: (1, 1, 1, 0),
    33: (1, 1, 1, 1),
}
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
    return attach_meta(model, file_meta(validate_metadata(checkpoint.metadata, str(path)), path, default,
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
    return file_meta(metadata, path, default)


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
