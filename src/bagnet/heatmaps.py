"""Exact per-pixel BagNet evidence heatmaps, computed densely, plus the slow patch-by-patch reference.

Definition (shared by both methods): the heatmap value at pixel ``(y, x)`` for class ``c`` is the model's class-``c``
evidence for the q×q patch centred on ``(y, x)`` in the image zero-padded by ``(q - 1) / 2`` on every side (zero in
the normalised input). At stride ``s`` only the pixels ``(s·i, s·j)`` are evaluated.

The dense method runs the network once over the padded image with every stride beyond ``s`` turned into a dilation
of the later convolutions ("à trous"), so overlapping patches share all their work and the result is, pixel by pixel,
the same arithmetic as running the network on each patch. BatchNorm is folded into the convolutions for inference.
Large images are split into overlapping tiles so that peak memory stays under a limit; tiles do not change the result.
"""

from __future__ import annotations


import math
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .plumbing import check_image_batch, eval_mode
from .models.bagnet import BagNet, Bottleneck, require_bagnet
from .models.runtime import tf32_allowed
from .targets import Target, class_indices, per_image_classes  # noqa: F401 (class_indices: public here too)
from .models.fuse import fold_conv_bn

DEFAULT_MAX_MEMORY = 3 * 2**30
EFFICIENT_TILE_PIXELS = 128


# ---------------------------------------------------------------------------------------------------- folded model
@dataclass(frozen=True)
class _Conv:
    weight: Tensor
    bias: Tensor
    stride: int

    @property
    def kernel(self) -> int:
        return int(self.weight.shape[-1])


@dataclass(frozen=True)
class _Block:
    conv1: _Conv
    conv2: _Conv
    conv3: _Conv
    downsample: Optional[_Conv]
    centre: int = 0  # the residual's shift (in undilated pixels) when it is taken around the centre


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d, dtype: torch.dtype, device: torch.device) -> _Conv:
    """Fold eval-mode BatchNorm into the preceding convolution (:func:`bagnet.models.fuse.fold_conv_bn`, float64)."""
    weight, bias = fold_conv_bn(conv, bn)
    return _Conv(
        weight.to(device=device, dtype=dtype).contiguous(memory_format=torch.channels_last),
        bias.to(device=device, dtype=dtype),
        int(conv.stride[0]),
    )


