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

__version__ = "0.2.0"

__all__ = [
    "BagNet", "BagNetConfig", "ModelMeta", "Preprocess", "model_meta", "WeightsError", "bagnet9", "bagnet17", "bagnet33", "list_models", "load",
    "save_weights", "heatmap", "heatmap_reference", "explain", "__version__",
]
