"""The paper's experiments as functions ``(model(s), dataset, config) -> Result`` for any image classifier."""

from .common import read_result
from .diagnostic import DiagnosticResult, dataset_diagnostic
from .interactions import InteractionConfig, InteractionResult, interactions, region_pairs
from ..masks import block_scores, mask_blocks
from .masking import MaskingConfig, MaskingResult, OwnAttribution, bagnet_scores, masking
from .scrambling import ScramblingConfig, ScramblingResult, scramble, scrambling
from .summary import SummaryResult, likeness_score, summarize
from .similarity import SimilarityConfig, SimilarityResult, error_consistency, mean_logit_correlation, similarity

__all__ = [
    "read_result", "DiagnosticResult", "dataset_diagnostic",
    "InteractionConfig", "InteractionResult", "interactions", "region_pairs",
    "MaskingConfig", "MaskingResult", "OwnAttribution", "bagnet_scores", "block_scores", "mask_blocks", "masking",
    "ScramblingConfig", "ScramblingResult", "scramble", "scrambling",
    "SummaryResult", "likeness_score", "summarize",
    "SimilarityConfig", "SimilarityResult", "error_consistency", "mean_logit_correlation", "similarity",
]
