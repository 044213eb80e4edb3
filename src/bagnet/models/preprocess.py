"""Input transforms and class names that go with a model's weights."""

from __future__ import annotations

from typing import Any, Optional, Sequence

from torchvision import transforms

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def make_preprocess(
    resize: int | None = 256,
    crop: int | None = 224,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> transforms.Compose:
    """PIL image → normalised float tensor (3, H, W): optional resize of the short side, centre crop, normalise."""
    steps: list = [transforms.Lambda(_to_rgb)]
    if resize is not None:
        steps.append(transforms.Resize(resize, interpolation=transforms.InterpolationMode.BILINEAR, antialias=True))
    if crop is not None:
        steps.append(transforms.CenterCrop(crop))
    steps += [transforms.ToTensor(), transforms.Normalize(list(mean), list(std))]
    return transforms.Compose(steps)


def preprocess_size(preprocess: Any) -> Optional[int]:
    """The short side a preprocessing pipeline (from :func:`make_preprocess`) resizes to; None when it does not."""
    for t in getattr(preprocess, "transforms", None) or []:
        if isinstance(t, transforms.Resize):
            size = t.size
            return int(size if isinstance(size, int) else size[0])
    return None


def preprocess_normalisation(preprocess: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std a preprocessing pipeline normalises with (ImageNet's when it has no ``Normalize``)."""
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
