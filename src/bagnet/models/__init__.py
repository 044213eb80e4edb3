"""BagNet models: architecture, receptive-field arithmetic, weights, preprocessing and the registry."""

from .bagnet import BagNet, BagNetConfig, Bottleneck, strict_fp32
from .preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess, imagenet_categories, make_preprocess
from .meta import ModelMeta, attach_meta, model_meta
from .receptive import (ReceptiveField, block_pixels, cell_block, cells_reached, output_length, reach_window,
                        receptive_field)
from .fuse import fuse_batchnorm
from .summary import ModelSummary, summarize, summarize_model
from .registry import (bagnet9, bagnet17, bagnet33, list_models, load, load_file, load_models, model_entry,
                       model_label)
from .pretrained import (OFFICIAL_WEIGHTS, V2_WEIGHTS, WEIGHTS, PretrainedWeights, load_official_state_dict,
                         load_v2_state_dict, official_cache_path)
from .weights import WeightsError, WeightsUnavailableError, infer_config, load_into, read_checkpoint, save_weights

__all__ = [
    "BagNet", "BagNetConfig", "Bottleneck", "strict_fp32", "ModelSummary", "summarize_model", "summarize",
    "fuse_batchnorm",
    "IMAGENET_MEAN", "IMAGENET_STD", "Preprocess", "imagenet_categories", "make_preprocess",
    "ModelMeta", "attach_meta", "model_meta",
    "ReceptiveField", "output_length", "receptive_field", "cells_reached", "reach_window", "cell_block",
    "block_pixels",
    "bagnet9", "bagnet17", "bagnet33", "list_models", "load", "load_file", "load_models", "model_entry", "model_label",
    "WEIGHTS", "PretrainedWeights", "OFFICIAL_WEIGHTS", "V2_WEIGHTS", "load_v2_state_dict", "WeightsError", "WeightsUnavailableError", "infer_config", "load_into",
    "load_official_state_dict", "official_cache_path", "read_checkpoint", "save_weights",
]
