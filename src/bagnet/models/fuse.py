"""Inference copies of a BagNet with BatchNorm folded into the convolutions."""

from __future__ import annotations

import copy

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .bagnet import BagNet


def fuse_batchnorm(model: BagNet) -> BagNet:
    """An eval-mode copy of ``model`` whose BatchNorm layers are folded into the preceding convolutions.

    Outputs equal the original's in eval mode up to float rounding; the copy cannot be trained and its state dict
    no longer matches the released parameter names. The original model is not changed.
    """
    fused = copy.deepcopy(model).eval()
    if model.config.stem == "paper":  # conv1 (1×1) → conv2 (3×3) → bn1
        fused.conv2 = fuse_conv_bn_eval(fused.conv2, fused.bn1)
    else:  # BagNets v2: conv1 (3×3) → bn1
        fused.conv1 = fuse_conv_bn_eval(fused.conv1, fused.bn1)
    fused.bn1 = nn.Identity()
    for stage in fused.stages:
        for block in stage:
            for conv, bn in (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")):
                setattr(block, conv, fuse_conv_bn_eval(getattr(block, conv), getattr(block, bn)))
                setattr(block, bn, nn.Identity())
            if block.downsample is not None:
                block.downsample = nn.Sequential(fuse_conv_bn_eval(block.downsample[0], block.downsample[1]))
    return fused
