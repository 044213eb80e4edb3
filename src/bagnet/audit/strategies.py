"""Strategies: the candidate patches of one class and sign, clustered by their features (spherical k-means through
faiss), each cluster with the centroid and radius that decide, in pass 2, which cells of any image belong to it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..patches.store import faiss_module
from .collect import Candidates

#: The share of a strategy's own candidate patches inside its radius (its members' similarity quantile).
MEMBER_QUANTILE = 0.1


@dataclass
class Clusters:
    """The strategies of one class and sign: unit centroids (k, D), radii (k,), and each candidate's cluster."""

    centroids: np.ndarray
    radii: np.ndarray
    assignment: np.ndarray
    candidates: dict[str, np.ndarray]


def cluster(candidates: Candidates, strategies: int, seed: int = 0, min_members: int = 4) -> Optional[Clusters]:
    """Up to ``strategies`` clusters of the candidates (fewer when there are fewer than ``min_members`` per
    cluster); None when the class has no candidates."""
    arrays = candidates.arrays()
    x = arrays["features"]
    if len(x) == 0:
        return None
    k = max(1, min(strategies, len(x) // min_members))
    if k == 1:
        centroids = x.mean(0, keepdims=True)
    else:
        faiss = faiss_module()
        kmeans = faiss.Kmeans(x.shape[1], k, niter=25, seed=seed, spherical=True, verbose=False,
                              min_points_per_centroid=1, max_points_per_centroid=100_000)
        kmeans.train(np.ascontiguousarray(x))
        centroids = kmeans.centroids
    centroids = centroids / np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    sims = x @ centroids.T
    assignment = sims.argmax(1)
    radii = np.array([np.quantile(sims[assignment == s, s], MEMBER_QUANTILE) if (assignment == s).any() else 1.0
                      for s in range(k)], np.float32)
    return Clusters(centroids.astype(np.float32), radii, assignment, arrays)


def examples(clusters: Clusters, strategy: int, n: int = 8, per_image: int = 1) -> list[dict]:
    """The strategy's candidate patches with the most evidence, at most ``per_image`` from one image."""
    arrays = clusters.candidates
    members = np.flatnonzero(clusters.assignment == strategy)
    order = members[np.argsort(-arrays["values"][members], kind="stable")]
    chosen, seen = [], {}
    for m in order:
        image = int(arrays["images"][m])
        if seen.get(image, 0) >= per_image:
            continue
        seen[image] = seen.get(image, 0) + 1
        chosen.append({"image": image, "cell": [int(v) for v in arrays["cells"][m]],
                       "evidence": float(arrays["values"][m])})
        if len(chosen) == n:
            break
    return chosen
