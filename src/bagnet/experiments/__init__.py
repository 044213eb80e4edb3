"""The paper's experiments as functions ``(model(s), dataset, config) -> Result`` for any image classifier."""

from .scrambling import ScramblingConfig, ScramblingResult, scramble, scrambling

__all__ = ["ScramblingConfig", "ScramblingResult", "scramble", "scrambling"]
