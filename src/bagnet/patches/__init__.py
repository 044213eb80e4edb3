"""A vector index of every patch of a dataset (faiss): build it in one streaming, resumable pass
(:func:`build_index`), query it by vectors or by "patches like this one" (:class:`PatchIndex`)."""

from .build import build_index, merge_shards
from .query import CellNeighbours, PatchIndex, PatchMatches
from .store import FLAT_LIMIT, IndexConfig, Manifest, choose_factory, model_fingerprint

__all__ = ["build_index", "merge_shards", "CellNeighbours", "PatchIndex", "PatchMatches", "FLAT_LIMIT", "IndexConfig", "Manifest",
           "choose_factory", "model_fingerprint"]
