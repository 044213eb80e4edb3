"""The named weights bagnet can download, as data (torchvision's ``Weights`` enums, one entry per file): where each
file lives, how it is checked, and the :class:`ModelMeta` it gives the model. ``bagnet.load``, the builders, the timm
registration, the torch.hub entry points and ``bagnet models`` all read this one table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional

import torch
from torch import Tensor

from .meta import ModelMeta
from .preprocess import imagenet_categories
from .weights import WeightsError, fetch_verified, read_state_dict

PAPER_BASE_URL = ("https://bitbucket.org/wielandbrendel/bag-of-feature-pretrained-models/raw/"
                  "249e8fa82c0913623a807d9d35eeab9da7dcc2a8/")
#: berenslab/bagnetsv2 at the commit that holds their ImageNet weights (GitHub serves them under /raw/<commit>/<path>).
V2_COMMIT = "faa5f41f35c591e687d62511d434d14870e1b594"
V2_BASE_URL = f"https://github.com/berenslab/bagnetsv2/raw/{V2_COMMIT}/models/"
VARIANTS = ("paper", "v2")


@dataclass(frozen=True)
class PretrainedWeights:
    """One downloadable weights file of a BagNet (``name`` is what :func:`bagnet.load` takes, ``bagnet33:imagenet``).

    The file is checked every time it is used: by the SHA-256 prefix in its name (``name-<hex>.pth``, torch.hub's
    convention) or, for files published only in a git repository, by its git blob id (``blob_sha1``).
    """

    name: str
    patch_size: int
    variant: str
    url: str
    title: str
    source: str
    metrics: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    blob_sha1: Optional[str] = None
    cache_name: Optional[str] = None
    resolution: int = 224

    @property
    def tag(self) -> str:
        """The weights part of the name (``imagenet``, ``imagenet-v2``), what builders take as ``weights=``."""
        return self.name.partition(":")[2]

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def sha256_prefix(self) -> Optional[str]:
        """The hash prefix in a torch.hub-style file name, None for files checked by git blob id."""
        stem = self.filename.split(".")[0]
        return stem.rsplit("-", 1)[1] if "-" in stem and self.blob_sha1 is None else None

    @property
    def top1(self) -> Optional[float]:
        """The first recorded top-1 accuracy, in percent (None when none is reported)."""
        return _first(self.metrics, "top1")

    @property
    def top5(self) -> Optional[float]:
        return _first(self.metrics, "top5")

    @property
    def cache_path(self) -> Path:
        """Where torch.hub keeps (or where to put by hand) the file."""
        return Path(torch.hub.get_dir()) / "checkpoints" / (self.cache_name or self.filename)

    @property
    def meta(self) -> ModelMeta:
        """The :class:`ModelMeta` a model loaded with these weights carries."""
        return ModelMeta(name=self.name, arch="bagnet", patch_size=self.patch_size, categories=imagenet_categories(),
                         resolution=self.resolution, title=self.title,
                         source=f"{self.source}, downloaded once into torch.hub's cache ({self.url})",
                         metrics=self.metrics)

    def state_dict(self, progress: bool = True) -> dict[str, Tensor]:
        """The state dict, downloaded once into torch.hub's cache and checked on every load."""
        what = f"the {self.name} weights"
        return read_state_dict(fetch_verified(self.url, progress, what, cache_name=self.cache_name,
                                              blob_sha1=self.blob_sha1))


def _first(metrics: Mapping[str, Mapping[str, float]], key: str) -> Optional[float]:
    values = [m[key] for m in metrics.values() if key in m]
    return round(100 * values[0], 2) if values else None


def _paper(q: int, file: str, top1: float, top5: float) -> PretrainedWeights:
    return PretrainedWeights(
        f"bagnet{q}:imagenet", q, "paper", PAPER_BASE_URL + file, f"BagNet-{q}, official ImageNet weights",
        "official ImageNet weights released with the paper",
        {"imagenet/val (reported, 224 px fp32)": {"top1": top1 / 100, "top5": top5 / 100}})


