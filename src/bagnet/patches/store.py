"""The folder a patch index lives in: its manifest, its shards and the merged faiss index, each file written
atomically; the choice of faiss index for a dataset's size; and the checks that name what is wrong with a folder.

Layout of ``DIR``::

    manifest.json        what was indexed, with which model (its fingerprint), how, and how far (``completed``)
    patches.faiss        the vectors (L2-normalised patch features, inner product = cosine similarity)
    patch_*.npy          per patch: image id, evidence cell (i, j), the top-k classes and their evidence (fp16),
                         memory-mapped when read
    images.json          per image id: its file and label; the files that could not be read
    shards/NNNNN.*       the shards of an unfinished build (removed once merged)
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, PatchIndexError
from ..plumbing import option, write_bytes, write_json

MANIFEST = "manifest.json"
#: The per-patch arrays beside the vectors: ``patch_NAME.npy`` for each NAME.
ARRAYS = ("image", "cell", "ev_class", "ev_value")
KIND = "bagnet patch index"
#: Datasets up to this many patches get an exact (flat) index: brute force answers a query within milliseconds there.
FLAT_LIMIT = 200_000
#: Vectors a compressed index's quantizer is trained on at most, and per list (faiss wants ≥ 39 per IVF list).
TRAIN_SAMPLE, TRAIN_PER_LIST = 100_000, 64


@dataclass(frozen=True)
class IndexConfig:
    """Settings of :func:`~bagnet.patches.build_index` (``bagnet index`` flags)."""

    index_type: str = option("auto", "auto (exact Flat up to 200,000 patches, else IVF…_HNSW32,SQ8) or any faiss "
                                     "index factory string, e.g. IVF4096,PQ32", metavar="FACTORY")
    shard_images: int = option(256, "images per shard (each written atomically; --resume continues at the first "
                                    "missing one)", min=1)
    evidence_top: int = option(16, "classes whose evidence each patch keeps, the largest", min=1)

    def __post_init__(self) -> None:
        if not isinstance(self.index_type, str) or not self.index_type.strip():
            raise ConfigError(f"index_type (--index-type) must be auto or a faiss factory string, got "
                              f"{self.index_type!r}", "index_type")
        for name in ("shard_images", "evidence_top"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} (--{name.replace('_', '-')}) must be an integer ≥ 1, got {value!r}", name)


@dataclass(frozen=True)
class Manifest:
    """What a patch index holds and how it was built."""

    model: str
    fingerprint: str  # SHA-256 of the model's weights: a query with another model is refused
    patch_size: int
    stride: int
    categories: list[str]
    preprocess: dict[str, Any]
    dim: int
    factory: str  # the faiss index factory string (Flat, IVF1024,SQ8, …)
    data: str
    shard_images: int
    images: int  # images in the dataset (readable or not)
    evidence_top: int  # classes whose evidence each patch keeps (the k largest)
    labels: list[str] = field(default_factory=list)  # the dataset's class names (its labels' order)
    patches: int = 0
    completed: bool = False
    nprobe: Optional[int] = None
    recall_at_10: Optional[float] = None  # against brute force over the same vectors, on sampled queries
    build: dict[str, Any] = field(default_factory=dict)  # seconds, patches per second, peak memory, …

    def to_dict(self) -> dict[str, Any]:
        return {"kind": KIND, **asdict(self)}

    def save(self, folder: Path) -> Path:
        return write_json(folder / MANIFEST, self.to_dict())

    @classmethod
    def load(cls, folder: Path) -> "Manifest":
        path = folder / MANIFEST
        if not folder.is_dir():
            raise PatchIndexError(f"patch index {folder} does not exist (build one with `bagnet index`)")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise PatchIndexError(f"{folder} is not a patch index: it has no {MANIFEST}") from None
        except (OSError, ValueError) as err:
            raise PatchIndexError(f"{path} is damaged: {err}") from None
        if not isinstance(data, dict) or data.pop("kind", None) != KIND:
            raise PatchIndexError(f"{path} is not the manifest of a bagnet patch index")
        known = set(cls.__dataclass_fields__)
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except TypeError as err:
            raise PatchIndexError(f"{path} is damaged: {err}") from None


def faiss_module() -> Any:
    """faiss, or an ImportError that says how to install it."""
    try:
        import faiss
    except ImportError:
        raise ImportError("the patch index needs faiss: pip install 'bagnet[index]' (faiss-cpu; a GPU build of faiss "
                          "works too)") from None
    return faiss


def model_fingerprint(model: nn.Module) -> str:
    """SHA-256 (first 16 hex digits) of a model's parameters and buffers, in state-dict order."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def choose_factory(patches: int, dim: int, requested: str = "auto") -> str:
    """The faiss index for ``patches`` vectors of ``dim``: exact ``Flat`` up to :data:`FLAT_LIMIT`, else an inverted
    file of 8-bit scalar-quantized vectors (4× smaller than float32, recall@10 measured by the build) with about √N
    lists (a power of two; at most what the training sample supports) found through an HNSW graph of the list
    centroids, so that adding a patch costs a few distance computations, not one per list. Any faiss factory string
    may be requested instead."""
    if requested != "auto":
        return requested
    if patches <= FLAT_LIMIT:
        return "Flat"
    lists = 2 ** int(math.log2(min(math.sqrt(patches), TRAIN_SAMPLE / TRAIN_PER_LIST)))
    return f"IVF{lists}_HNSW32,SQ8"


