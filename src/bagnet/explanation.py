"""Why did the model decide this about my images? Predictions, exact evidence heatmaps and the patches behind them.

:func:`explain` takes image files, folders or PIL images and a BagNet (the embedded default when none is given) and
returns, per image, the top-K classes with probabilities, the per-pixel evidence heatmap of each (``bagnet.heatmap``)
and the most and least supportive patches (cells of the stride-8 evidence map, each a q×q crop of the image).
``Explanation.save(dir)`` writes PNG figures, JSON/CSV and one self-contained HTML report.

:func:`bagnet.gallery.class_patches` (the dataset's patch gallery) lives in ``gallery.py``.

Images of any kind are accepted (see ``bagnet.data.load_image``: JPEG/PNG/WebP/BMP/TIFF, grayscale, palette, RGBA
composited on white, 16-bit, EXIF-rotated). The model sees each image at its own scale — the short side resized to
the size its weights were trained for, without cropping — and never larger than ``max_side`` on its long side.
Images smaller than the patch size are refused with a message, or enlarged with ``upscale_small``. Files that cannot
be read are reported by name in ``Explanation.failures``; the others are still explained.
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision.transforms import functional as TF

from .data import IMAGE_EXTENSIONS, ImageReadError, image_size, load_image
from .data.images import collect_inputs
from .errors import ConfigError
from .heatmaps import heatmap
from .models.bagnet import BagNet
from .models.meta import model_meta
from .models.registry import load_bagnet
from .patches import CellNeighbours, PatchIndex

from .plumbing import (SCHEMA_VERSION, safe_stem, eval_mode, model_device, option, Result, write_csv, write_json,
                       write_text)
#: The distinct scikit-image sample photos `bagnet explain --samples` uses (skimage's ``cat`` is ``chelsea``).
SAMPLE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
ImageInput = Union[str, os.PathLike, Image.Image, tuple[str, Image.Image]]
#: Largest long side (px) an image is explained at: bounds the time and memory one image can take.
MAX_SIDE = 4096


@dataclass(frozen=True)
class ExplainConfig:
    """Settings of :func:`explain`."""

    top: int = option(3, "classes explained per image", min=1)
    stride: int = option(1, "heatmap stride: 1 exact at every pixel; 2, 4, 8 faster (bilinearly resampled)",
                         choices=(1, 2, 4, 8))
    size: Optional[int] = option(None, "short side the model sees in px (default: as its weights expect; 0: native)",
                                 min=0, metavar="PX")
    max_side: int = option(1024, "long side limit in px (larger images are scaled down)", min=16, metavar="PX")
    upscale_small: bool = option(False, "enlarge images smaller than the patch size instead of refusing them")
    patches: int = option(5, "most and least supportive patches shown per class", min=0, metavar="N")
    percentile: float = option(99.0, "overlays clip the colour scale at this percentile of |evidence|", min=50.0)
    background: str = option("faded", "how overlays show the image: faded or by its edges", choices=("faded", "edges"))
    precision: str = option("strict", "heatmap arithmetic: strict (exact up to fp32 rounding), tf32 (CUDA: ~3.5x "
                                      "faster, ~1e-4 of the range), bf16 (~1e-2 of the range)",
                            choices=("strict", "tf32", "bf16"))
    index: Optional[str] = option(None, "a patch index folder (`bagnet index`, the same model): the report shows "
                                        "the nearest dataset patches of every cell", metavar="DIR")
    neighbours: int = option(4, "nearest dataset patches per cell with --index (at most one per dataset image)",
                             min=1, metavar="K")
    anonymise: bool = option(False, "for sharing: images numbered instead of named (no file names or paths in any "
                                    "result file), dataset patches named by label only")

    def __post_init__(self) -> None:
        if self.neighbours < 1:
            raise ConfigError(f"neighbours (--neighbours) must be >= 1, got {self.neighbours}")
        if self.top < 1 or self.patches < 0:
            raise ConfigError(f"top must be >= 1 and patches >= 0; got top={self.top}, patches={self.patches}")
        if not 16 <= self.max_side <= MAX_SIDE:
            raise ConfigError(f"max_side (--max-side) must lie in [16, {MAX_SIDE}] px, got {self.max_side}")
        if self.size is not None and not 0 <= self.size <= MAX_SIDE:
            raise ConfigError(f"size (--size) must be None, 0 (native) or a number of pixels up to {MAX_SIDE}, got "
                              f"{self.size}")
        if self.stride not in (1, 2, 4, 8):
            raise ConfigError(f"stride (--stride) must be 1, 2, 4 or 8, got {self.stride}")
        if self.precision not in ("strict", "tf32", "bf16"):
            raise ConfigError(f"precision (--precision) must be strict, tf32 or bf16, got {self.precision!r}")
        if self.background not in ("faded", "edges"):
            raise ConfigError(f"background must be 'faded' or 'edges', got {self.background!r}")
        if not 50 <= self.percentile <= 100:
            raise ConfigError(f"percentile must lie in [50, 100], got {self.percentile}")


@dataclass(frozen=True)
class Patch:
    """One evidence cell: the pixel box ``(top, left, bottom, right)`` it sees and its evidence for a class."""

    box: tuple[int, int, int, int]
    evidence: float


@dataclass(frozen=True)
class ImageExplanation:
    """The explanation of one image (``image``: the RGB pixels the model saw, uint8 (H, W, 3))."""

    source: str
    image: np.ndarray
    original_size: tuple[int, int]  # (width, height) of the file
    classes: list[int]
    names: list[str]
    probabilities: list[float]
    logits: list[float]
    heatmaps: np.ndarray  # (K, H, W) evidence per explained class
    support: list[list[Patch]]  # per class: most supportive patches, highest first
    oppose: list[list[Patch]]  # per class: least supportive patches, lowest first
    notes: list[str] = field(default_factory=list)
    sparsity: dict[str, float] = field(default_factory=dict)  # of the top class's evidence (bagnet.sparsity)
    evidence: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0), np.float32))  # (K, h, w) per cell
    scales: list[float] = field(default_factory=list)  # per class: the colour scale's clipping value
    neighbours: Optional[CellNeighbours] = None  # nearest patches of every cell in a patch index (--index)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source, "original_size": list(self.original_size),
            "size": [int(self.image.shape[1]), int(self.image.shape[0])],
            "grid": list(self.evidence.shape[1:]),
            "predictions": [{"class": c, "name": n, "probability": p, "logit": lg,
                             "evidence_min": float(h.min()), "evidence_max": float(h.max()),
                             "colour_scale": sc, "evidence": ev.tolist()}
                            for c, n, p, lg, h, sc, ev in zip(self.classes, self.names, self.probabilities,
                                                              self.logits, self.heatmaps, self.scales,
                                                              self.evidence.astype(np.float64))],
            "support": [[asdict(p) for p in ps] for ps in self.support],
            "oppose": [[asdict(p) for p in ps] for ps in self.oppose],
            "notes": self.notes, "sparsity": self.sparsity,
            **({"neighbours": {"patches": self.neighbours.patches, "ids": self.neighbours.ids.tolist(),
                               "scores": np.round(self.neighbours.scores.astype(np.float64), 5).tolist()}}
               if self.neighbours is not None else {}),
        }


@dataclass(frozen=True)
class Explanation(Result):
    """Explanations of a batch of images by one BagNet, and the inputs that failed (source → reason)."""

    model: str
    patch_size: int
    stride: int
    images: list[ImageExplanation]
    failures: dict[str, str]
    config: dict[str, Any] = field(default_factory=dict)
    origin: int = 0  # row (= column) of the top-left pixel of cell (0, 0)'s patch: cell (i, j) starts at s·i + origin
    skipped: dict[str, str] = field(default_factory=dict)  # files in the given folders that are not images

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "model": self.model, "patch_size": self.patch_size,
                "stride": self.stride, "origin": self.origin, "config": self.config,
                "images": [e.to_dict() for e in self.images],
                "failures": self.failures, "skipped": self.skipped}

    def save(self, out: str | os.PathLike) -> Path:
        """Per image a folder of PNGs (evidence overlay per class, supportive/opposing patches, the input), plus
        explanations.json, predictions.csv and report.html (one interactive file: point at a pixel to see its patch
        and the patch's evidence; no network)."""
        return super().save(out)

    def anonymised(self) -> "Explanation":
        """The same explanation for sharing: images called ``image 1``, ``image 2``, … (no file name or path left,
        also not in failure reasons or notes), the files skipped only counted, dataset patches named by label."""
        names = {e.source: f"image {n}" for n, e in enumerate(self.images, start=1)}
        names.update({src: f"failed {n}" for n, src in enumerate(self.failures, start=1)})

        def scrub(text: str) -> str:
            for src, name in sorted(names.items(), key=lambda kv: -len(kv[0])):
                text = text.replace(src, name)
            return text

        images = [replace(e, source=f"image {n}", notes=[scrub(t) for t in e.notes],
                          neighbours=None if e.neighbours is None else replace(e.neighbours, patches=[
                              {**p, "source": f"{p.get('label') or 'patch'} #{p['id']}", "image": None}
                              for p in e.neighbours.patches])) for n, e in enumerate(self.images, start=1)]
        config = {**self.config, **({"index": "(given)"} if self.config.get("index") else {})}
        skipped = {f"{len(self.skipped)} files": "not image files by their ending"} if self.skipped else {}
        return replace(self, images=images, failures={names[k]: scrub(v) for k, v in self.failures.items()},
                       skipped=skipped, config=config, model=_model_label(self.model))

    def write(self, out: Path) -> None:
        from .report import explanation_report
        from .viz import figure_png, overlay_figure, patch_gallery_figure

        # the per-image folders are written into a fresh folder that then replaces images/ as a whole, so images/
        # never mixes this run's files with an earlier run's
        staging = out / f".images.{os.getpid()}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        percentile = self.config.get("percentile", 99.0)
        for i, e in enumerate(self.images):
            folder = staging / f"{i:03d}_{_stem(e.source)}"
            folder.mkdir(parents=True, exist_ok=True)
            for k, (name, prob) in enumerate(zip(e.names, e.probabilities)):
                png = figure_png(overlay_figure(e.image, e.heatmaps[k], title=f"{name} ({100 * prob:.1f} %)",
                                                percentile=percentile,
                                                background=self.config.get("background", "faded"),
                                                scale=e.scales[k] if k < len(e.scales) else None))
                (folder / f"evidence_{k + 1}_{_stem(name)}.png").write_bytes(png)
            rows = []
            for k, name in enumerate(e.names):
                for label, patches in ((f"{name}: for", e.support[k]), (f"{name}: against", e.oppose[k])):
                    if patches:
                        rows.append((label, [_crop(e.image, p.box) for p in patches],
                                     [f"{p.evidence:+.2f}" for p in patches]))
            if rows:
                png = figure_png(patch_gallery_figure(rows, title=f"patches ({self.patch_size}×{self.patch_size} px)"))
                (folder / "patches.png").write_bytes(png)
            Image.fromarray(e.image).save(folder / "input.png", format="PNG")
        staging.mkdir(parents=True, exist_ok=True)
        old = out / f".images.{os.getpid()}.old"
        if (out / "images").exists():
            os.replace(out / "images", old)
        os.replace(staging, out / "images")
        shutil.rmtree(old, ignore_errors=True)
        write_json(out / "explanations.json", self.to_dict())
        rows_csv: list[list[Any]] = []
        for e in self.images:
            for r, (c, n, p, lg) in enumerate(zip(e.classes, e.names, e.probabilities, e.logits), start=1):
                rows_csv.append([e.source, r, c, n, f"{p:.6f}", f"{lg:.6f}"])
        for source, reason in self.failures.items():
            rows_csv.append([source, "", "", f"FAILED: {reason}", "", ""])
        for source, reason in self.skipped.items():
            rows_csv.append([source, "", "", f"SKIPPED: {reason}", "", ""])
        write_csv(out / "predictions.csv", rows_csv, header=["source", "rank", "class", "name", "probability", "logit"])
        write_text(out / "report.html", explanation_report(self, percentile))


def _model_label(name: str) -> str:
    """A model's name without the folders of a path (a run folder or weights file names only its last part)."""
    return Path(name).name if ("/" in name or "\\" in name) else name


class ImageTooSmall(ValueError):
    """An image is smaller than the model's patch size (and ``upscale_small`` is off)."""


class ImageShapeRefused(ValueError):
    """An image is so elongated that it cannot be shown within ``max_side`` without stretching it."""


# ---------------------------------------------------------------------------------------------------- explain
def explain(
    inputs: Union[ImageInput, Sequence[ImageInput]],
    model: Union[BagNet, str] = "default",
    config: ExplainConfig = ExplainConfig(),
    device: Any = None,
    progress: bool = True,
) -> Explanation:
    """Explain every image in ``inputs``: files, folders (searched recursively for image files), PIL images, or
    ``(label, PIL image)`` pairs (the label names the image in the results)."""
    from tqdm.auto import tqdm

    model = load_bagnet(model, device, "explanations", "use `bagnet attribution` for post-hoc maps of other models")
    sources, failures, skipped = collect_inputs(inputs)
    if not sources and not failures:
        raise ValueError("no images given" + (f" (skipped, not image files: {', '.join(skipped)})" if skipped else ""))
    index = _open_index(config.index, model)
    explained = []
    for n, source in enumerate(tqdm(sources, desc="explain", unit="img", disable=not progress)):
        label = source if isinstance(source, str) else source[0] if isinstance(source, tuple) else f"image {n}"
        try:
            if isinstance(source, str):
                fit_size(*image_size(source), model, config, label)  # refuse from the header, before decoding
                image = load_image(source, window=model_meta(model).intensity_window)
            else:
                image = source[1] if isinstance(source, tuple) else source
            explained.append(explain_image(model, image, label, config, device, index=index))
        except Exception as err:  # one image's failure (MemoryError included) must not lose the others
            failures[label] = _reason(err, label)
    result = Explanation(model=model.name, patch_size=model.patch_size, stride=model.stride, images=explained,
                         failures=failures, config=asdict(config), skipped=skipped, origin=model.patch_box(0, 0)[0])
    return result.anonymised() if config.anonymise else result


def _open_index(folder: Optional[str], model: BagNet) -> Optional[PatchIndex]:
    """The patch index of ``--index``, checked to be ``model``'s own (a PatchIndexError naming the folder if not)."""
    if folder is None:
        return None
    from .patches.store import check_model

    index = PatchIndex.load(folder)
    check_model(index.manifest, model, Path(folder))
    return index


def _reason(err: Exception, label: str) -> str:
    """A one-line reason for a failed image that names it."""
    if isinstance(err, MemoryError):
        text = "out of memory while explaining it (try a smaller --max-side or --size)"
    elif isinstance(err, (ImageReadError, ImageTooSmall, ImageShapeRefused, OSError, ValueError)):
        text = str(err)
    else:
        text = f"{type(err).__name__}: {err}"
    return text if label in text else f"{label}: {text}"


def explain_image(model: BagNet, image: Image.Image, source: str = "image", config: ExplainConfig = ExplainConfig(),
                  device: Any = None, index: Optional[PatchIndex] = None) -> ImageExplanation:
    """Explain one PIL image (any mode; converted to RGB); with a patch ``index`` (the model's own), also the
    nearest indexed patches of each of its cells."""
    from .viz import robust_scale

    from .data import to_rgb

    image = to_rgb(image)
    dev = model_device(model, device)
    sized, notes = fit_image(image, model, config, source)
    x = model_meta(model).preprocess.normalize(TF.to_tensor(sized)).unsqueeze(0).to(dev, model.fc.weight.dtype)
    with eval_mode(model):
        with torch.no_grad():
            logits = model(x)[0].double()
            probs = logits.softmax(0)
            k = min(config.top, logits.numel())
            top = probs.topk(k).indices
            hm = heatmap(model, x, top[None], stride=config.stride,
                         upsample="bilinear" if config.stride > 1 else None, precision=config.precision)[0]
            evidence = model.evidence(x)[0, top]
            near = (index.cell_neighbours(model.forward_features(x)[0], config.neighbours)
                    if index is not None else None)
    from .sparsity import map_sparsity

    measured = map_sparsity(evidence[:1] - model.fc.bias[top[:1], None, None])  # the top class, bias excluded
    categories = model.categories or [str(i) for i in range(logits.numel())]
    support, oppose = [], []
    for ev in evidence.float().cpu():
        support.append(distinct_patches(model, ev, config.patches, highest=True))
        oppose.append(distinct_patches(model, ev, config.patches, highest=False))
    return ImageExplanation(
        source=source, image=np.asarray(sized, dtype=np.uint8).copy(), original_size=image.size,
        classes=top.cpu().tolist(), names=[categories[c] for c in top.tolist()],
        probabilities=probs[top].cpu().tolist(), logits=logits[top].cpu().tolist(),
        heatmaps=hm.float().cpu().numpy(), support=support, oppose=oppose, notes=notes,
        sparsity={"top5_share": float(measured.top_share[0]), "gini": float(measured.gini[0])},
        evidence=evidence.float().cpu().numpy(), neighbours=near,
        scales=[robust_scale(h, config.percentile) for h in hm.float().cpu().numpy()],
    )


def fit_image(image: Image.Image, model: BagNet, config: ExplainConfig, source: str = "image"
              ) -> tuple[Image.Image, list[str]]:
    """The image at the scale the model sees: short side ``config.size`` (default: the model's own), long side at
    most ``config.max_side``; refuses (or, with ``upscale_small``, enlarges) images smaller than the patch size."""
    (new_w, new_h), notes = fit_size(*image.size, model, config, source)
    if (new_w, new_h) != image.size:
        scale = new_w / image.size[0]
        image = image.resize((new_w, new_h), Image.BILINEAR, reducing_gap=3.0 if scale < 0.5 else None)
    return image, notes


def fit_size(w: int, h: int, model: BagNet, config: ExplainConfig, source: str = "image"
             ) -> tuple[tuple[int, int], list[str]]:
    """The size (width, height) at which :func:`fit_image` shows a ``w``×``h`` image to the model, and notes saying
    why; decided from the size alone (a file's header), so nothing large is ever decoded or allocated.

    One uniform scale: the short side becomes ``config.size`` (default: the model's own), unless the long side would
    exceed ``config.max_side``. Images smaller than the patch are refused (or enlarged with ``upscale_small``); images
    so elongated that the short side would fall below the patch at the long-side limit are refused, never stretched.
    """
    q = model.patch_size
    if min(w, h) < q and not config.upscale_small:
        raise ImageTooSmall(f"{source}: {w}×{h} px is smaller than {model.name}'s {q}×{q} px patch; "
                            f"use --upscale-small (upscale_small=True) to enlarge it")
    size = model_meta(model).preprocess.resize if config.size is None else config.size
    if not size and min(w, h) < q:
        size = q
    scale = size / min(w, h) if size else 1.0
    notes: list[str] = []
    limited = max(w, h) * scale > config.max_side
    if limited:
        scale = config.max_side / max(w, h)
    new = (max(1, round(w * scale)), max(1, round(h * scale)))
    if min(new) < q:
        need = math.ceil(q * max(w, h) / min(w, h))
        raise ImageShapeRefused(
            f"{source}: {w}×{h} px (aspect ratio {max(w, h) / min(w, h):.0f}:1) does not fit a {config.max_side} px "
            f"long side with a short side of at least the {q} px patch without stretching it; crop it, or raise "
            f"--max-side (max_side) to {need} px" + (" or more" if need <= MAX_SIDE else f" (at most {MAX_SIDE})"))
    if new != (w, h):
        why = (f"long side limit {config.max_side} px" if limited else f"short side {size} px, the model's scale")
        notes.append(f"resized from {w}×{h} to {new[0]}×{new[1]} px ({why})")
    return new, notes


def distinct_patches(model: BagNet, evidence: Tensor, n: int, highest: bool = True) -> list[Patch]:
    """The ``n`` cells of an evidence map (h, w) with the highest (or lowest) evidence whose patches overlap no
    already chosen patch by more than half its area."""
    if n <= 0:
        return []
    h, w = evidence.shape
    q = model.patch_size
    order = evidence.flatten().argsort(descending=highest).tolist()
    chosen: list[Patch] = []
    for idx in order:
        i, j = divmod(idx, w)
        box = model.patch_box(i, j)
        if all(_overlap(box, p.box) <= q * q / 2 for p in chosen):
            chosen.append(Patch(box=box, evidence=float(evidence[i, j])))
            if len(chosen) == n:
                break
    return chosen


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> int:
    dy = min(a[2], b[2]) - max(a[0], b[0])
    dx = min(a[3], b[3]) - max(a[1], b[1])
    return max(dy, 0) * max(dx, 0)


def _crop(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    top, left, bottom, right = box
    return image[top:bottom, left:right]


# ---------------------------------------------------------------------------------------------------- helpers
def _stem(text: str) -> str:
    return safe_stem(text, IMAGE_EXTENSIONS)


def __getattr__(name: str) -> Any:
    """``PatchGallery`` and ``class_patches`` lived here before 0.2: still importable, with a warning."""
    if name in ("PatchGallery", "class_patches"):
        import warnings

        from . import gallery

        warnings.warn(f"bagnet.explanation.{name} moved to bagnet.gallery.{name}; the old name goes away in the next "
                      f"release", DeprecationWarning, stacklevel=2)
        return getattr(gallery, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
