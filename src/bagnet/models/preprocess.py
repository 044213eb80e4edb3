"""Input transforms and class names that go with a model's weights."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch
from torch import Tensor
from torchvision import transforms

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
INTERPOLATIONS = {"bilinear": transforms.InterpolationMode.BILINEAR, "bicubic": transforms.InterpolationMode.BICUBIC,
                  "nearest": transforms.InterpolationMode.NEAREST}


@dataclass(frozen=True)
class Preprocess:
    """What a model's weights expect of an image, as one typed, callable object (like torchvision's
    ``weights.transforms()``): ``preprocess(pil_image)`` resizes the short side to ``resize`` (None: keep), crops the
    centre ``crop``×``crop`` (None: no crop), scales to [0, 1] and normalises with ``mean``/``std``.

    ``normalize``/``denormalize`` convert between [0, 1] pixels and the model's input for tensors (…, 3, H, W), so
    nothing has to learn the mean and std by inspecting a transform.
    """

    resize: Optional[int] = 256
    crop: Optional[int] = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"  # of the resize: bilinear | bicubic | nearest

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean and std need 3 values each, std > 0; got {self.mean}, {self.std}")
        for name in ("resize", "crop"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be None or a positive number of pixels, got {value!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {sorted(INTERPOLATIONS)}, got {self.interpolation!r}")

    @property
    def transforms(self) -> list:
        """The torchvision transforms this preprocessing applies, in order."""
        steps: list = [transforms.Lambda(_to_rgb)]
        if self.resize is not None:
            steps.append(transforms.Resize(self.resize, interpolation=INTERPOLATIONS[self.interpolation],
                                           antialias=True))
        if self.crop is not None:
            steps.append(transforms.CenterCrop(self.crop))
        return steps + [transforms.ToTensor(), transforms.Normalize(list(self.mean), list(self.std))]

    def __call__(self, image: Any) -> Tensor:
        """PIL image → normalised float tensor (3, H, W)."""
        for step in self.transforms:
            image = step(image)
        return image

    def normalize(self, pixels: Tensor) -> Tensor:
        """[0, 1] pixels (…, 3, H, W) → the model's input."""
        return (pixels - self._stat(self.mean, pixels)) / self._stat(self.std, pixels)

    def denormalize(self, x: Tensor) -> Tensor:
        """The model's input (…, 3, H, W) → [0, 1] pixels (not clamped)."""
        return x * self._stat(self.std, x) + self._stat(self.mean, x)

    @staticmethod
    def _stat(values: Sequence[float], like: Tensor) -> Tensor:
        return torch.tensor(values, dtype=like.dtype, device=like.device)[:, None, None]

    def to_dict(self) -> dict[str, Any]:
        data = {"resize": self.resize, "crop": self.crop, "mean": list(self.mean), "std": list(self.std)}
        if self.interpolation != "bilinear":
            data["interpolation"] = self.interpolation
        return data


def to_pixels(x: Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> Tensor:
    """Normalised images (…, 3, H, W) back to [0, 1] pixels (clamped), for pictures and figures."""
    return (x * Preprocess._stat(std, x) + Preprocess._stat(mean, x)).clamp(0, 1)


def make_preprocess(
    resize: int | None = 256,
    crop: int | None = 224,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    interpolation: str = "bilinear",
) -> Preprocess:
    """PIL image → normalised float tensor (3, H, W): optional resize of the short side, centre crop, normalise."""
    return Preprocess(resize, crop, tuple(mean), tuple(std), interpolation)  # type: ignore[arg-type]


def preprocess_size(preprocess: Any) -> Optional[int]:
    """The short side a preprocessing resizes to (None when it does not); a :class:`Preprocess` or a torchvision
    ``Compose`` (read by inspection, for models that carry one of their own)."""
    if isinstance(preprocess, Preprocess):
        return preprocess.resize
    for t in getattr(preprocess, "transforms", None) or []:
        if isinstance(t, transforms.Resize):
            size = t.size
            return int(size if isinstance(size, int) else size[0])
    return None


def preprocess_normalisation(preprocess: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std a preprocessing normalises with (ImageNet's when it has no ``Normalize``)."""
    if isinstance(preprocess, Preprocess):
        return preprocess.mean, preprocess.std
    for t in getattr(preprocess, "transforms", None) or []:
        if isinstance(t, transforms.Normalize):
            return tuple(float(v) for v in t.mean), tuple(float(v) for v in t.std)
    return IMAGENET_MEAN, IMAGENET_STD


def _to_rgb(image):  # a named function (not a lambda) keeps the transform picklable for DataLoader workers
    return image if getattr(image, "mode", "RGB") == "RGB" else image.convert("RGB")


def imagenet_categories() -> list[str]:
    """The 1000 ImageNet class names in index order, as shipped with torchvision (no download)."""
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])
