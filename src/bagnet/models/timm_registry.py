"""The BagNet family in timm's registry: ``timm.create_model("bagnet33", pretrained=True, num_classes=...)``.

Registered when :mod:`bagnet` is imported (with timm installed), through timm's public ``register_model``.
``timm.create_model`` then builds bagnet's own :class:`~bagnet.models.bagnet.BagNet` with the builders of
:mod:`bagnet.models.registry` — the exact released architecture, with ``evidence``. ``pretrained=True`` loads the
named weights of :data:`bagnet.models.pretrained.WEIGHTS` through bagnet's verified download: the paper's by default
(``bagnet33`` = ``bagnet33.imagenet``), BagNets v2 as ``bagnet33.imagenet-v2``, or a local file given as timm's
``pretrained_cfg_overlay=dict(file=PATH)``. With ``num_classes`` other than 1000 the pretrained classifier is replaced
by a fresh one (timm's convention for fine-tuning). Each model's ``pretrained_cfg`` is made from the weights'
:class:`~bagnet.models.meta.ModelMeta` (input size, mean/std, crop, interpolation, source URL).
"""

from __future__ import annotations

from typing import Any, Optional

from .bagnet import BagNet
from .pretrained import PATCH_SIZES, WEIGHTS, PretrainedWeights

PAPER_ID = "arXiv:1904.00760"
ORIGIN = "https://github.com/wielandbrendel/bag-of-local-features-models"
PAPER_NAME = "Approximating CNNs with Bag-of-local-Features models works surprisingly well on ImageNet"


def pretrained_cfg(weights: PretrainedWeights) -> dict[str, Any]:
    """timm's ``pretrained_cfg`` for one named weights file, read from its :class:`ModelMeta`."""
    meta = weights.meta
    prep = meta.preprocess
    crop = prep.crop or meta.resolution or 224
    metrics = "; ".join(f"top-1 {100 * m['top1']:.2f} %, top-5 {100 * m['top5']:.2f} % on {name}"
                        for name, m in meta.metrics.items() if "top1" in m and "top5" in m)
    return {
        "url": weights.url, "num_classes": len(meta.categories or ()), "input_size": (3, crop, crop),
        "pool_size": None, "crop_pct": crop / prep.resize if prep.resize else 1.0, "crop_mode": "center",
        "interpolation": prep.interpolation, "mean": tuple(prep.mean), "std": tuple(prep.std),
        "first_conv": "conv1", "classifier": "fc", "license": "mit", "paper_ids": PAPER_ID,
        "paper_name": PAPER_NAME, "origin_url": ORIGIN,
        "notes": tuple(filter(None, (meta.title, metrics, f"patch size {weights.patch_size}; built by bagnet"))),
    }


def _default_cfgs() -> Any:
    from timm.models import generate_default_cfgs

    # the paper's weights first: the tag timm uses when a name has none
    ordered = sorted(WEIGHTS.values(), key=lambda w: (w.patch_size, w.variant != "paper"))
    return generate_default_cfgs({f"bagnet{w.patch_size}.{w.tag}": pretrained_cfg(w) for w in ordered})


#: timm's ``DefaultCfg`` per architecture, which ``register_model`` reads from this module.
default_cfgs = _default_cfgs()


def _create(patch_size: int, pretrained: bool = False, num_classes: int = 1000,
            pretrained_cfg: Optional[Any] = None, pretrained_cfg_overlay: Optional[dict] = None,
            **kwargs: Any) -> BagNet:
    from .registry import BUILDERS

    ignored = {k for k in kwargs if k not in ("cache_dir", "in_chans", "drop_rate", "drop_path_rate")}
    if ignored:
        raise TypeError(f"bagnet{patch_size} does not take {sorted(ignored)}")
    if kwargs.get("in_chans", 3) != 3:
        raise ValueError(f"bagnet{patch_size} takes RGB images (in_chans=3), not in_chans={kwargs['in_chans']}")
    tag = _tag(pretrained_cfg) or "imagenet"
    named = WEIGHTS.get(f"bagnet{patch_size}:{tag}")
    if named is None:
        raise ValueError(f"bagnet{patch_size} has no pretrained weights tagged {tag!r}; tags: "
                         f"{', '.join(w.tag for w in WEIGHTS.values() if w.patch_size == patch_size)}")
    overlay = dict(pretrained_cfg_overlay or {})
    weights: Any = (overlay.get("file") or named) if pretrained else None
    model = BUILDERS[patch_size](weights=weights, num_classes=1000 if pretrained else num_classes,
                                 variant=named.variant)
    if pretrained and num_classes != model.num_classes:
        model.reset_classifier(num_classes)
    cfg = {**default_cfgs[f"bagnet{patch_size}"].cfgs[tag].to_dict(), **overlay,
           "architecture": f"bagnet{patch_size}", "tag": tag, "num_classes": model.num_classes}
    model.pretrained_cfg = cfg
    model.default_cfg = cfg
    return model


def _tag(pretrained_cfg: Any) -> Optional[str]:
    """The weights tag timm passes: a string (``bagnet33.imagenet-v2``), a cfg object or dict, or nothing."""
    if pretrained_cfg is None or isinstance(pretrained_cfg, str):
        return pretrained_cfg or None
    tag = pretrained_cfg.get("tag") if isinstance(pretrained_cfg, dict) else getattr(pretrained_cfg, "tag", None)
    return tag or None


def register() -> bool:
    """Register bagnet9/17/33 with timm (idempotent); False when timm is not installed."""
    try:
        from timm.models import is_model, model_entrypoint, register_model
    except ImportError:  # pragma: no cover - timm is a dependency
        return False
    for q in PATCH_SIZES:
        name = f"bagnet{q}"
        if is_model(name) and model_entrypoint(name) is globals()[name]:
            continue
        register_model(globals()[name])
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