@dataclass(frozen=True)
class FoldedBagNet:
    """Inference-only copy of a BagNet's parameters with BatchNorm folded in (the model itself is not touched)."""

    stem1: Optional[Tensor]  # the paper's 1×1 conv1 (None for the v2 stem: one 3×3 conv)
    stem2: _Conv
    blocks: tuple[_Block, ...]
    fc_weight: Tensor
    fc_bias: Tensor
    patch_size: int
    stride: int

    @classmethod
    def from_model(cls, model: BagNet, device: Optional[torch.device] = None,
                   dtype: Optional[torch.dtype] = None) -> "FoldedBagNet":
        dtype = model.fc.weight.dtype if dtype is None else dtype
        device = model.fc.weight.device if device is None else torch.device(device)
        # The dense map evaluates every patch with unpadded convolutions, whatever the model's padding (a same-padded
        # BagNet's map is that of its unpadded twin: see BagNetConfig.unpadded).
        centre = model.config.align == "centre"
        if model.config.stem == "paper":
            # conv1 (1×1) is followed directly by conv2 (3×3): fold conv1 into nothing, keep it as a plain matrix.
            stem1: Optional[Tensor] = model.conv1.weight.detach().to(device=device, dtype=dtype).contiguous(
                memory_format=torch.channels_last)
            stem2 = _fold(model.conv2, model.bn1, dtype, device)
        else:
            stem1, stem2 = None, _fold(model.conv1, model.bn1, dtype, device)
        blocks = []
        for stage in model.stages:
            for block in stage:
                assert isinstance(block, Bottleneck)
                down = None
                if block.downsample is not None:
                    down = _fold(block.downsample[0], block.downsample[1], dtype, device)
                blocks.append(
                    _Block(
                        _fold(block.conv1, block.bn1, dtype, device),
                        _fold(block.conv2, block.bn2, dtype, device),
                        _fold(block.conv3, block.bn3, dtype, device),
                        down,
                        (block.conv2.kernel_size[0] - 1) // 2 if centre else 0,
                    )
                )
        return cls(
            stem1=stem1,
            stem2=stem2,
            blocks=tuple(blocks),
            fc_weight=model.fc.weight.detach().to(device=device, dtype=dtype),
            fc_bias=model.fc.bias.detach().to(device=device, dtype=dtype),
            patch_size=model.patch_size,
            stride=model.stride,
        )

    @property
    def dtype(self) -> torch.dtype:
        return self.fc_weight.dtype

    @property
    def device(self) -> torch.device:
        return self.fc_weight.device

    def peak_channels(self) -> int:
        """Most channels alive at once per pixel while a block runs (input, branch, residual, output)."""
        peak = self.stem2.weight.shape[0] * 2 + 3
        for b in self.blocks:
            cin, planes, cout = b.conv1.weight.shape[1], b.conv1.weight.shape[0], b.conv3.weight.shape[0]
            peak = max(peak, cin + planes * 2 + cout * (2 if b.downsample is not None else 1))
        return int(peak)

    def features(self, x: Tensor, out_stride: int) -> Tensor:
        """Features at every ``out_stride``-th window position of ``x`` (strides beyond it become dilations)."""
        real = 1  # stride applied so far as a real convolution stride
        dil = 1  # dilation the next spatial convolution needs
        if self.stem1 is not None:
            x = F.conv2d(x, self.stem1)
        x = F.relu_(F.conv2d(x, self.stem2.weight, self.stem2.bias))
        for b in self.blocks:
            s = b.conv2.stride
            use_real = real * s <= out_stride
            stride = s if use_real else 1
            out = F.relu_(F.conv2d(x, b.conv1.weight, b.conv1.bias))
            out = F.relu_(F.conv2d(out, b.conv2.weight, b.conv2.bias, stride=stride, dilation=dil))
            out = F.conv2d(out, b.conv3.weight, b.conv3.bias)
            shifted = x[..., b.centre * dil:, b.centre * dil:] if b.centre else x
            if b.downsample is not None:
                identity = F.conv2d(shifted, b.downsample.weight, b.downsample.bias, stride=stride)
            else:
                identity = shifted
            del x
            h, w = out.shape[-2:]
            out += identity[..., :h, :w]
            del identity
            x = F.relu_(out)
            if use_real:
                real *= s
            else:
                dil *= s
        return x

    def evidence(self, features: Tensor, classes: Tensor) -> Tensor:
        """Evidence (N, K, h, w) of the classes ``classes`` (N, K) from features (N, D, h, w)."""
        weight = self.fc_weight[classes]  # (N, K, D)
        bias = self.fc_bias[classes]  # (N, K)
        return torch.einsum("ndhw,nkd->nkhw", features, weight) + bias[:, :, None, None]


