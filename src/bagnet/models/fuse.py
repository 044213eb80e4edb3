"""BatchNorm folded into the convolution before it: the one folding rule (in float64) behind the dense heatmaps'
folded parameters and the inference copies of a BagNet."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from .bagnet import BagNet


def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """The weight and bias (float64) of ``conv`` followed by eval-mode ``bn``, as one convolution."""
    scale = bn.weight.detach().double() / torch.sqrt(bn.running_var.detach().double() + bn.eps)
    weight = conv.weight.detach().double() * scale[:, None, None, None]
    bias = bn.bias.detach().double() - bn.running_mean.detach().double() * scale
    if conv.bias is not None:
        bias = bias + conv.bias.detach().double() * scale
    return weight, bias


def _fused_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new convolution equal to ``conv`` followed by eval-mode ``bn`` (its parameters in ``conv``'s dtype)."""
    fused = copy.deepcopy(conv)
    weight, bias = fold_conv_bn(conv, bn)
    fused.weight = nn.Parameter(weight.to(conv.weight), requires_grad=conv.weight.requires_grad)
    fused.bias = nn.Parameter(bias.to(conv.weight), requires_grad=conv.weight.requires_grad)
    return fused


def fuse_batchnorm(model: BagNet) -> BagNet:
    """An eval-mode copy of ``model`` whose BatchNorm layers are folded into the preceding convolutions.

    Outputs equal the original's in eval mode up to float rounding; the copy cannot be trained and its state dict
    no longer matches the released parameter names. The original model is not changed.
    """
    fused = copy.deepcopy(model).eval()
    if model.config.stem == "paper":  # conv1 (1×1) → conv2 (3×3) → bn1
        fused.conv2 = _fused_conv(fused.conv2, fused.bn1)
    else:  # BagNets v2: conv1 (3×3) → bn1
        fused.conv1 = _fused_conv(fused.conv1, fused.bn1)
    fused.bn1 = nn.Identity()
    for stage in fused.stages:
        for block in stage:
            for conv, bn in (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")):
                setattr(block, conv, _fused_conv(getattr(block, conv), getattr(block, bn)))
                setattr(block, bn, nn.Identity())
            if block.downsample is not None:
                block.downsample = nn.Sequential(_fused_conv(block.downsample[0], block.downsample[1]))
    return fused
