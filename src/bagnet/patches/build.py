"""Building a patch index: one forward pass over a dataset, in shards of images, in bounded memory.

Every evidence cell of every image is one q×q patch: its feature vector (the classifier's input, L2-normalised) goes
into a faiss index, its image, cell and the evidence of its top-k classes into arrays beside it. Each shard is
written atomically with its own faiss index, so an interrupted build resumes at the first missing shard; under
``torchrun`` rank r builds shards r, r + W, … and rank 0 merges them (:func:`merge_shards`). A compressed index's
quantizer is trained on the first shards' vectors (at most :data:`~.store.TRAIN_SAMPLE`), and its recall@10 is
measured against brute force over the very same vectors while they stream by.
"""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

import numpy as np
import torch

from ..data import SkipLog, check_dataset, sample_path
from ..errors import PatchIndexError
from ..models.bagnet import BagNet
from ..models.meta import model_meta
from ..models.registry import load_bagnet
from ..plumbing import eval_mode, model_device, write_json
from .store import (ARRAYS, TRAIN_PER_LIST, TRAIN_SAMPLE, IndexConfig, Manifest, choose_factory, empty_index,
                    faiss_module, folder_bytes, model_fingerprint, read_index, read_npz, remove_shards, set_nprobe,
                    shard_paths, write_index, write_npy, write_npz)

if TYPE_CHECKING:  # pragma: no cover
    from .query import PatchIndex

#: Sampled query vectors the build measures recall@10 on, and the lists a query visits by default.
RECALL_QUERIES, NPROBE = 100, 32


