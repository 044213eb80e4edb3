"""Experiment 5 — one table: how bag-of-local-features-like is each model?

Nothing in the paper defines such a score; this one is ours, built only from the three measurements above, each
mapped to [0, 1] where 1 means "behaves like a bag of local features of the reference BagNet's patch size q":

- **scrambling retention** R = (acc_s − chance) / (acc_0 − chance), clipped to [0, 1], where acc_0 is the accuracy
  on unscrambled images and acc_s the accuracy with the smallest tiles that are still ≥ q pixels (tiles a
  q-patch model can live with);
- **locality** L = 1 − I_far / I_near, clipped to [0, 1], where I_near is the normalised interaction at the
  smallest gap measured and I_far its mean over the gaps ≥ q (a BagNet's is exactly 0 there, so L = 1);
- **decision similarity** K = max(0, κ), the error consistency with the reference BagNet.

The score is the plain mean of the components that could be computed. It is descriptive, not a test: a model can
score high for other reasons (for example a task that does not need spatial relations at all), which is what the
dataset diagnostic asks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional


from ..plumbing import Result, deprecated_alias
from .interactions import InteractionResult
from .scrambling import ScramblingResult
from .similarity import SimilarityResult


@dataclass(frozen=True)
class SummaryResult(Result):
    """Each model's bag-of-local-features likeness: its components and the score (None where not measured)."""

    stem = "summary"

    models: list[str]
    reference: str
    patch_size: int
    chance: float
    scrambling_retention: dict[str, Optional[float]]
    locality: dict[str, Optional[float]]
    decision_similarity: dict[str, Optional[float]]
    score: dict[str, Optional[float]]
    notes: list[str] = field(default_factory=list)

    def rows(self) -> list[dict[str, Any]]:
        return [{"model": m, "scrambling_retention": self.scrambling_retention[m], "locality": self.locality[m],
                 "decision_similarity": self.decision_similarity[m], "score": self.score[m]} for m in self.models]

    def figures(self) -> dict[str, Any]:
        """summary.png: the components and the score per model."""
        from ..viz import grouped_bars_figure

        groups = {"scrambling retention": self.scrambling_retention, "locality": self.locality,
                  "decision similarity": self.decision_similarity, "score": self.score}
        return {"summary.png": grouped_bars_figure(
            {k: [v[m] for m in self.models] for k, v in groups.items()}, self.models,
            ylabel="0 … 1 (1 = like a bag of local features)",
            title=f"Bag-of-local-features likeness (reference {self.reference}, q = {self.patch_size})")}


def _clip(value: float) -> Optional[float]:
    return None if value is None or math.isnan(value) else min(1.0, max(0.0, value))


def likeness_score(
    reference: str,
    patch_size: int,
    num_classes: int,
    scrambling: Optional[ScramblingResult] = None,
    interactions: Optional[InteractionResult] = None,
    similarity: Optional[SimilarityResult] = None,
) -> SummaryResult:
    """Combine experiment results into the per-model components and score defined in this module's docstring."""
    results = [r for r in (scrambling, interactions, similarity) if r is not None]
    if not results:
        raise ValueError("give at least one experiment result to summarise")
    models: list[str] = []
    for r in results:
        models += [m for m in r.models if m not in models]
    chance = 1.0 / num_classes
    notes: list[str] = []
    retention: dict[str, Optional[float]] = {m: None for m in models}
    if scrambling is not None:
        usable = [i for i, t in enumerate(scrambling.tile_sizes) if t >= patch_size and scrambling.grids[i] > 1]
        if not usable:
            notes.append(f"no scrambled tile size ≥ q = {patch_size}: scrambling retention not computed")
        else:
            i = max(usable, key=lambda j: scrambling.grids[j])
            base = scrambling.grids.index(1) if 1 in scrambling.grids else None
            if base is None:
                notes.append("scrambling has no unscrambled (grid 1) accuracy: retention not computed")
            else:
                notes.append(f"scrambling retention uses {scrambling.grids[i]}×{scrambling.grids[i]} tiles "
                             f"({scrambling.tile_sizes[i]} px)")
                for m in scrambling.models:
                    a0, a = scrambling.top1[m][base], scrambling.top1[m][i]
                    retention[m] = _clip((a - chance) / (a0 - chance)) if a0 > chance else None
    locality: dict[str, Optional[float]] = {m: None for m in models}
    if interactions is not None:
        far = [i for i, g in enumerate(interactions.gaps) if g >= patch_size]
        near = min(range(len(interactions.gaps)), key=lambda j: interactions.gaps[j])
        if not far or interactions.gaps[near] >= patch_size:
            notes.append(f"interactions need gaps below and at/above q = {patch_size}: locality not computed")
        else:
            for m in interactions.models:
                values = interactions.normalised_interaction[m]
                i_far = sum(values[i] for i in far) / len(far)
                locality[m] = _clip(1 - i_far / values[near]) if values[near] > 0 else None
    decision: dict[str, Optional[float]] = {m: None for m in models}
    if similarity is not None:
        if reference not in similarity.models:
            notes.append(f"reference {reference!r} is not among the similarity models: decision similarity not computed")
        else:
            ref = similarity.models.index(reference)
            for j, m in enumerate(similarity.models):
                decision[m] = _clip(similarity.error_consistency[ref][j])
    score = {}
    for m in models:
        parts = [v for v in (retention[m], locality[m], decision[m]) if v is not None]
        score[m] = sum(parts) / len(parts) if parts else None
    return SummaryResult(models, reference, patch_size, chance, retention, locality, decision, score, notes)


#: Deprecated name of :func:`likeness_score` (until the next release).
summarize = deprecated_alias(likeness_score, "bagnet.experiments.summarize")
