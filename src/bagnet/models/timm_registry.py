"""The BagNet family in timm's registry: ``timm.create_model("bagnet33", pretrained=True, num_classes=...)``.

Registered when :mod:`bagnet` is imported (with timm installed). ``timm.create_model`` then builds bagnet's own
:class:`~bagnet.models.bagnet.BagNet` — the exact released architecture, with ``evidence`` — and ``pretrained=True``
loads the official ImageNet weights through bagnet's download (once into torch.hub's cache, SHA-256 checked on every
load), or a local file given as timm's ``pretrained_cfg_overlay=dict(file=PATH)``. With ``num_classes`` other than
1000 the pretrained classifier is replaced by a fresh one (timm's convention for fine-tuning). Each model's
``pretrained_cfg`` carries the input size, mean/std, crop and interpolation and the weights' source URL.
"""

from __future__ import annotations

from typing import Any, Optional

from .bagnet import BagNet
from .preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess
from .weights import OFFICIAL_WEIGHTS

PAPER = "https://openreview.net/forum?id=SkfMWhAqYQ"
ORIGIN = "https://github.com/wielandbrendel/bag-of-local-features-models"


def _cfg(patch_size: int) -> dict[str, Any]:
    preprocess = Preprocess()
    official = OFFICIAL_WEIGHTS[patch_size]
    return {
        "url": official.url, "num_classes": 1000, "input_size": (3, preprocess.crop, preprocess.crop),
        "pool_size": None, "crop_pct": preprocess.crop / preprocess.resize, "crop_mode": "center",
        "interpolation": preprocess.interpolation, "mean": IMAGENET_MEAN, "std": IMAGENET_STD,
        "first_conv": "conv1", "classifier": "fc", "license": "mit", "paper_ids": "arXiv:1904.00760",
        "paper_name": "Approximating CNNs with Bag-of-local-Features models works surprisingly well on ImageNet",
        "origin_url": ORIGIN, "notes": (f"top-1 {official.top1} %, top-5 {official.top5} % on ImageNet val "
                                        f"(reported); patch size {patch_size}; built and loaded by bagnet",),
    }


default_cfgs = {f"bagnet{q}": _cfg(q) for q in sorted(OFFICIAL_WEIGHTS)}


def _create(patch_size: int, pretrained: bool = False, num_classes: int = 1000,
            pretrained_cfg: Optional[Any] = None, pretrained_cfg_overlay: Optional[dict] = None,
            **kwargs: Any) -> BagNet:
    from .registry import bagnet9, bagnet17, bagnet33

    builder = {9: bagnet9, 17: bagnet17, 33: bagnet33}[patch_size]
    ignored = {k for k in kwargs if k not in ("cache_dir", "in_chans", "drop_rate", "drop_path_rate")}
    if ignored:
        raise TypeError(f"bagnet{patch_size} does not take {sorted(ignored)}")
    if kwargs.get("in_chans", 3) != 3:
        raise ValueError(f"bagnet{patch_size} takes RGB images (in_chans=3), not in_chans={kwargs['in_chans']}")
    overlay = dict(pretrained_cfg_overlay or {})
    weights: Any = None
    if pretrained:
        weights = overlay.get("file") or "imagenet"
    model = builder(weights=weights, num_classes=1000 if pretrained else num_classes)
    if pretrained and num_classes != model.num_classes:
        model.reset_classifier(num_classes)
    cfg = {**default_cfgs[f"bagnet{patch_size}"], **overlay, "architecture": f"bagnet{patch_size}",
           "num_classes": model.num_classes}
    model.pretrained_cfg = cfg
    model.default_cfg = cfg
    return model


def register() -> bool:
    """Register bagnet9/17/33 with timm (idempotent); False when timm is not installed."""
    try:
        from timm.models import _registry
    except ImportError:  # pragma: no cover - timm is a dependency
        return False
    for q in sorted(OFFICIAL_WEIGHTS):
        name = f"bagnet{q}"
        if _registry._model_entrypoints.get(name) is globals().get(name):
            continue
        _registry.register_model(globals()[name])
    return True


def bagnet9(pretrained: bool = False, **kwargs: Any) -> BagNet:
    """BagNet-9 (timm entry point)."""
    return _create(9, pretrained, **kwargs)


def bagnet17(pretrained: bool = False, **kwargs: Any) -> BagNet:
    """BagNet-17 (timm entry point)."""
    return _create(17, pretrained, **kwargs)


def bagnet33(pretrained: bool = False, **kwargs: Any) -> BagNet:
    """BagNet-33 (timm entry point)."""
    return _create(33, pretrained, **kwargs)
