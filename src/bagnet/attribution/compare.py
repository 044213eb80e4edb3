"""Several models explained by several methods on the same images and targets, with faithfulness: one result."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping, Optional, Sequence, Union

import numpy as np
from torch import Tensor, nn

from ..plumbing import Result, out_dir, output_lock
from .faithfulness import Faithfulness, FaithfulnessConfig, deletion_insertion
from .methods import AttributionConfig, Attributions, _safe, attribute

# ---------------------------------------------------------------------------------------------------- comparison
@dataclass(frozen=True)
class AttributionComparison(Result):
    """Attributions and faithfulness of every method for every model, on the same images and targets."""

    stem: ClassVar[str] = "comparison"

    attributions: dict[str, Attributions]
    faithfulness: dict[str, Faithfulness]

    def rows(self) -> list[dict[str, Any]]:
        """One row per model and method: deletion/insertion AUC, mean |completeness gap|, or why it is missing."""
        rows = []
        for mname, attr in self.attributions.items():
            auc = self.faithfulness[mname].auc() if mname in self.faithfulness else {}
            for method in list(attr.methods) + (["random"] if "random" in auc else []):
                gap = attr.completeness.get(method)
                scale = attr.expected.get(method)
                rows.append({
                    "model": mname, "method": method,
                    "available": method not in attr.unavailable,
                    "deletion_auc": auc.get(method, {}).get("deletion"),
                    "insertion_auc": auc.get(method, {}).get("insertion"),
                    "completeness_gap": float(np.mean(np.abs(gap))) if gap else None,
                    "completeness_scale": float(np.mean(np.abs(scale))) if scale else None,
                    "why_unavailable": attr.unavailable.get(method, ""),
                })
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {"models": list(self.attributions), "rows": self.rows(),
                "attributions": {m: a.to_dict() for m, a in self.attributions.items()},
                "faithfulness": {m: f.to_dict() for m, f in self.faithfulness.items()}}

    def save(self, out: str | os.PathLike, figure_rows: int = 6) -> Path:
        """comparison.json, comparison.csv (the table), and per model a folder with its attributions (maps and a
        figure of the first ``figure_rows`` images) and its faithfulness (deletion and insertion curves), each file
        written atomically under the folder's lock."""
        out = out_dir(out)
        with output_lock(out):
            super().write(out)
            for mname, attr in self.attributions.items():
                attr.save(out / _safe(mname), figure_rows)
            for mname, faith in self.faithfulness.items():
                faith.save(out / _safe(mname))
        return out


def compare(
    models: Mapping[str, nn.Module],
    images: Tensor,
    targets: Union[Sequence[int], Tensor],
    config: AttributionConfig = AttributionConfig(),
    faithfulness: Optional[FaithfulnessConfig] = FaithfulnessConfig(),
    device: Any = None,
    progress: bool = True,
    *,
    seed: Optional[int] = None,
    batch_size: Optional[int] = None,
) -> AttributionComparison:
    """:func:`attribute` and :func:`deletion_insertion` for every model on the same images and targets."""
    from tqdm.auto import tqdm

    if not models:
        raise ValueError("give at least one model")
    attributions, faith = {}, {}
    for mname, model in tqdm(models.items(), desc="attribution", unit="model", disable=not progress):
        attr = attribute(model, images, targets, config, name=mname, device=device, batch_size=batch_size)
        attributions[mname] = attr
        if faithfulness is not None and attr.maps:
            faith[mname] = deletion_insertion(model, images, attr.targets, attr.maps, faithfulness, mname, device,
                                              seed=seed, batch_size=batch_size)
    return AttributionComparison(attributions, faith)
