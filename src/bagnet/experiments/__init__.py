"""The paper's experiments as functions ``(model(s), dataset, config) -> Result`` for any image classifier."""

from .interactions import InteractionConfig, InteractionResult, interactions, region_pairs
from .scrambling import ScramblingConfig, ScramblingResult, scramble, scrambling
from .similarity import SimilarityConfig, SimilarityResult, error_consistency, mean_logit_correlation, similarity

__all__ = [
    "InteractionConfig", "InteractionResult", "interactions", "region_pairs",
    "ScramblingConfig", "ScramblingResult", "scramble", "scrambling",
    "SimilarityConfig", "SimilarityResult", "error_consistency", "mean_logit_correlation", "similarity",
]
