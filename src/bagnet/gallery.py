"""The paper's patch gallery: for each class, the patches of a whole dataset with the highest and lowest evidence,
found in bounded memory (a fixed number of crops per class, at most one per image and class)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch

from .data import IMAGE_EXTENSIONS
from .models.meta import model_meta
from .models.bagnet import BagNet
from .models.registry import load_bagnet
from .plumbing import SCHEMA_VERSION, eval_mode, model_device, Result, safe_stem, write_bytes, write_json, write_text


@dataclass(frozen=True)
class PatchGallery(Result):
    """Per class, the dataset's patches with the highest and lowest evidence for it (at most one per image).

    ``top_values[c][r]`` / ``top_sources[c][r]`` / ``top_boxes[c][r]`` describe the r-th most supportive patch for
    class c; ``top_crops[c]`` holds the pixels (n, q, q, 3) uint8. ``bottom_*`` likewise for the lowest evidence.
    """

    model: str
    categories: list[str]
    patch_size: int
    images: int
    top_values: list[list[float]]
    top_sources: list[list[str]]
    top_boxes: list[list[tuple[int, int, int, int]]]
    top_crops: np.ndarray
    bottom_values: list[list[float]]
    bottom_sources: list[list[str]]
    bottom_boxes: list[list[tuple[int, int, int, int]]]
    bottom_crops: np.ndarray
    skipped: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if not k.endswith("_crops")}
        return {"schema_version": SCHEMA_VERSION, **d}

    def save(self, out: str | os.PathLike) -> Path:
        """patches.json, gallery.png (most supportive patches, one row per class), per class class_NNN.png (most and
        least supportive) and report.html."""
        return super().save(out)

    def write(self, out: Path) -> None:
        from .report import gallery_report
        from .viz import figure_png, patch_gallery_figure

        write_json(out / "patches.json", self.to_dict())
        rows = [(name, list(self.top_crops[c]), [f"{v:+.2f}" for v in self.top_values[c]])
                for c, name in enumerate(self.categories)]
        overview = figure_png(patch_gallery_figure(rows, title=f"{self.model}: most supportive patches per class "
                                                               f"({self.images} images)"))
        write_bytes(out / "gallery.png", overview)
        per_class = []
        for c, name in enumerate(self.categories):
            png = figure_png(patch_gallery_figure([
                (f"{name}: highest", list(self.top_crops[c]), [f"{v:+.2f}" for v in self.top_values[c]]),
                (f"{name}: lowest", list(self.bottom_crops[c]), [f"{v:+.2f}" for v in self.bottom_values[c]])]))
            path = out / f"class_{c:03d}_{safe_stem(name, IMAGE_EXTENSIONS)}.png"
            write_bytes(path, png)
            per_class.append((name, path, png))
        write_text(out / "report.html", gallery_report(self, overview, per_class))


def class_patches(
    model: Union[BagNet, str],
    dataset: torch.utils.data.Dataset,
    per_class: int = 8,
    batch_size: int = 32,
    limit: Optional[int] = None,
    seed: int = 0,
    device: Any = None,
    workers: int = 0,
    progress: bool = True,
) -> PatchGallery:
    """Scan ``dataset`` (items ``(normalised image, label, index)``, e.g. ``bagnet.data.evaluation_dataset``) for
    each class's most and least supportive patches. Memory stays bounded: ``per_class`` crops per class."""
    from .data import SkipLog, check_dataset, tracked_batches
    from .data import sample_path

    model = load_bagnet(model, device, "explanations", "use `bagnet attribution` for post-hoc maps of other models")
    check_dataset(dataset)
    dev = model_device(model, device)
    preprocess = model_meta(model).preprocess
    C, q, n = model.num_classes, model.patch_size, per_class
    best = {"top": (torch.full((C, 0), float("nan")), [[] for _ in range(C)], [[] for _ in range(C)],
                    torch.zeros(C, 0, q, q, 3, dtype=torch.uint8)),
            "bottom": (torch.full((C, 0), float("nan")), [[] for _ in range(C)], [[] for _ in range(C)],
                       torch.zeros(C, 0, q, q, 3, dtype=torch.uint8))}
    skips = SkipLog()
    total = 0
    with eval_mode(model):
        for batch in tracked_batches(dataset, batch_size, limit, seed, skips, "patches", progress, workers):
            with torch.no_grad():
                ev = model.evidence(batch.images.to(dev, model.fc.weight.dtype)).float().cpu()  # (B, C, h, w)
            B, _, h, w = ev.shape
            pictures = (preprocess.denormalize(batch.images.float()).clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1)
            names = [sample_path(dataset, int(i)) for i in batch.indices]
            flat = ev.flatten(2)  # (B, C, h·w)
            for kind, (vals, cells) in (("top", flat.max(2)), ("bottom", flat.min(2))):
                old_v, old_src, old_box, old_crop = best[kind]
                cand_v = torch.cat([old_v, vals.T], dim=1)  # (C, old + B)
                keep = cand_v.argsort(dim=1, descending=(kind == "top"), stable=True)[:, :n]
                new_src, new_box, crops = [], [], []
                for c in range(C):
                    src_c, box_c, crop_c = [], [], []
                    for r in keep[c].tolist():
                        if r < old_v.shape[1]:
                            src_c.append(old_src[c][r])
                            box_c.append(old_box[c][r])
                            crop_c.append(old_crop[c, r])
                        else:
                            b = r - old_v.shape[1]
                            i, j = divmod(int(cells[b, c]), w)
                            box = model.patch_box(i, j)
                            src_c.append(names[b])
                            box_c.append(box)
                            crop_c.append(pictures[b, box[0]:box[2], box[1]:box[3]].clone())
                    new_src.append(src_c)
                    new_box.append(box_c)
                    crops.append(torch.stack(crop_c))
                best[kind] = (cand_v.gather(1, keep), new_src, new_box, torch.stack(crops))
            total += B
    categories = model.categories or [str(c) for c in range(C)]
    top, bottom = best["top"], best["bottom"]
    return PatchGallery(
        model=model.name, categories=list(categories), patch_size=q, images=total,
        top_values=top[0].tolist(), top_sources=top[1], top_boxes=[[tuple(b) for b in bs] for bs in top[2]],
        top_crops=top[3].numpy(), bottom_values=bottom[0].tolist(), bottom_sources=bottom[1],
        bottom_boxes=[[tuple(b) for b in bs] for bs in bottom[2]], bottom_crops=bottom[3].numpy(),
        skipped=dict(skips.paths),
    )
