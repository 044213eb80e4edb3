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

import dataclasses
from typing import Any, Optional

from torch import nn

from .bagnet import BagNet
from .meta import meta_cfg
from .pretrained import PATCH_SIZES, WEIGHTS, PretrainedWeights



def pretrained_cfg(weights: PretrainedWeights) -> dict[str, Any]:
    """timm's ``pretrained_cfg`` for one named weights file, read from its :class:`ModelMeta`."""
    return {**meta_cfg(weights.meta), "url": weights.url}


def _default_cfgs() -> Any:
    from timm.models import generate_default_cfgs

    # the paper's weights first: the tag timm uses when a name has none
    ordered = sorted(WEIGHTS.values(), key=lambda w: (w.patch_size, w.variant != "paper"))
    return generate_default_cfgs({f"bagnet{w.patch_size}.{w.tag}": pretrained_cfg(w) for w in ordered})


#: timm's ``DefaultCfg`` per architecture, which ``register_model`` reads from this module.
default_cfgs = _default_cfgs()


def _create(patch_size: int, pretrained: bool = False, num_classes: int = 1000,
            pretrained_cfg: Optional[Any] = None, pretrained_cfg_overlay: Optional[dict] = None,
            **kwargs: Any) -> nn.Module:
    from .registry import BUILDERS

    features_only = bool(kwargs.pop("features_only", False))
    out_indices = kwargs.pop("out_indices", None)
    in_chans = int(kwargs.pop("in_chans", 3))
    global_pool = kwargs.pop("global_pool", None)
    for key in ("drop_rate", "drop_path_rate"):  # a BagNet has no dropout: only 0 (timm's default) is accepted
        if kwargs.pop(key, 0.0):
            raise TypeError(f"bagnet{patch_size} has no dropout: {key} must be 0")
    ignored = {k for k in kwargs if k != "cache_dir"}
    if ignored:
        raise TypeError(f"bagnet{patch_size} does not take {sorted(ignored)}")
    if global_pool not in (None, "avg", ""):
        raise TypeError(f"bagnet{patch_size} does not take global_pool={global_pool!r}: it pools by the mean over "
                        f"its cells ('avg'), or not at all ('')")
    tag = _tag(pretrained_cfg) or "imagenet"
    named = WEIGHTS.get(f"bagnet{patch_size}:{tag}")
    if named is None:
        raise ValueError(f"bagnet{patch_size} has no pretrained weights tagged {tag!r}; tags: "
                         f"{', '.join(w.tag for w in WEIGHTS.values() if w.patch_size == patch_size)}")
    overlay = dict(pretrained_cfg_overlay or {})
    weights: Any = (overlay.get("file") or named) if pretrained else None
    model = BUILDERS[patch_size](weights=weights, num_classes=1000 if pretrained else max(num_classes, 1),
                                 variant=named.variant)
    if in_chans != 3:
        adapt_input_channels(model, in_chans)
    if num_classes != model.num_classes or global_pool is not None:
        model.reset_classifier(num_classes, global_pool)
    cfg = {**default_cfgs[f"bagnet{patch_size}"].cfgs[tag].to_dict(), **overlay,
           "architecture": f"bagnet{patch_size}", "tag": tag, "num_classes": model.num_classes}
    model.pretrained_cfg = cfg
    model.default_cfg = cfg
    if features_only:
        from timm.models._features import FeatureListNet

        return FeatureListNet(model, out_indices=tuple(out_indices) if out_indices is not None else (0, 1, 2, 3, 4))
    return model


def adapt_input_channels(model: BagNet, in_chans: int) -> None:
    """``model`` taking ``in_chans`` input channels, its stem weights adapted as timm adapts pretrained stems
    (grayscale: the RGB filters summed; more channels: the RGB filters repeated and rescaled)."""
    from timm.models._manipulate import adapt_input_conv

    if in_chans < 1:
        raise ValueError(f"in_chans must be >= 1, got {in_chans}")
    old = model.conv1
    conv = nn.Conv2d(in_chans, old.out_channels, old.kernel_size, old.stride, old.padding, bias=False)
    conv.weight.data = adapt_input_conv(in_chans, old.weight.data)
    model.conv1 = conv
    model.config = dataclasses.replace(model.config, in_channels=in_chans)


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