def _v2(q: int, blob_sha1: str, top1: Optional[float] = None, top5: Optional[float] = None) -> PretrainedWeights:
    file = f"bagnet{q}_imagenet_pretrained.pt"
    metrics = ({"imagenet/val (reported by berenslab, 224 px fp32)": {"top1": top1 / 100, "top5": top5 / 100}}
               if top1 is not None and top5 is not None else {})
    return PretrainedWeights(
        f"bagnet{q}:imagenet-v2", q, "v2", V2_BASE_URL + file, f"BagNet-{q} v2, ImageNet weights of berenslab/bagnetsv2",
        "BagNets v2 ImageNet weights (berenslab/bagnetsv2)", metrics, blob_sha1=blob_sha1,
        cache_name=f"bagnetsv2-{file}")


#: Every named weights file, by the name :func:`bagnet.load` takes. The paper's accuracies are the re-evaluated ones
#: (224 px, resize 256 + centre crop, fp32); v2's are the authors' (their README gives BagNet-33's only).
WEIGHTS: dict[str, PretrainedWeights] = {w.name: w for w in (
    _paper(9, "bagnet8-34f4ccd2.pth.tar", 46.4, 70.4),
    _paper(17, "bagnet16-105524de.pth.tar", 58.8, 81.2),
    _paper(33, "bagnet32-2ddd53ed.pth.tar", 66.7, 87.0),
    _v2(9, "627294f0b710355de8cfee3c1c2db35910b95396"),
    _v2(17, "950c52980e13d2649cfcf81bd2dbd9688a124f8a"),
    _v2(33, "c4ee0350036feca9035e14d3a0a7c657d4c57437", 65.51, 86.35),
)}

PATCH_SIZES = (9, 17, 33)


def architecture_meta(patch_size: int, variant: str = "paper") -> ModelMeta:
    """The :class:`ModelMeta` of a paper BagNet without trained weights."""
    if variant == "v2":
        return ModelMeta(name=f"bagnet{patch_size}-v2", arch="bagnet", patch_size=patch_size,
                         title=f"BagNet-{patch_size} v2 (same padding, one 3×3 stem; berenslab/bagnetsv2)")
    return ModelMeta(name=f"bagnet{patch_size}", arch="bagnet", patch_size=patch_size,
                     title=f"BagNet-{patch_size} as in the paper")


def get_weights(patch_size: int, tag: str) -> PretrainedWeights:
    """The entry for ``bagnet{patch_size}:{tag}``, or a :class:`WeightsError` listing what exists."""
    try:
        return WEIGHTS[f"bagnet{patch_size}:{tag}"]
    except KeyError:
        known = sorted({w.tag for w in WEIGHTS.values() if w.patch_size == patch_size})
        raise WeightsError(f"there are no {tag!r} weights for BagNet-{patch_size}; known: {', '.join(known) or 'none'}"
                           ) from None


def by_patch_size(variant: str) -> dict[int, PretrainedWeights]:
    """The ImageNet weights of one variant (``paper`` or ``v2``) by patch size."""
    return {w.patch_size: w for w in WEIGHTS.values() if w.variant == variant}


def load_official_state_dict(patch_size: int, progress: bool = True) -> dict[str, Tensor]:
    """The official ImageNet state dict for BagNet-``patch_size``, downloaded once into torch.hub's cache; the file's
    SHA-256 is checked against the prefix in its name every time it is loaded."""
    return get_weights(patch_size, "imagenet").state_dict(progress)


def load_v2_state_dict(patch_size: int, progress: bool = True) -> dict[str, Tensor]:
    """The BagNets-v2 ImageNet state dict for BagNet-``patch_size`` (berenslab/bagnetsv2), downloaded once into
    torch.hub's cache as ``bagnetsv2-bagnet{q}_imagenet_pretrained.pt`` and checked by its git blob id."""
    return get_weights(patch_size, "imagenet-v2").state_dict(progress)


def official_cache_path(patch_size: int) -> Path:
    """Where torch.hub keeps (or where to put by hand) the official checkpoint for ``patch_size``."""
    return get_weights(patch_size, "imagenet").cache_path


#: The ImageNet weights of each variant by patch size (views of :data:`WEIGHTS`, the same entries).
OFFICIAL_WEIGHTS: dict[int, PretrainedWeights] = by_patch_size("paper")
V2_WEIGHTS: dict[int, PretrainedWeights] = by_patch_size("v2")
