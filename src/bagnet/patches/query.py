"""Reading a patch index: :class:`PatchIndex` (load, search by vectors, look up a patch) and "patches like this one"
(:meth:`PatchIndex.like`), whose :class:`PatchMatches` saves a gallery PNG, an HTML page and JSON."""

from __future__ import annotations

import html
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from ..errors import PatchIndexError
from ..models.bagnet import BagNet
from ..models.preprocess import make_preprocess
from ..plumbing import SCHEMA_VERSION, Result, eval_mode, model_device, write_bytes, write_json, write_text
from .store import Manifest, check_model, read_arrays, read_index, set_nprobe

Box = tuple[int, int, int, int]  # top, left, height, width (pixels of the model's input)


class PatchIndex:
    """A built patch index (:func:`~.build.build_index`): ``manifest``, the faiss ``index`` of normalised patch
    features, and per patch its ``image`` id, evidence ``cell`` (i, j) and top-k evidence (``ev_class``,
    ``ev_value``); ``sources``/``labels`` per image id."""

    def __init__(self, folder: Path, manifest: Manifest, index: Any, arrays: dict[str, np.ndarray],
                 images: dict[str, Any]) -> None:
        self.folder, self.manifest, self.index = folder, manifest, index
        self.image, self.cell = arrays["image"], arrays["cell"]
        self.ev_class, self.ev_value = arrays["ev_class"], arrays["ev_value"]
        self.sources = {int(k): v for k, v in images["sources"].items()}
        self.labels = {int(k): int(v) for k, v in images["labels"].items()}
        self.skipped: dict[str, str] = dict(images.get("skipped", {}))
        set_nprobe(index, manifest.nprobe)

    @classmethod
    def load(cls, folder: Union[str, os.PathLike]) -> "PatchIndex":
        """Open an index folder; a missing, unfinished or damaged one is a :class:`PatchIndexError` naming it."""
        folder = Path(folder)
        manifest = Manifest.load(folder)
        if not manifest.completed:
            raise PatchIndexError(f"the patch index {folder} is unfinished (its build was interrupted); run the same "
                                  f"`bagnet index` again with --resume")
        arrays = read_arrays(folder)
        try:
            images = json.loads((folder / "images.json").read_text(encoding="utf-8"))
            images["sources"], images["labels"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise PatchIndexError(f"{folder / 'images.json'} is missing or damaged ({err})") from None
        index = read_index(folder / "patches.faiss")
        if index.ntotal != len(arrays["image"]) or index.ntotal != manifest.patches or index.d != manifest.dim:
            raise PatchIndexError(f"{folder} is damaged: patches.faiss holds {index.ntotal} vectors of {index.d} "
                                  f"dimensions, the per-patch arrays {len(arrays['image'])} patches, the manifest "
                                  f"{manifest.patches} of {manifest.dim}")
        return cls(folder, manifest, index, arrays, images)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def search(self, vectors: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Cosine similarities and patch ids (n, k) of the ``k`` nearest patches of each (n, dim) feature vector."""
        vectors = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32).reshape(-1, self.manifest.dim))
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return self.index.search(vectors, int(k))

    def patch(self, pid: int) -> dict[str, Any]:
        """Everything the index knows of patch ``pid``: image, label, cell, box and its classes' evidence."""
        m = self.manifest
        image, (i, j) = int(self.image[pid]), (int(v) for v in self.cell[pid])
        top, left = m.stride * i, m.stride * j
        label = self.labels.get(image, -1)
        names = m.labels or m.categories
        return {"id": int(pid), "image": image, "source": self.sources.get(image, f"#{image}"),
                "label": names[label] if 0 <= label < len(names) else None, "cell": [i, j],
                "box": [top, left, m.patch_size, m.patch_size],
                "evidence": {m.categories[int(c)]: float(v) for c, v in zip(self.ev_class[pid], self.ev_value[pid])}}

    def like(self, model: BagNet, image: Union[str, os.PathLike, Tensor], *, box: Optional[Box] = None,
             cell: Optional[tuple[int, int]] = None, k: int = 10, per_image: Optional[int] = 1,
             device: Any = None) -> "PatchMatches":
        """The ``k`` dataset patches most like one patch of ``image`` (a file, or a normalised (3, H, W) tensor at the
        model's preprocessing): the cell ``(i, j)``, or the cell whose patch best covers ``box`` (top, left, height,
        width in pixels of the model's input); at most ``per_image`` from one image (None: no limit; neighbouring
        cells of one image overlap and look alike). ``model`` must be the index's own (checked by its weights)."""
        check_model(self.manifest, model, self.folder)
        source = str(image) if not isinstance(image, Tensor) else "tensor"
        x = self._input(image)
        dev = model_device(model, device)
        with eval_mode(model), torch.no_grad():
            feats = model.forward_features(x[None].to(dev, model.fc.weight.dtype)).float()[0]  # (D, h, w)
        _, h, w = feats.shape
        i, j = self._cell(box, cell, x.shape[-2:], (h, w))
        matches = self._diverse(feats[:, i, j].cpu().numpy()[None], k, per_image)
        q, s = self.manifest.patch_size, self.manifest.stride
        pixels = self._pixels(x)
        crop = pixels[s * i:s * i + q, s * j:s * j + q]
        return PatchMatches(model=self.manifest.model, index=str(self.folder), query_source=source,
                            query_cell=(i, j), query_box=(s * i, s * j, q, q), matches=matches, query_crop=crop,
                            crops=[self.crop(m) for m in matches])

    def _diverse(self, vector: np.ndarray, k: int, per_image: Optional[int]) -> list[dict[str, Any]]:
        """The best ``k`` matches with at most ``per_image`` per image (searching deeper until there are ``k``)."""
        depth = k if per_image is None else k * 8
        while True:
            scores, ids = self.search(vector, min(depth, len(self)))
            chosen, seen = [], {}
            for score, pid in zip(scores[0], ids[0]):
                if pid < 0:
                    continue
                image = int(self.image[pid])
                if per_image is not None and seen.get(image, 0) >= per_image:
                    continue
                seen[image] = seen.get(image, 0) + 1
                chosen.append({**self.patch(int(pid)), "score": float(score)})
                if len(chosen) == k:
                    return chosen
            if depth >= len(self):
                return chosen
            depth *= 4

    def cell_neighbours(self, features: Union[Tensor, np.ndarray], k: int = 4, per_image: Optional[int] = 1
                        ) -> "CellNeighbours":
        """The ``k`` nearest indexed patches of every cell of one image's feature map (D, h, w) (the model's
        ``forward_features``; the caller checks it is the index's model), at most ``per_image`` from one image."""
        feats = np.asarray(features.detach().float().cpu() if isinstance(features, Tensor) else features, np.float32)
        if feats.ndim != 3 or feats.shape[0] != self.manifest.dim:
            raise ValueError(f"expected features (dim={self.manifest.dim}, h, w), got shape {feats.shape}")
        d, h, w = feats.shape
        scores, ids = self.search(feats.reshape(d, -1).T, min(k * 8 if per_image else k, len(self)))
        out_ids = np.full((h * w, k), -1, np.int32)
        out_scores = np.zeros((h * w, k), np.float32)
        position: dict[int, int] = {}  # index id -> position in the patches list
        for n in range(h * w):
            seen: dict[int, int] = {}
            r = 0
            for score, pid in zip(scores[n], ids[n]):
                image = int(self.image[pid]) if pid >= 0 else -1
                if pid < 0 or (per_image is not None and seen.get(image, 0) >= per_image):
                    continue
                seen[image] = seen.get(image, 0) + 1
                out_ids[n, r], out_scores[n, r] = position.setdefault(int(pid), len(position)), score
                r += 1
                if r == k:
                    break
        patches = [self.patch(pid) for pid in position]
        return CellNeighbours(ids=out_ids.reshape(h, w, k), scores=out_scores.reshape(h, w, k), patches=patches,
                              crops=self.crops(patches))

    def crops(self, matches: Sequence[dict[str, Any]]) -> list[np.ndarray]:
        """:meth:`crop` of many patches, each image file read once."""
        by_source: dict[str, np.ndarray] = {}
        out = []
        for m in matches:
            if m["source"] not in by_source:
                by_source[m["source"]] = self._pixels_of(m["source"])
            top, left, q, _ = m["box"]
            out.append(by_source[m["source"]][top:top + q, left:left + q])
        return out

    def _pixels_of(self, source: str) -> np.ndarray:
        from ..data import load_image

        try:
            return self._pixels(self._preprocess(load_image(source)))
        except (OSError, ValueError):  # moved or unreadable since the build: a black patch, not a failure
            size = self.manifest.preprocess.get("crop") or self.manifest.patch_size
            return np.zeros((size, size, 3), np.uint8)

    def crop(self, match: dict[str, Any]) -> np.ndarray:
        """The pixels (q, q, 3) uint8 of an indexed patch, read again from its image file (black if unreadable)."""
        return self.crops([match])[0]

    def _preprocess(self, image: Any) -> Tensor:
        return make_preprocess(**self.manifest.preprocess)(image)

    def _input(self, image: Union[str, os.PathLike, Tensor]) -> Tensor:
        if isinstance(image, Tensor):
            if image.dim() != 3 or image.shape[0] != 3:
                raise ValueError(f"a query image tensor must be (3, H, W), got {tuple(image.shape)}")
            return image.float()
        from ..data import load_image

        return self._preprocess(load_image(image))

    def _pixels(self, x: Tensor) -> np.ndarray:
        prep = make_preprocess(**self.manifest.preprocess)
        return (prep.denormalize(x.float()).clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).numpy()

    def _cell(self, box: Optional[Box], cell: Optional[tuple[int, int]], size: Sequence[int],
              grid: tuple[int, int]) -> tuple[int, int]:
        (H, W), (h, w) = size, grid
        if (box is None) == (cell is None):
            raise ValueError("give exactly one of box (top, left, height, width) or cell (i, j)")
        if cell is not None:
            i, j = cell
            if not (0 <= i < h and 0 <= j < w):
                raise ValueError(f"cell ({i}, {j}) lies outside the evidence map of {h}×{w} cells")
            return int(i), int(j)
        top, left, height, width = box  # type: ignore[misc]
        if height < 1 or width < 1 or top < 0 or left < 0 or top + height > H or left + width > W:
            raise ValueError(f"box top={top}, left={left}, height={height}, width={width} lies outside the "
                             f"{H}×{W} image the model sees (after its preprocessing)")
        q, s = self.manifest.patch_size, self.manifest.stride
        i = min(max(round((top + height / 2 - q / 2) / s), 0), h - 1)
        j = min(max(round((left + width / 2 - q / 2) / s), 0), w - 1)
        return int(i), int(j)


@dataclass(frozen=True)
class CellNeighbours:
    """The nearest indexed patches of every evidence cell of one image: ``ids`` (h, w, k) positions in ``patches``
    (-1 where fewer than k were found), ``scores`` (h, w, k) their cosine similarities, ``patches`` each distinct
    patch once (as :meth:`PatchIndex.patch` describes it) and ``crops`` their pixels (q, q, 3)."""

    ids: np.ndarray
    scores: np.ndarray
    patches: list[dict[str, Any]]
    crops: list[np.ndarray] = field(repr=False)


@dataclass(frozen=True)
class PatchMatches(Result):
    """The dataset patches nearest one query patch, best first: each with its image, label, cell, box, cosine
    ``score`` and evidence; ``crops`` their pixels."""

    model: str
    index: str
    query_source: str
    query_cell: tuple[int, int]
    query_box: tuple[int, int, int, int]
    matches: list[dict[str, Any]]
    query_crop: np.ndarray = field(repr=False)
    crops: list[np.ndarray] = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "model": self.model, "index": self.index,
                "query": {"source": self.query_source, "cell": list(self.query_cell), "box": list(self.query_box)},
                "matches": self.matches}

    def write(self, out: Path) -> None:
        """matches.json, matches.png (the query patch, then its neighbours) and matches.html."""
        from ..report import data_uri, page
        from ..viz import figure_png, patch_gallery_figure

        write_json(out / "matches.json", self.to_dict())
        captions = [f"{m['label']} {m['score']:.2f}" for m in self.matches]
        png = figure_png(patch_gallery_figure([("query", [self.query_crop], ["query"]),
                                               ("nearest", self.crops, captions)],
                                              title=f"{self.model}: patches like {Path(self.query_source).name}"))
        write_bytes(out / "matches.png", png)
        rows = "".join(f"<tr><td class=\"num\">{r + 1}</td><td class=\"num\">{m['score']:.3f}</td>"
                       f"<td>{html.escape(str(m['label']))}</td><td><code>{html.escape(m['source'])}</code></td>"
                       f"<td>{m['box']}</td><td>{html.escape(_top_evidence(m['evidence']))}</td></tr>"
                       for r, m in enumerate(self.matches))
        body = (f"<h1>Patches like this one</h1><p class=\"muted\">{html.escape(self.query_source)}, cell "
                f"{self.query_cell}, box {self.query_box} (top, left, height, width); index {html.escape(self.index)}"
                f"; model {html.escape(self.model)}; score = cosine similarity of patch features.</p>"
                f"<img src=\"{data_uri(png)}\" alt=\"query patch and its nearest dataset patches\">"
                "<table><tr><th>rank</th><th>score</th><th>label</th><th>image</th><th>box</th>"
                f"<th>strongest evidence</th></tr>{rows}</table>")
        write_text(out / "matches.html", page("bagnet: patches like this one", body))


def _top_evidence(evidence: dict[str, float], n: int = 3) -> str:
    return ", ".join(f"{c} {v:+.2f}" for c, v in sorted(evidence.items(), key=lambda kv: -kv[1])[:n])
