"""What a model's forward pass needs from the device it runs on: how many images one pass takes (chunking), the
arithmetic precision (TF32 on or off, the caller's settings restored), and activation checkpointing that leaves
BatchNorm's statistics alone."""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import torch
from torch import Tensor, nn


def inference_chunk(device_type: str, batch: int, pixels: int, cpu_pixels: int, bytes_per_pixel: int,
                    free_bytes: Optional[int] = None, memory_fraction: float = 0.5) -> int:
    """Images per chunk of an inference batch, by where it runs: on the CPU at most ``cpu_pixels`` input pixels
    (measured to pay there); on CUDA as many images as fit in ``memory_fraction`` of the ``free_bytes`` at
    ``bytes_per_pixel``, at least one (by this estimate a 256-image 224² batch of the paper-size BagNet-33 in fp32 needs
    36 GB and goes through an 80 GB GPU in one pass); elsewhere (mps, the meta device) the whole batch."""
    if device_type == "cpu":
        return max(1, min(batch, cpu_pixels // max(pixels, 1)))
    if device_type == "cuda" and free_bytes is not None:
        return max(1, min(batch, int(free_bytes * memory_fraction) // max(pixels * bytes_per_pixel, 1)))
    return batch


@contextlib.contextmanager
def tf32_allowed(enabled: bool) -> Iterator[None]:
    """Temporarily set TF32 in cuDNN convolutions and CUDA matmuls, restoring the caller's settings after."""
    conv, mm = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = enabled
    torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = conv
        torch.backends.cuda.matmul.allow_tf32 = mm


def strict_fp32() -> contextlib.AbstractContextManager:
    """Temporarily disable TF32 in cuDNN convolutions and CUDA matmuls, restoring the caller's settings after."""
    return tf32_allowed(False)


def checkpointed(module: nn.Module, x: Tensor) -> Tensor:
    """``module(x)`` whose activations are recomputed in the backward pass; the recomputation leaves BatchNorm's
    running statistics alone (they are updated once, by the forward pass, as without checkpointing)."""
    from torch.utils.checkpoint import checkpoint

    return checkpoint(module, x, use_reentrant=False,
                      context_fn=lambda: (contextlib.nullcontext(), frozen_batchnorm_stats(module)))


def batchnorms(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """Every BatchNorm layer (1d, 2d, 3d, synchronised) of ``module``, itself included."""
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@contextlib.contextmanager
def frozen_batchnorm_stats(module: nn.Module) -> Iterator[None]:
    norms = batchnorms(module)
    saved = [(m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone()) for m in norms]
    for m in norms:
        m.momentum = 0.0  # running = (1 − 0)·running + 0·batch: unchanged
    try:
        yield
    finally:
        for m, (momentum, tracked) in zip(norms, saved):
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)


@torch.jit.unused
def tracing() -> bool:
    """Whether the model is being traced or exported (torch.fx, torch.export, torch.compile) rather than run: the
    eager niceties (input checks, batch chunking, precision guards) are skipped, the arithmetic is the same."""
    import torch.fx._symbolic_trace as fx

    symbolic = getattr(fx, "is_fx_symbolic_tracing", fx.is_fx_tracing)  # torch >= 2.9 tells fx from export
    return bool(symbolic() or torch.compiler.is_compiling())
