"""Distributed training helpers: process rank and world size, BatchNorm over the global batch on any device, and
agreeing on a flag across ranks."""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

class _AllReduceSum(torch.autograd.Function):
    """The sum of a tensor over the ranks of ``group``; differentiable (every rank's output depends on every rank's
    input, so the gradient is the sum of the ranks' gradients). torch's own (``torch.distributed.nn``) is deprecated."""

    @staticmethod
    def forward(ctx: Any, tensor: Tensor, group: Any) -> Tensor:
        ctx.group = group
        out = tensor.clone()
        dist.all_reduce(out, group=group)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        out = grad.clone()
        dist.all_reduce(out, group=ctx.group)
        return out, None


def all_reduce_sum(tensor: Tensor, group: Any = None) -> Tensor:
    """The differentiable sum of ``tensor`` over the processes of ``group`` (default: all)."""
    return _AllReduceSum.apply(tensor, group)


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm whose training statistics are taken over the global batch of all processes (any device).

    torch.nn.SyncBatchNorm runs only on GPUs; this one all-reduces the per-channel sums with the differentiable
    :func:`all_reduce_sum`, so gradients flow across processes as in one big batch and a
    DDP run computes what a single process with the same global batch computes.
    """

    #: Process group for the statistics; its own, so that its collectives never interleave with DDP's.
    group: Any = None

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or not dist.is_initialized():
            return super().forward(x)
        c = x.shape[1]
        count = torch.full((1,), x.numel() / c, dtype=x.dtype, device=x.device)
        local_sum = x.sum(dim=(0, 2, 3))
        stats = all_reduce_sum(torch.cat([local_sum, count]), self.group)
        n = stats[-1]
        mean = stats[:c] / n
        centred = x - mean[None, :, None, None]
        var = all_reduce_sum((centred * centred).sum(dim=(0, 2, 3)), self.group) / n
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * n / (n - 1), alpha=m)
        out = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            out = out * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return out


def use_global_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Make every BatchNorm2d compute global-batch statistics in a distributed run (parameters unchanged)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    group = dist.new_group(backend="gloo")
    for module in model.modules():
        if type(module) is nn.BatchNorm2d:
            module.__class__ = GlobalBatchNorm2d
            module.group = group
    return model


def dist_info() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return rank, world, local


def any_rank(flag: bool, distributed: bool, device: torch.device) -> bool:
    if not distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t)
    return bool(t.item() > 0)
