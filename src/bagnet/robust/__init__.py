"""Certified robustness to adversarial stickers, built on BagNet's locality: the certificates of two defences
(:mod:`~bagnet.robust.certificates`), a real sticker attack to check them (:mod:`~bagnet.robust.attack`) and the
dataset loop ``bagnet certify`` runs (:mod:`~bagnet.robust.evaluation`)."""

from .attack import AttackConfig, sticker_attack, sticker_positions, sticker_scores
from .certificates import (DEFENCES, DefenceConfig, affected_cells, certify, clip, defended_logits, sticker_window,
                           window_sums)
from .evaluation import RobustnessResult, robustness

__all__ = [
    "AttackConfig", "DefenceConfig", "RobustnessResult", "affected_cells", "certify", "defended_logits",
    "robustness", "sticker_attack", "sticker_positions", "sticker_window", "window_sums", "clip", "DEFENCES",
    "sticker_scores",
]