def empty_index(factory: str, dim: int) -> Any:
    faiss = faiss_module()

    try:
        return faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[-1][:200]
        raise ValueError(f"faiss cannot build the index {factory!r} for {dim}-dimensional patches: {first}") from None


def set_nprobe(index: Any, nprobe: Optional[int]) -> None:
    """Lists an inverted-file index visits per query (nothing for indexes without lists)."""
    faiss = faiss_module()

    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:
        return
    if nprobe is not None:
        ivf.nprobe = min(int(nprobe), ivf.nlist)


def write_index(index: Any, path: Path) -> Path:
    """A faiss index written atomically (faiss writes the file itself: no copy of a large index in memory)."""
    import os

    faiss = faiss_module()
    tmp = path.with_name(path.name + ".tmp")
    faiss.write_index(index, str(tmp))
    os.replace(tmp, path)
    return path


def read_index(path: Path) -> Any:
    """A faiss index file; a missing or damaged one is a :class:`PatchIndexError` naming it."""
    faiss = faiss_module()
    if not path.is_file():
        raise PatchIndexError(f"{path} is missing: the patch index is incomplete (rebuild, or --resume the build)")
    try:
        return faiss.read_index(str(path))
    except (RuntimeError, OSError, ValueError) as err:
        first = str(err).strip().splitlines()[-1][:160] if str(err).strip() else type(err).__name__
        raise PatchIndexError(f"{path} is damaged and cannot be read by faiss ({first})") from None


def write_npz(path: Path, **arrays: np.ndarray) -> Path:
    import io

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return write_bytes(path, buffer.getvalue())


def write_npy(path: Path, array: np.ndarray) -> Path:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array)
    return write_bytes(path, buffer.getvalue())


def read_arrays(folder: Path) -> dict[str, np.ndarray]:
    """The per-patch arrays of a finished index, memory-mapped (read on demand, whatever the index's size)."""
    arrays = {}
    for name in ARRAYS:
        path = folder / f"patch_{name}.npy"
        try:
            arrays[name] = np.load(path, mmap_mode="r", allow_pickle=False)
        except FileNotFoundError:
            raise PatchIndexError(f"{path} is missing: the patch index is incomplete or damaged") from None
        except (OSError, ValueError) as err:
            raise PatchIndexError(f"{path} is damaged ({err})") from None
    lengths = {len(a) for a in arrays.values()}
    if len(lengths) != 1:
        raise PatchIndexError(f"{folder} is damaged: its per-patch arrays differ in length ({sorted(lengths)})")
    return arrays


def read_npz(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in keys if k not in data.files]
            if missing:
                raise PatchIndexError(f"{path} is damaged: it lacks {missing}")
            return {k: data[k] for k in keys}
    except FileNotFoundError:
        raise PatchIndexError(f"{path} is missing: the patch index is incomplete") from None
    except (OSError, ValueError, EOFError) as err:
        if isinstance(err, PatchIndexError):
            raise
        raise PatchIndexError(f"{path} is damaged ({type(err).__name__}: {err})") from None


def check_model(manifest: Manifest, model: nn.Module, folder: Path) -> None:
    """Refuse a model other than the one the index was built with: its patches live in another feature space."""
    got = model_fingerprint(model)
    name = getattr(model, "name", type(model).__name__)
    if got != manifest.fingerprint:
        raise PatchIndexError(f"the patch index {folder} was built with {manifest.model} (weights "
                              f"{manifest.fingerprint}); the model given ({name}, weights {got}) is another: its "
                              f"patch features are not comparable. Query with the index's own model or build an "
                              f"index for this one")


def shard_paths(folder: Path, shard: int) -> dict[str, Path]:
    base = folder / "shards" / f"{shard:05d}"
    return {"index": base.with_suffix(".faiss"), "arrays": base.with_suffix(".npz"),
            "images": base.with_suffix(".json")}


def remove_shards(folder: Path) -> None:
    shards = folder / "shards"
    if shards.is_dir():
        for path in shards.iterdir():
            path.unlink()
        shards.rmdir()


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())