# ---------------------------------------------------------------------------------------------------- public API
def heatmap(
    model: BagNet,
    images: Tensor,
    target: Target = None,
    stride: int = 1,
    upsample: Optional[str] = None,
    max_memory: Optional[int] = DEFAULT_MAX_MEMORY,
    tile_size: Optional[int] = None,
    device: Optional[Union[str, torch.device]] = None,
    progress: bool = False,
    images_per_pass: Optional[int] = None,
    precision: str = "strict",
) -> Tensor:
    """Per-pixel class evidence of a BagNet, shape (N, K, H, W) at stride 1.

    Args:
        model: a :class:`~bagnet.BagNet` (any patch size or width); evaluated with its BatchNorm running statistics.
        images: normalised images (N, 3, H, W) or one image (3, H, W); any H, W ≥ 1.
        target: ``None`` (each image's predicted class, K = 1), a class index or list of K indices (the same for
            every image), or a tensor (N,) / (N, K) of per-image class indices.
        stride: 1, 2, 4 or 8; at stride s the map has ``ceil(H/s) × ceil(W/s)`` cells and cell (i, j) is the pixel
            (s·i, s·j). Stride 8 costs one forward pass.
        upsample: ``None``, ``"nearest"`` or ``"bilinear"``: resample a coarse map back to H×W for display
            (each computed cell stays at its pixel).
        max_memory: bound in bytes on the working memory of one tile (default 3 GiB); ``None`` for no tiling.
        tile_size: side in output cells of the square tiles (overrides ``max_memory``).
        device: where to compute (default: the model's device). The model is never moved.
        progress: show a progress bar over tiles.
        images_per_pass: how many images each tile is computed for at once (the same numbers either way). Default:
            one on the CPU (measured: per-image tiles are as fast there), on other devices as many as fit
            ``max_memory`` (a GPU computes 16 maps almost as fast as one).
        precision: ``"strict"`` (default: the model's dtype, TF32 off on CUDA, the exact map up to float rounding),
            ``"tf32"`` (TF32 convolutions and matmuls on CUDA, about 3.5× faster there at ~1e-4 of the logit range;
            the same as strict on a CPU) or ``"bf16"`` (weights and activations in bfloat16, the map returned in
            float32; ~1e-2 of the range: for display, not for checks). See the README for measured errors.
    """
    _check_model(model)
    _check_stride(model, stride)
    if upsample not in (None, "nearest", "bilinear"):
        raise ValueError(f"upsample must be None, 'nearest' or 'bilinear', got {upsample!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    folded = FoldedBagNet.from_model(model, device, torch.bfloat16 if precision == "bf16" else None)
    images = _check_images(images, model).to(device=folded.device, dtype=folded.dtype)
    classes = _resolve_target(model, images, target, folded.device)
    n, _, height, width = images.shape
    q, pad = model.patch_size, (model.patch_size - 1) // 2
    out_h, out_w = -(-height // stride), -(-width // stride)
    if tile_size is None:
        tile_size = _tile_side(folded.peak_channels(), folded.dtype, q, stride, max_memory, out_h, out_w)
    if tile_size < 1:
        raise ValueError(f"tile_size must be >= 1, got {tile_size}")
    tiles = [(i0, j0) for i0 in range(0, out_h, tile_size) for j0 in range(0, out_w, tile_size)]
    if images_per_pass is None:
        images_per_pass = 1 if folded.device.type == "cpu" else _images_per_pass(
            folded.peak_channels(), folded.dtype, stride * (tile_size - 1) + q, max_memory, n)
    if images_per_pass < 1:
        raise ValueError(f"images_per_pass must be >= 1, got {images_per_pass}")
    result = torch.empty(n, classes.shape[1], out_h, out_w, dtype=folded.dtype, device=folded.device)
    bar = _progress(len(tiles) * n, progress)
    context = tf32_allowed(True) if precision == "tf32" and folded.device.type == "cuda" else model.precision_context(
        folded.device)
    with torch.inference_mode(), context:
        for b0 in range(0, n, images_per_pass):
            b1 = min(n, b0 + images_per_pass)
            padded = F.pad(images[b0:b1], (pad, pad, pad, pad)).contiguous(memory_format=torch.channels_last)
            for i0, j0 in tiles:
                i1, j1 = min(i0 + tile_size, out_h), min(j0 + tile_size, out_w)
                window = padded[..., stride * i0 : stride * (i1 - 1) + q, stride * j0 : stride * (j1 - 1) + q]
                feats = folded.features(window, stride)
                assert feats.shape[-2:] == (i1 - i0, j1 - j0), (feats.shape, (i1 - i0, j1 - j0))
                result[b0:b1, :, i0:i1, j0:j1] = folded.evidence(feats, classes[b0:b1])
                del feats
                bar.update(b1 - b0)
    bar.close()
    if precision == "bf16":
        result = result.float()
    if upsample is not None and stride > 1:
        result = upsample_heatmap(result, stride, (height, width), mode=upsample)
    return result


PRECISIONS = ("strict", "tf32", "bf16")


def upsample_heatmap(coarse: Tensor, stride: int, size: tuple[int, int], mode: str = "bilinear") -> Tensor:
    """Resample a stride-``stride`` map (cells at pixels s·i) to ``size``; computed cells keep their values."""
    rows = _interp_matrix(coarse.shape[-2], stride, size[0], mode).to(coarse)
    cols = _interp_matrix(coarse.shape[-1], stride, size[1], mode).to(coarse)
    return torch.einsum("yi,nkij,xj->nkyx", rows, coarse, cols)


def heatmap_reference(
    model: BagNet,
    images: Tensor,
    target: Target = None,
    stride: int = 1,
    batch_size: int = 256,
    positions: Optional[Sequence[tuple[int, int]]] = None,
    progress: bool = False,
) -> Tensor:
    """The slow reference: cut every q×q patch out of the zero-padded image and run the network on each.

    Returns (N, K, ceil(H/s), ceil(W/s)), or (N, K, P) for an explicit list of P pixel ``positions`` (y, x).
    Kept for tests and benchmarks; this is the method of the paper's released code, generalised. A same-padded
    BagNet (v2) would pad each q×q patch again inside the network, so its patches go through its unpadded twin
    (the same weights, no padding: one evidence cell per patch), which is the patch-by-patch definition.
    """
    _check_model(model)
    if model.config.padding:
        model = unpadded_twin(model)
    _check_stride(model, stride)
    device = model.fc.weight.device
    images = _check_images(images, model).to(device=device, dtype=model.fc.weight.dtype)
    classes = _resolve_target(model, images, target, device)
    n, _, height, width = images.shape
    q, pad = model.patch_size, (model.patch_size - 1) // 2
    if positions is None:
        positions = [(y, x) for y in range(0, height, stride) for x in range(0, width, stride)]
        shape = (-(-height // stride), -(-width // stride))
    else:
        positions = [(int(y), int(x)) for y, x in positions]
        bad = [(y, x) for y, x in positions if not (0 <= y < height and 0 <= x < width)]
        if bad:
            raise ValueError(f"positions {bad[:3]} lie outside the {height}×{width} image")
        shape = (len(positions),)
    out = torch.empty(n, classes.shape[1], len(positions), dtype=images.dtype, device=device)
    bar = _progress(n * math.ceil(len(positions) / batch_size), progress)
    try:
        with eval_mode(model), torch.inference_mode():
            for b in range(n):
                padded = F.pad(images[b], (pad, pad, pad, pad))
                for start in range(0, len(positions), batch_size):
                    chunk = positions[start : start + batch_size]
                    patches = torch.stack([padded[:, y : y + q, x : x + q] for y, x in chunk])
                    logits = model(patches)
                    out[b, :, start : start + len(chunk)] = logits[:, classes[b]].T
                    bar.update(1)
    finally:
        bar.close()
    return out.reshape(n, classes.shape[1], *shape)


# ---------------------------------------------------------------------------------------------------- helpers
def unpadded_twin(model: BagNet) -> BagNet:
    """A same-padded BagNet's twin without padding: the same parameters (copied), residuals centred,
    so that a q×q patch gives exactly one evidence cell; away from the border the two compute the same map."""
    twin = BagNet(model.config.unpadded())
    twin.load_state_dict(model.state_dict(), strict=True)
    twin.to(device=model.fc.weight.device, dtype=model.fc.weight.dtype)
    twin.train(model.training)
    return twin


def _check_model(model: object) -> None:
    require_bagnet(model, "heatmaps (the evidence is defined patch by patch)",
                   "for other models use bagnet.attribution")


def allowed_strides(model: BagNet) -> tuple[int, ...]:
    """Heatmap strides a BagNet supports: the products of its stage strides (1, 2, 4, 8 for the paper's)."""
    strides = [1]
    for s in model.config.strides:
        if s > 1:
            strides.append(strides[-1] * s)
    return tuple(strides)


def _check_stride(model: BagNet, stride: int) -> None:
    if stride not in allowed_strides(model):
        raise ValueError(f"stride must be one of {allowed_strides(model)} for {model.name}, got {stride}")


def _check_images(images: Tensor, model: BagNet) -> Tensor:
    return check_image_batch(images, model.conv1.in_channels)


def _resolve_target(model: BagNet, images: Tensor, target: Target, device: torch.device) -> Tensor:
    """Class indices as an (N, K) long tensor (None: each image's predicted class)."""
    n = images.shape[0]
    predicted = None
    if target is None:
        with eval_mode(model):
            with torch.inference_mode():
                logits = torch.cat([model(images[i : i + 1].to(model.fc.weight.device)) for i in range(n)])
        predicted = logits.argmax(1)
    return per_image_classes(target, n, model.num_classes, predicted).to(device)


def tile_side(model: BagNet, height: int, width: int, stride: int = 1, max_memory: Optional[int] = DEFAULT_MAX_MEMORY) -> int:
    """Side, in output cells, of the square tiles :func:`heatmap` uses for an image of ``height × width``."""
    peak = FoldedBagNet.from_model(model).peak_channels()
    dtype = model.fc.weight.dtype
    return _tile_side(peak, dtype, model.patch_size, stride, max_memory, -(-height // stride), -(-width // stride))


def _tile_side(
    peak_channels: int, dtype: torch.dtype, q: int, stride: int, max_memory: Optional[int], out_h: int, out_w: int
) -> int:
    """Largest square tile (in output cells) whose estimated working memory fits ``max_memory``."""
    side = max(out_h, out_w)
    if max_memory is None:
        return side
    # Tiles of about 128 pixels a side are as fast as whole images and use far less memory (benchmarks/heatmap.py).
    side = min(side, max(1, EFFICIENT_TILE_PIXELS // stride))
    # Working set ≈ peak live channels × window pixels (measured below this estimate: README, benchmarks).
    per_pixel = peak_channels * (torch.finfo(dtype).bits // 8)
    while side > 1 and (stride * (side - 1) + q) ** 2 * per_pixel > max_memory:
        side = max(1, int(side * 0.9))
    return side


def _images_per_pass(peak_channels: int, dtype: torch.dtype, window: int, max_memory: Optional[int], n: int) -> int:
    """How many images' tiles of ``window``² pixels fit ``max_memory`` together (the tile-size estimate, per image)."""
    if max_memory is None:
        return n
    per_image = window ** 2 * peak_channels * (torch.finfo(dtype).bits // 8)
    return max(1, min(n, max_memory // max(per_image, 1)))


def _interp_matrix(n: int, stride: int, size: int, mode: str) -> Tensor:
    """(size, n) matrix taking n values at pixels stride·i to every pixel 0..size-1."""
    pos = torch.arange(size, dtype=torch.float64) / stride
    m = torch.zeros(size, n, dtype=torch.float64)
    if mode == "nearest":
        idx = torch.clamp(torch.floor(pos + 0.5).long(), max=n - 1)
        m[torch.arange(size), idx] = 1.0
        return m
    lo = torch.clamp(torch.floor(pos).long(), max=n - 1)
    hi = torch.clamp(lo + 1, max=n - 1)
    frac = torch.where(hi > lo, pos - lo, torch.zeros_like(pos))
    m[torch.arange(size), lo] += 1 - frac
    m[torch.arange(size), hi] += frac
    return m


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="heatmap", unit="tile")

