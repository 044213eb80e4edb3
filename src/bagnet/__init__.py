"""bagnet: bag-of-local-features image classifiers with exact patch-evidence explanations."""

from .models import (
    BagNet,
    BagNetConfig,
    ModelMeta,
    Preprocess,
    WeightsError,
    bagnet9,
    bagnet17,
    bagnet33,
    list_models,
    load,
    model_meta,
    save_weights,
)

from .heatmaps import heatmap, heatmap_reference
from .explanation import explain

from .models.timm_registry import register as _register_with_timm

__version__ = "0.2.0"

_register_with_timm()  # timm.create_model("bagnet33", ...) builds bagnet's BagNet

__all__ = [
    "BagNet", "BagNetConfig", "ModelMeta", "Preprocess", "model_meta", "WeightsError", "bagnet9", "bagnet17", "bagnet33", "list_models", "load",
    "save_weights", "heatmap", "heatmap_reference", "explain", "__version__",
]
