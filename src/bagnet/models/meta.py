"""One typed, frozen description of a model's weights, as torchvision attaches ``transforms`` and ``meta`` to its
weights enums: what the input must look like, what the outputs mean, where the weights come from and how good they
are. Every loader attaches one (``model.meta``); library code reads it through :func:`model_meta`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

from torch import nn

from .preprocess import Preprocess, make_preprocess, preprocess_normalisation, preprocess_size


@dataclass(frozen=True)
class ModelMeta:
    """What goes with a model's weights.

    ``name``: what reports and explanations call the model (the name recorded in its weights file); ``arch``: the architecture family (``bagnet``, ``resnet18``,
    ``vit``, …); ``categories``: class names in output order (None: unnamed); ``preprocess``: the callable
    :class:`Preprocess` the weights expect; ``patch_size``: the side of the image patch one output position sees
    (None for models that see the whole image); ``resolution``: the input side the weights were trained at;
    ``source``: where the weights came from; ``metrics``: measured accuracies, ``{"DATASET": {"top1": …}}``;
    ``title``: one human line (a shipped model's card title); ``intensity_window``: the grey values (LOW, HIGH)
    that 16-bit and float images were mapped to 0…255 with in training (``--intensity-window``; None: each image's
    own range), applied again when such an image is explained.
    """

    name: str
    arch: str
    preprocess: Preprocess = field(default_factory=make_preprocess)
    categories: Optional[tuple[str, ...]] = None
    patch_size: Optional[int] = None
    resolution: Optional[int] = None
    source: str = "random initialisation"
    metrics: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    title: str = ""
    intensity_window: Optional[tuple[float, float]] = None

    def __post_init__(self) -> None:
        if self.categories is not None:
            object.__setattr__(self, "categories", tuple(str(c) for c in self.categories))
        object.__setattr__(self, "metrics", {str(k): dict(v) for k, v in dict(self.metrics).items()})

    @property
    def num_classes(self) -> Optional[int]:
        return None if self.categories is None else len(self.categories)

    def replace(self, **changes: Any) -> "ModelMeta":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "arch": self.arch, "preprocess": self.preprocess.to_dict(),
                "categories": None if self.categories is None else list(self.categories),
                "patch_size": self.patch_size, "resolution": self.resolution, "source": self.source,
                "metrics": {k: dict(v) for k, v in self.metrics.items()}, "title": self.title,
                "intensity_window": None if self.intensity_window is None else list(self.intensity_window)}

    def describe(self) -> str:
        """One line for listings: architecture, patch size, resolution, classes and the first metric."""
        parts = [self.arch]
        parts.append(f"patch {self.patch_size}" if self.patch_size else "whole image")
        if self.resolution:
            parts.append(f"{self.resolution} px")
        if self.categories is not None:
            parts.append(f"{len(self.categories)} classes")
        if self.source.startswith("random"):
            parts.append("random weights")
        for dataset, values in self.metrics.items():
            if "top1" in values:
                parts.append(f"top-1 {100 * values['top1']:.1f} % on {dataset}")
                break
        return ", ".join(parts)


def attach_meta(model: nn.Module, meta: ModelMeta) -> nn.Module:
    """Set ``model.meta`` and the attributes that mirror it (``name``, ``categories``, ``preprocess``)."""
    model.meta = meta
    model.name = meta.name
    model.categories = None if meta.categories is None else list(meta.categories)
    model.preprocess = meta.preprocess
    if _is_local(model):  # timm's view of the same facts (timm.data.resolve_model_data_config reads it)
        cfg = {**meta_cfg(meta, model.config.in_channels), "architecture": f"bagnet{model.patch_size}",
               "num_classes": model.num_classes}
        model.pretrained_cfg = model.default_cfg = cfg
    return model


def model_meta(model: nn.Module) -> ModelMeta:
    """The metadata of any model: ``model.meta`` when a loader attached one, with any ``name``/``categories``/
    ``preprocess`` the user set on the model since; for a model from elsewhere (a torchvision model, your own
    module), read from those attributes (a torchvision ``Compose`` preprocess is read by inspection; none means
    ImageNet's 256/224 with its mean and std)."""
    meta = getattr(model, "meta", None)
    if not isinstance(meta, ModelMeta):
        meta = ModelMeta(name=str(getattr(model, "name", type(model).__name__)),
                         arch=str(getattr(model, "name", type(model).__name__)).split(":")[0],
                         patch_size=getattr(model, "patch_size", None) if _is_local(model) else None,
                         source="user-provided module")
    changes: dict[str, Any] = {}
    name = getattr(model, "name", None)
    if isinstance(name, str) and name != meta.name:
        changes["name"] = name
    categories = getattr(model, "categories", None)
    if categories is not None and tuple(str(c) for c in categories) != meta.categories:
        changes["categories"] = categories
    preprocess = getattr(model, "preprocess", None)
    if preprocess is not None and preprocess is not meta.preprocess:
        changes["preprocess"] = as_preprocess(preprocess)
    return meta.replace(**changes) if changes else meta


def as_preprocess(preprocess: Any) -> Preprocess:
    """A :class:`Preprocess` for any preprocessing: itself, or one read from a torchvision ``Compose``."""
    if isinstance(preprocess, Preprocess):
        return preprocess
    mean, std = preprocess_normalisation(preprocess)
    crop = None
    for t in getattr(preprocess, "transforms", None) or []:
        size = getattr(t, "size", None)
        if type(t).__name__ == "CenterCrop" and size is not None:
            crop = int(size if isinstance(size, int) else size[0])
    return Preprocess(preprocess_size(preprocess), crop, tuple(mean), tuple(std))  # type: ignore[arg-type]


def _is_local(model: nn.Module) -> bool:
    from .bagnet import BagNet

    return isinstance(model, BagNet)


def read_sidecar(weights: Path) -> dict[str, Any]:
    """The ``metrics``/``source`` recorded beside shipped weights (``ARCH.DATA.json``); empty when there is none."""
    path = weights.with_suffix(".json")
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not readable as JSON ({err})") from err
    if not isinstance(data, dict) or not isinstance(data.get("metrics", {}), dict):
        raise ValueError(f"{path}: expected an object with a 'metrics' mapping")
    return data


#: What timm's configs say of the BagNet paper.
PAPER_ID = "arXiv:1904.00760"
ORIGIN = "https://github.com/wielandbrendel/bag-of-local-features-models"
PAPER_NAME = "Approximating CNNs with Bag-of-local-Features models works surprisingly well on ImageNet"


def meta_cfg(meta: ModelMeta, in_chans: int = 3) -> dict[str, Any]:
    """timm's ``pretrained_cfg`` of a model with this :class:`ModelMeta`: input size, crop, interpolation, mean/std,
    classes (what ``timm.data.resolve_model_data_config`` reads)."""
    prep = meta.preprocess
    crop = prep.crop or meta.resolution or 224
    metrics = "; ".join(f"top-1 {100 * m['top1']:.2f} %" + (f", top-5 {100 * m['top5']:.2f} %" if "top5" in m else "")
                        + f" on {name}" for name, m in meta.metrics.items() if "top1" in m)
    return {
        "num_classes": len(meta.categories or ()), "input_size": (in_chans, crop, crop), "pool_size": None,
        "crop_pct": crop / prep.resize if prep.resize else 1.0, "crop_mode": "center",
        "interpolation": prep.interpolation, "mean": tuple(prep.mean), "std": tuple(prep.std), "first_conv": "conv1",
        "classifier": "fc", "license": "mit", "paper_ids": PAPER_ID, "paper_name": PAPER_NAME, "origin_url": ORIGIN,
        "notes": tuple(filter(None, (meta.title, metrics, f"patch size {meta.patch_size}; built by bagnet"))),
    }
