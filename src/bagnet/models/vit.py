"""A small Vision Transformer (timm's ``VisionTransformer``) to set beside the BagNets: every token attends to every
other in every layer, so, unlike a BagNet, nothing in the architecture keeps it from using the whole image.

The project's configs describe it with the same fields as the other architectures: ``patch_size`` is the token
size in pixels, ``width`` the embedding dimension (one attention head per 64 channels) and ``layers`` holds the
depth, e.g. ``(8,)``.
"""

from __future__ import annotations

from typing import Any

from torch import nn

#: Keyword arguments a saved ViT's metadata may carry (``arch_kwargs``), with their allowed ranges.
VIT_KWARGS: dict[str, tuple[int, int]] = {
    "image_size": (8, 4096),
    "patch_size": (1, 256),
    "width": (8, 4096),
    "depth": (1, 64),
    "heads": (1, 64),
    "mlp_ratio": (1, 16),
}


def build_vit(num_classes: int = 1000, image_size: int = 128, patch_size: int = 16, width: int = 192,
              depth: int = 8, heads: int = 0, mlp_ratio: int = 4, drop_path: float = 0.0, **_: Any) -> nn.Module:
    """timm's ViT with a class token, learned position embeddings for ``image_size`` (resampled for other input
    sizes, ``dynamic_img_size``) and ``heads`` attention heads (0: one per 64 channels)."""
    try:
        from timm.models.vision_transformer import VisionTransformer
    except ImportError as err:  # pragma: no cover - timm is a dependency
        raise ImportError("the ViT needs timm: pip install timm") from err
    heads = heads or max(1, width // 64)
    if width % heads:
        raise ValueError(f"the ViT's width {width} must be divisible by its {heads} attention heads")
    if image_size % patch_size:
        raise ValueError(f"the ViT's image size {image_size} must be a multiple of its token size {patch_size}")
    model = VisionTransformer(
        img_size=image_size, patch_size=patch_size, embed_dim=width, depth=depth, num_heads=heads,
        mlp_ratio=mlp_ratio, num_classes=num_classes, drop_path_rate=drop_path, dynamic_img_size=True,
    )
    model.token_size = patch_size
    return model
