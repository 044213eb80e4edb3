"""The blocks of a BagNet: the unpadded (or same-padded) bottleneck, its stages, and the strided 1×1 convolution
that avoids a oneDNN fault. Every forward is scriptable (TorchScript) and traceable (torch.fx, torch.export)."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .bagnet_config import EXPANSION
from .runtime import tracing


class SubsampleConv2d(nn.Conv2d):
    """A 1×1 convolution with stride s computed as "take every s-th pixel, then a 1×1 convolution".

    Same parameters and results as ``nn.Conv2d(kernel_size=1, stride=s)``, but it avoids a oneDNN fault in the
    backward pass of strided 1×1 convolutions on channels-last CPU tensors (a heap corruption seen with PyTorch
    2.14.1 for some batch sizes, e.g. 7, on this project's CPU). Inference and NCHW inputs take the native path.
    """

    def forward(self, x: Tensor) -> Tensor:
        if torch.jit.is_scripting():
            return self._conv_forward(x, self.weight, self.bias)
        return self._forward_python(x)

    @torch.jit.unused
    def _forward_python(self, x: Tensor) -> Tensor:
        # Only where the fault lives (eager autograd, channels-last): elsewhere the native strided conv is faster.
        if (not tracing() and torch.is_grad_enabled() and x.is_contiguous(memory_format=torch.channels_last)
                and not x.is_contiguous()):
            sh, sw = self.stride
            return F.conv2d(x[..., ::sh, ::sw], self.weight, self.bias, 1, 0, 1, self.groups)
        return self._conv_forward(x, self.weight, self.bias)


def use_subsample_convs(model: nn.Module) -> nn.Module:
    """Turn every unpadded strided 1×1 ``nn.Conv2d`` of ``model`` into a :class:`SubsampleConv2d` (in place)."""
    for module in model.modules():
        if (type(module) is nn.Conv2d and module.kernel_size == (1, 1) and module.stride != (1, 1)
                and module.padding == (0, 0)):
            module.__class__ = SubsampleConv2d
    return model


def _conv(inplanes: int, planes: int, kernel_size: int, stride: int, padding: bool = False) -> nn.Conv2d:
    cls = SubsampleConv2d if kernel_size == 1 and stride > 1 else nn.Conv2d
    return cls(inplanes, planes, kernel_size=kernel_size, stride=stride,
               padding=(kernel_size - 1) // 2 if padding else 0, bias=False)


class Bottleneck(nn.Module):
    """ResNet bottleneck without padding (the residual cropped to the output size: at the bottom and right, or
    around the centre with ``align="centre"``), or same-padded (BagNets v2)."""

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        kernel_size: int = 1,
        downsample: Optional[nn.Module] = None,
        padding: bool = False,
        align: str = "corner",
    ) -> None:
        super().__init__()
        #: pixels the residual is shifted by before cropping (centred residuals of an unpadded block)
        self.shift = (kernel_size - 1) // 2 if align == "centre" and not padding else 0
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = _conv(planes, planes, kernel_size, stride, padding)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU()
        self.conv3 = nn.Conv2d(planes, planes * EXPANSION, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * EXPANSION)
        self.downsample = downsample
        self.relu3 = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        out, identity = self.branches(x)
        return self.relu3(self.add_residual(out, identity))

    def branches(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The residual branch's output and the shortcut, cropped to the branch's size."""
        shifted = x[..., self.shift:, self.shift:] if self.shift > 0 else x
        identity = shifted
        if self.downsample is not None:
            identity = self.downsample(shifted)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        # crop the shortcut to the branch (a no-op when they agree; no branching on shapes, so it traces and exports)
        return out, identity[..., : out.shape[-2], : out.shape[-1]]

    def add_residual(self, out: Tensor, identity: Tensor) -> Tensor:
        """The residual sum (a canonizer replaces it with a module that LRP rules can see)."""
        return out + identity


def _make_stage(inplanes: int, planes: int, blocks: int, stride: int, kernel3: int, padding: bool = False,
                align: str = "corner") -> tuple[nn.Sequential, int]:
    outplanes = planes * EXPANSION
    downsample = None
    if stride != 1 or inplanes != outplanes:
        downsample = nn.Sequential(_conv(inplanes, outplanes, 1, stride), nn.BatchNorm2d(outplanes))
    layers = [Bottleneck(inplanes, planes, stride, 3 if kernel3 > 0 else 1, downsample, padding, align)]
    for i in range(1, blocks):
        layers.append(Bottleneck(outplanes, planes, 1, 3 if i < kernel3 else 1, None, padding, align))
    return nn.Sequential(*layers), outplanes