def build_index(model: Union[BagNet, str], dataset: torch.utils.data.Dataset, out: Union[str, Path],
                config: Optional[IndexConfig] = None, *, data: str = "", batch_size: int = 32, device: Any = None,
                workers: int = 0, resume: bool = False,
                shard_of: tuple[int, int] = (0, 1), name: Optional[str] = None, progress: bool = True,
                log: Callable[[str], None] = print) -> "PatchIndex":
    """Index every patch of ``dataset`` (items ``(normalised image, label, index)`` at the model's preprocessing) into
    the folder ``out``, as ``config`` (:class:`~.store.IndexConfig`) says; returns the loaded
    :class:`~.query.PatchIndex`. ``resume`` continues a build with the same
    model and data; an existing index is never overwritten otherwise. ``shard_of = (rank, world)``: build only
    this process's shards (rank 0 merges once every shard exists). ``name``: how the manifest names the model (a
    spec :func:`bagnet.load` takes, so that queries can load it; default the spec given, else the model's name)."""
    from .query import PatchIndex

    config = config if config is not None else IndexConfig()
    spec = name or (model if isinstance(model, str) else None)
    model = load_bagnet(model, device, "a patch index", "fine-tune a BagNet on the same data and index that")
    n = check_dataset(dataset)
    out = Path(out)
    manifest = _start(model, spec, dataset, out, n, data, config, resume)
    rank, world = shard_of
    started = time.perf_counter()
    state = _BuildState(manifest, out, rank)

    def forward(indices: list[int]) -> dict[str, Any]:
        return _forward_shard(model, dataset, indices, batch_size, device, workers, manifest.evidence_top)

    shard_images = manifest.shard_images
    shards = range(rank, -(-n // shard_images), world)
    from tqdm.auto import tqdm

    with eval_mode(model), tqdm(total=n, desc="index", unit="img", disable=not progress) as bar:
        state.sample_queries(forward)
        for s in shards:
            indices = list(range(s * shard_images, min(n, (s + 1) * shard_images)))
            if shard_paths(out, s)["index"].is_file():
                bar.update(len(indices))
                continue
            state.add_shard(s, forward(indices))
            bar.update(len(indices))
        state.flush()
    seconds = time.perf_counter() - started
    if world > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()  # every rank's shards are written before rank 0 merges them
    if rank != 0:
        return None  # type: ignore[return-value]
    merge_shards(out, seconds=seconds, log=log)
    return PatchIndex.load(out)


class _BuildState:
    """The vectors waiting for a compressed index's quantizer to be trained, and the brute-force recall state."""

    def __init__(self, manifest: Manifest, out: Path, rank: int = 0) -> None:
        self.manifest, self.out, self.rank = manifest, out, rank
        self.trained_path = out / "trained.faiss"
        self.pending: list[tuple[int, dict[str, Any]]] = []
        self.template = read_index(self.trained_path) if self.trained_path.is_file() else None
        if self.template is None and manifest.factory == "Flat":
            self.template = empty_index("Flat", manifest.dim)
        self.queries: Optional[np.ndarray] = None

    def sample_queries(self, forward: Callable[[list[int]], dict[str, Any]]) -> None:
        """The query vectors recall is measured on: a seeded sample of the patches of the dataset's first images,
        the same in every process (each computes them), so every shard can record its brute-force top-10."""
        path = self.out / "queries.npy"
        if path.is_file():
            self.queries = np.load(path)
            return
        images = min(self.manifest.images, self.manifest.shard_images, 16)
        vectors = forward(list(range(images)))["features"]
        if not len(vectors):
            return
        pick = np.random.default_rng(0).choice(len(vectors), size=min(RECALL_QUERIES, len(vectors)), replace=False)
        self.queries = vectors[np.sort(pick)].copy()
        write_npy(path, self.queries)

    def add_shard(self, shard: int, arrays: dict[str, Any]) -> None:
        self.pending.append((shard, arrays))
        if self.template is None and sum(len(a["features"]) for _, a in self.pending) >= TRAIN_SAMPLE:
            self._train() if self.rank == 0 else self._wait_for_quantizer()
        if self.template is not None:
            self.flush()

    def flush(self) -> None:
        """Write every pending shard (training the quantizer first on what there is, at the end of a small build)."""
        if self.pending and self.template is None:
            self._train() if self.rank == 0 else self._wait_for_quantizer()
        faiss = faiss_module()
        for shard, arrays in self.pending:
            index = faiss.clone_index(self.template)
            index.add(arrays["features"])
            paths = shard_paths(self.out, shard)
            exact = _exact_top(self.queries, arrays["features"]) if self.queries is not None else None
            write_json(paths["images"], {"sources": arrays["sources"], "labels": arrays["labels"],
                                         "skipped": arrays["skipped"]})
            write_npz(paths["arrays"], image=arrays["image"], cell=arrays["cell"], ev_class=arrays["ev_class"],
                      ev_value=arrays["ev_value"], exact_score=exact[0] if exact else np.zeros((0, 10), np.float32),
                      exact_local=exact[1] if exact else np.zeros((0, 10), np.int64))
            write_index(index, paths["index"])  # last: a shard is done when its index exists
        self.pending = []

    def _wait_for_quantizer(self) -> None:
        """Other ranks use rank 0's trained quantizer, so that every shard's lists agree and can be merged."""
        _wait_for(self.trained_path)
        self.template = read_index(self.trained_path)

    def _train(self) -> None:
        vectors = np.concatenate([a["features"] for _, a in self.pending])
        index = empty_index(self.manifest.factory, self.manifest.dim)
        ivf = faiss_module().try_extract_index_ivf(index)
        wanted = min(TRAIN_SAMPLE, TRAIN_PER_LIST * ivf.nlist) if ivf is not None else TRAIN_SAMPLE
        if len(vectors) > wanted:
            vectors = vectors[np.sort(np.random.default_rng(0).choice(len(vectors), wanted, replace=False))]
        try:
            index.train(vectors)
        except RuntimeError as err:
            raise PatchIndexError(f"faiss cannot train {self.manifest.factory!r} on {len(vectors)} patches "
                                  f"({str(err).strip().splitlines()[-1][:160]}); choose a smaller index type "
                                  f"(--index-type Flat)") from None
        write_index(index, self.trained_path)
        self.template = index


def _wait_for(path: Path, timeout: float = 3600.0) -> Path:
    """Wait for rank 0 to write ``path`` (its trained quantizer)."""
    waited = 0.0
    while not path.is_file():
        if waited > timeout:
            raise PatchIndexError(f"{path} did not appear within {timeout:.0f} s: rank 0 writes it; is it running?")
        time.sleep(1.0)
        waited += 1.0
    return path


def _exact_top(queries: np.ndarray, vectors: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force top-k (inner product) of ``queries`` among ``vectors``: scores and row numbers (−1 beyond)."""
    scores = queries @ vectors.T
    k_here = min(k, scores.shape[1])
    if k_here < scores.shape[1]:  # the k best of each row without sorting the whole row
        part = np.argpartition(-scores, k_here - 1, axis=1)[:, :k_here]
    else:
        part = np.tile(np.arange(scores.shape[1]), (len(scores), 1))
    top = np.take_along_axis(part, np.argsort(-np.take_along_axis(scores, part, 1), axis=1, kind="stable"), 1)
    out_s = np.full((len(queries), k), -np.inf, np.float32)
    out_i = np.full((len(queries), k), -1, np.int64)
    out_s[:, :k_here] = np.take_along_axis(scores, top, 1)
    out_i[:, :k_here] = top
    return out_s, out_i


def _forward_shard(model: BagNet, dataset: torch.utils.data.Dataset, indices: list[int], batch_size: int,
                   device: Any, workers: int, evidence_top: int) -> dict[str, Any]:
    """Features, cells and top-k evidence of the patches of ``dataset[indices]`` (image ids are dataset indices)."""
    from ..data.sampling import ordered_batches

    dev = model_device(model, device)
    skips = SkipLog()
    feats, images, cells, ev_class, ev_value = [], [], [], [], []
    sources, labels = {}, {}
    for batch in ordered_batches(dataset, indices, batch_size, skips, workers):
        with torch.no_grad():
            f = model.forward_features(batch.images.to(dev, model.fc.weight.dtype)).float()  # (B, D, h, w)
            ev = torch.nn.functional.conv2d(f, model.fc.weight.float()[:, :, None, None], model.fc.bias.float())
        B, D, h, w = f.shape
        flat = f.permute(0, 2, 3, 1).reshape(-1, D)
        feats.append(torch.nn.functional.normalize(flat, dim=1).cpu().numpy())
        top = ev.permute(0, 2, 3, 1).reshape(-1, ev.shape[1]).topk(evidence_top, dim=1)
        ev_class.append(top.indices.to(torch.int16).cpu().numpy())
        ev_value.append(top.values.to(torch.float16).cpu().numpy())
        ids = batch.indices.repeat_interleave(h * w).numpy()
        images.append(ids.astype(np.int32))
        grid = np.stack(np.meshgrid(np.arange(h), np.arange(w), indexing="ij"), -1).reshape(-1, 2)
        cells.append(np.tile(grid, (B, 1)).astype(np.int16))
        for i, label in zip(batch.indices.tolist(), batch.labels.tolist()):
            sources[str(i)], labels[str(i)] = sample_path(dataset, i), int(label)
    dim = model.num_features
    return {"features": np.concatenate(feats) if feats else np.zeros((0, dim), np.float32),
            "image": np.concatenate(images) if images else np.zeros(0, np.int32),
            "cell": np.concatenate(cells) if cells else np.zeros((0, 2), np.int16),
            "ev_class": np.concatenate(ev_class) if ev_class else np.zeros((0, evidence_top), np.int16),
            "ev_value": np.concatenate(ev_value) if ev_value else np.zeros((0, evidence_top), np.float16),
            "sources": sources, "labels": labels, "skipped": dict(skips.paths)}


def _start(model: BagNet, spec: Optional[str], dataset: torch.utils.data.Dataset, out: Path, n: int, data: str,
           config: IndexConfig, resume: bool) -> Manifest:
    """The manifest of a new build (written), or that of the build being resumed (checked against this one)."""
    meta = model_meta(model)
    categories = list(model.categories or [str(c) for c in range(model.num_classes)])
    probe = dataset[0]
    if isinstance(probe, tuple) and isinstance(probe[0], torch.Tensor):
        h, w = model.evidence_size(*probe[0].shape[-2:])
    else:
        side = meta.resolution or 224
        h, w = model.evidence_size(side, side)
    manifest = Manifest(model=spec or model.name, fingerprint=model_fingerprint(model), patch_size=model.patch_size,
                        stride=model.stride, categories=categories, preprocess=meta.preprocess.to_dict(),
                        dim=model.num_features,
                        factory=choose_factory(n * h * w, model.num_features, config.index_type),
                        data=data, shard_images=config.shard_images, images=n,
                        evidence_top=min(config.evidence_top, len(categories)), nprobe=None,
                        labels=_dataset_classes(dataset) or categories)
    if (out / "manifest.json").is_file():
        old = Manifest.load(out)
        if not resume:
            raise PatchIndexError(f"{out} already holds a patch index ({old.patches or 'unfinished'} patches of "
                                  f"{old.data or 'a dataset'}); give another --out, or --resume an unfinished build")
        same = ("fingerprint", "factory", "images", "shard_images", "evidence_top", "data")
        changed = [k for k in same if getattr(old, k) != getattr(manifest, k)]
        if changed:
            raise PatchIndexError(f"{out} holds a build with other {', '.join(changed)} ("
                                  + ", ".join(f"{k}={getattr(old, k)!r}" for k in changed)
                                  + "); resume it with the same model, data and settings, or give another --out")
        return old
    empty_index(manifest.factory, manifest.dim)  # a factory faiss cannot build fails before anything is written
    out.mkdir(parents=True, exist_ok=True)
    manifest.save(out)
    return manifest


def _dataset_classes(dataset: Any) -> list[str]:
    while isinstance(dataset, torch.utils.data.Subset):
        dataset = dataset.dataset
    names = getattr(dataset, "categories", None) or getattr(dataset, "classes", None)
    return [str(c) for c in names] if names is not None else []


def merge_shards(out: Path, seconds: float = 0.0, log: Callable[[str], None] = print) -> Manifest:
    """Merge a build's shards into ``patches.faiss``, the per-patch arrays (:data:`~.store.ARRAYS`, streamed into
    memory-mapped ``.npy`` files) and ``images.json``; measure recall@10 of the index against the brute-force
    top-10 recorded per shard; mark the manifest completed; remove the shards."""
    faiss = faiss_module()
    manifest = Manifest.load(out)
    count = -(-manifest.images // manifest.shard_images)
    missing = [s for s in range(count) if not shard_paths(out, s)["index"].is_file()]
    if missing:
        raise PatchIndexError(f"{out}: shards {missing[:5]} are not built yet; resume the build (--resume) to finish")
    merged, images = None, {"sources": {}, "labels": {}, "skipped": {}}
    exact_s, exact_i, offset = None, None, 0
    for s in range(count):
        paths = shard_paths(out, s)
        index = read_index(paths["index"])
        added = int(index.ntotal)  # merge_from empties the index it merges
        exact = read_npz(paths["arrays"], ("exact_score", "exact_local"))
        try:
            info = json.loads(paths["images"].read_text())
        except (OSError, ValueError) as err:
            raise PatchIndexError(f"{paths['images']} is damaged ({err})") from None
        for key in images:
            images[key].update(info[key])
        if merged is None:
            merged = index
        elif faiss.try_extract_index_ivf(merged) is not None:
            merged.merge_from(index, offset)
        else:
            merged.merge_from(index, 0)
        if len(exact["exact_score"]):
            local = exact["exact_local"]
            global_ids = np.where(local >= 0, local + offset, -1)
            exact_s, exact_i = _merge_top(exact_s, exact_i, exact["exact_score"], global_ids)
        offset += added
    recall = _recall(merged, out, exact_i, exact_s) if exact_i is not None else None
    _merge_arrays(out, count, offset)
    write_json(out / "images.json", {"sources": {int(k): v for k, v in images["sources"].items()},
                                     "labels": {int(k): v for k, v in images["labels"].items()},
                                     "skipped": images["skipped"]})
    write_index(merged, out / "patches.faiss")
    remove_shards(out)
    for name in ("trained.faiss", "queries.npy"):
        (out / name).unlink(missing_ok=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    size = folder_bytes(out)
    build = {"seconds": round(seconds, 2), "patches_per_second": round(offset / seconds, 1) if seconds else None,
             "bytes": size, "bytes_per_patch": round(size / max(offset, 1), 1), "peak_rss_bytes": peak}
    done = Manifest(**{**manifest.__dict__, "patches": offset, "completed": True, "recall_at_10": recall,
                       "nprobe": NPROBE if faiss.try_extract_index_ivf(merged) is not None else None, "build": build})
    done.save(out)
    log(f"indexed {offset:,} patches of {len(images['sources']):,} images into {out} ({manifest.factory}"
        + (f", recall@10 {recall:.3f} against brute force" if recall is not None else "") + ")")
    return done


def _merge_arrays(out: Path, count: int, total: int) -> None:
    """Each per-patch array of the shards, in shard order, into one ``.npy`` file written through a memory map (never
    all in memory), under a temporary name and then renamed."""
    import os

    for name in ARRAYS:
        first = read_npz(shard_paths(out, 0)["arrays"], (name,))[name]
        tmp = out / f"{name}.npy.tmp"
        target = np.lib.format.open_memmap(tmp, mode="w+", dtype=first.dtype, shape=(total, *first.shape[1:]))
        row = 0
        for s in range(count):
            part = read_npz(shard_paths(out, s)["arrays"], (name,))[name]
            target[row:row + len(part)] = part
            row += len(part)
        target.flush()
        del target
        os.replace(tmp, out / f"patch_{name}.npy")


def _merge_top(s0: Optional[np.ndarray], i0: Optional[np.ndarray], s1: np.ndarray, i1: np.ndarray,
               k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    if s0 is None or i0 is None:
        return s1, i1
    s, i = np.concatenate([s0, s1], 1), np.concatenate([i0, i1], 1)
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, order, 1), np.take_along_axis(i, order, 1)


def _recall(index: Any, out: Path, exact_ids: np.ndarray, exact_scores: np.ndarray, k: int = 10) -> float:
    """Share of the brute-force top-k the index returns in its own top-k, over the build's sampled queries. A returned
    patch outside the brute-force list counts when its score ties the k-th best (within 1e-5: float rounding of
    two exact computations orders ties differently)."""
    queries = np.load(out / "queries.npy")
    set_nprobe(index, NPROBE)
    scores, found = index.search(queries, k)
    hits = []
    for f, fs, e, es in zip(found, scores, exact_ids, exact_scores):
        valid = e >= 0
        kth = es[valid][-1] if valid.any() else np.inf
        got = sum(1 for i, s in zip(f, fs) if i >= 0 and (i in set(e[valid]) or abs(s - kth) <= 1e-5))
        hits.append(min(got, int(valid.sum())) / max(1, int(valid.sum())))
    return float(np.mean(hits))
