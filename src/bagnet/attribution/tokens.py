"""Attribution for patch-token models (timm's ``VisionTransformer``): attention rollout and Grad-CAM on the token grid.

A ViT cuts the image into t×t tokens, so its maps live on an (H/t)×(W/t) grid; both methods here compute one value
per token and stretch the grid over the image (bilinear, like Grad-CAM's usual resize).

- :func:`attention_rollout` (Abnar & Zuidema, "Quantifying Attention Flow in Transformers", ACL 2020): each layer's
  attention, averaged over heads, with the residual connection as ½·(A + I), rows renormalised, multiplied from the
  first layer to the last; the class token's row says how much each image token flows into it. It does not depend on
  the class (the same map for every target) and is not a completeness-preserving attribution.
- :func:`token_gradcam`: Grad-CAM on the tokens that enter the last block's attention (its first LayerNorm's
  output) reshaped to the 2-D grid: ReLU(Σ_c w_c·A_c) with w_c the gradient of the target logit averaged over the
  tokens. (The last block's *output* image tokens get no gradient when the head reads the class token alone.)
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .surgery import forward_with_hooks


def is_token_model(model: nn.Module) -> bool:
    """Whether ``model`` is a patch-token transformer these methods understand (timm's ``VisionTransformer``)."""
    try:
        from timm.models.vision_transformer import VisionTransformer
    except ImportError:  # pragma: no cover - timm is a dependency
        return False
    return isinstance(model, VisionTransformer)


def attention_modules(model: nn.Module) -> list[nn.Module]:
    """The self-attention modules of a ViT in execution order (those with ``qkv`` and ``num_heads``)."""
    return [m for m in model.modules() if hasattr(m, "qkv") and hasattr(m, "num_heads") and hasattr(m, "head_dim")]


def token_grid(model: nn.Module, size: Sequence[int]) -> tuple[int, int]:
    """The (rows, columns) of the token grid for an input of ``size`` = (H, W)."""
    embed = model.patch_embed
    if hasattr(embed, "dynamic_feat_size"):
        return tuple(int(v) for v in embed.dynamic_feat_size((int(size[0]), int(size[1]))))
    ph, pw = embed.patch_size
    return int(size[0]) // ph, int(size[1]) // pw


def _attention_probabilities(attn: nn.Module, x: Tensor) -> Tensor:
    """Softmax attention (B, heads, N, N) of one timm ``Attention`` module for its input tokens ``x`` (B, N, C),
    computed from its own projections whether or not the module uses a fused kernel."""
    B, N, _ = x.shape
    qkv = attn.qkv(x).reshape(B, N, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])
    return ((q * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1)


def attention_maps(model: nn.Module, images: Tensor) -> list[Tensor]:
    """Every layer's attention probabilities (B, heads, N, N) for ``images``, in layer order (no gradients)."""
    modules = attention_modules(model)
    if not modules:
        raise ValueError(f"{type(model).__name__} has no self-attention modules (qkv projections) to read")
    maps: list[Tensor] = []

    def hook(module: nn.Module, inputs: tuple) -> None:
        maps.append(_attention_probabilities(module, inputs[0]).float())

    forward_with_hooks(model, images, [(m, hook) for m in modules], pre=True)
    return maps


def attention_rollout(model: nn.Module, images: Tensor, head_fusion: str = "mean") -> Tensor:
    """Attention rollout of the class token over the image tokens, as a map (B, H, W) on the input's pixel grid
    (each token's share of the flow, summing to the flow that reaches image tokens; bilinear between token centres).

    ``head_fusion``: how a layer's heads are combined, ``mean`` (the paper's) or ``max``."""
    if head_fusion not in ("mean", "max"):
        raise ValueError(f"head_fusion must be 'mean' or 'max', got {head_fusion!r}")
    maps = attention_maps(model, images)
    n = maps[0].shape[-1]
    eye = torch.eye(n, device=maps[0].device)
    rollout = eye.expand(images.shape[0], n, n)
    for a in maps:
        fused = a.mean(dim=1) if head_fusion == "mean" else a.amax(dim=1)
        step = 0.5 * fused + 0.5 * eye
        rollout = (step / step.sum(dim=-1, keepdim=True)) @ rollout
    prefix = int(getattr(model, "num_prefix_tokens", 1))
    h, w = token_grid(model, images.shape[-2:])
    if n - prefix != h * w:
        raise ValueError(f"{n - prefix} image tokens do not fill a {h}×{w} grid")
    cls_row = rollout[:, 0, prefix:].reshape(-1, h, w)
    return spread_tokens(cls_row, images.shape[-2:])


def token_gradcam(model: nn.Module, images: Tensor, targets: Tensor, layer: Optional[nn.Module] = None) -> Tensor:
    """Grad-CAM on a ViT's token grid (B, H, W): the output tokens of ``layer`` (default: the last transformer
    block's first LayerNorm, whose tokens its attention reads) weighted by the target logit's gradient averaged over
    tokens, summed over channels, ReLU, stretched over the image."""
    layer = layer if layer is not None else model.blocks[-1].norm1
    prefix = int(getattr(model, "num_prefix_tokens", 1))
    h, w = token_grid(model, images.shape[-2:])
    saved: list[Tensor] = []

    def hook(module: nn.Module, inputs: tuple, output: Tensor) -> None:
        output.retain_grad()
        saved.append(output)

    handle = layer.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            logits = model(images)
            logits.gather(1, targets[:, None]).sum().backward()
    finally:
        handle.remove()
    tokens, grads = saved[-1][:, prefix:], saved[-1].grad[:, prefix:]
    if tokens.shape[1] != h * w:
        raise ValueError(f"{tokens.shape[1]} image tokens do not fill a {h}×{w} grid")
    weights = grads.mean(dim=1, keepdim=True)  # (B, 1, C)
    cam = F.relu((weights * tokens).sum(dim=-1)).reshape(-1, h, w)
    model.zero_grad(set_to_none=True)
    return spread_tokens(cam.detach(), images.shape[-2:])


def spread_tokens(grid: Tensor, size: Sequence[int]) -> Tensor:
    """A token-grid map (B, h, w) stretched over the pixel grid (B, H, W), bilinear (token centres to pixels)."""
    return F.interpolate(grid[:, None].float(), size=(int(size[0]), int(size[1])), mode="bilinear",
                         align_corners=False)[:, 0]
