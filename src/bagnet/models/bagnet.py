"""The BagNet architecture (Brendel & Bethge, ICLR 2019), parameter for parameter as released.

A BagNet is a ResNet-50 whose 3×3 convolutions are mostly 1×1 and which uses no padding, so each cell of the last
feature map sees exactly one q×q image patch. A linear classifier maps each cell's features to class evidence and the
logits are the spatial mean of that evidence.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import asdict, dataclass
from types import MappingProxyType
from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .receptive import ReceptiveField, output_length, output_length_padded, receptive_field
from .runtime import checkpointed, inference_chunk, strict_fp32, tf32_allowed  # noqa: F401 (tf32_allowed: public here too)

EXPANSION = 4


@dataclass(frozen=True)
class BagNetConfig:
    """Shape of a BagNet.

    Attributes:
        layers: bottleneck blocks per stage ([3, 4, 6, 3] is ResNet-50).
        kernel3: per stage, how many of its first blocks use a 3×3 ``conv2`` (the others use 1×1).
        strides: stride of the first block of each stage.
        width: channels of the stem and of the first stage's bottleneck; stage ``s`` uses ``width * 2**s``.
        num_classes: number of output classes.
        stem: ``"paper"`` (the released BagNets: a 1×1 ``conv1`` then a 3×3 ``conv2``) or ``"v2"`` (one 3×3
            ``conv1``, as in berenslab's BagNets v2; the two are the same function class, a 1×1 followed by a 3×3
            convolution being one 3×3 convolution).
        padding: same-padded 3×3 convolutions (BagNets v2) instead of none: the evidence map then has ⌈H/8⌉×⌈W/8⌉
            cells and the cells near the border see zeros beyond it (in every padded layer's features).
        align: where a block's residual is taken when its 3×3 convolution shrinks the map: ``"corner"`` (the
            released BagNets crop it at the bottom/right) or ``"centre"`` (the centre, which is what a same-padded
            network computes; its unpadded twin with ``align="centre"`` equals it wherever no padding is reached).
    """

    layers: tuple[int, ...] = (3, 4, 6, 3)
    kernel3: tuple[int, ...] = (1, 1, 1, 1)
    strides: tuple[int, ...] = (2, 2, 2, 1)
    width: int = 64
    num_classes: int = 1000
    stem: str = "paper"
    padding: bool = False
    align: str = "corner"

    def __post_init__(self) -> None:
        for name in ("layers", "kernel3", "strides"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        n = len(self.layers)
        if n == 0 or len(self.kernel3) != n or len(self.strides) != n:
            raise ValueError(
                f"layers, kernel3 and strides need one entry per stage; got {len(self.layers)}, "
                f"{len(self.kernel3)} and {len(self.strides)} entries"
            )
        if any(b < 1 for b in self.layers):
            raise ValueError(f"every stage needs at least one block, got layers={self.layers}")
        for stage, (blocks, k3) in enumerate(zip(self.layers, self.kernel3)):
            if not 0 <= k3 <= blocks:
                raise ValueError(f"kernel3[{stage}]={k3} must lie in [0, {blocks}] (the blocks of stage {stage + 1})")
        if any(s < 1 for s in self.strides):
            raise ValueError(f"strides must be >= 1, got {self.strides}")
        if self.width < 1 or self.num_classes < 1:
            raise ValueError(f"width and num_classes must be >= 1, got width={self.width}, num_classes={self.num_classes}")
        if self.stem not in ("paper", "v2"):
            raise ValueError(f"stem must be 'paper' or 'v2', got {self.stem!r}")
        if self.align not in ("corner", "centre"):
            raise ValueError(f"align must be 'corner' or 'centre', got {self.align!r}")
        if not isinstance(self.padding, bool):
            raise ValueError(f"padding must be true or false, got {self.padding!r}")
        if self.padding and self.align != "centre":
            raise ValueError("a same-padded BagNet (padding=True) keeps its residuals centred: use align='centre'")

    #: The fields that make a BagNet a BagNets-v2 network (berenslab/bagnetsv2): one 3×3 stem, same padding.
    V2_LAYOUT = MappingProxyType({"stem": "v2", "padding": True, "align": "centre"})

    def unpadded(self) -> "BagNetConfig":
        """The same network without padding (its residuals centred): equal to this one away from the border."""
        return dataclasses.replace(self, padding=False, align="centre")

    @property
    def feature_dim(self) -> int:
        """Number of features each evidence cell has before the classifier."""
        return self.width * 2 ** (len(self.layers) - 1) * EXPANSION

    def conv_chain(self) -> list[tuple[int, int]]:
        """``(kernel, stride)`` of every spatial layer on the main path, stem included."""
        chain = [(1, 1), (3, 1)] if self.stem == "paper" else [(3, 1)]  # the stem's convolutions
        for blocks, k3, stride in zip(self.layers, self.kernel3, self.strides):
            for i in range(blocks):
                chain.append((3 if i < k3 else 1, stride if i == 0 else 1))
        return chain

    @property
    def receptive_field(self) -> ReceptiveField:
        """Patch size and stride of the evidence map, computed from the layers."""
        return receptive_field(self.conv_chain())

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BagNetConfig":
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown BagNet config keys {sorted(unknown)}; expected some of {sorted(known)}")
        return cls(**data)

    @classmethod
    def for_patch_size(
        cls,
        patch_size: int,
        layers: Sequence[int] = (3, 4, 6, 3),
        strides: Sequence[int] = (2, 2, 2, 1),
        **kwargs: Any,
    ) -> "BagNetConfig":
        """A config whose patch size is ``patch_size``, turning 1×1 blocks into 3×3 ones stage by stage.

        Follows the paper's pattern (q = 9, 17, 33 use one 3×3 block in the first 2, 3, 4 stages) and, for larger
        q, adds further 3×3 blocks from the last stage backwards.
        """
        layers = tuple(layers)
        kernel3 = [0] * len(layers)
        base = cls(layers=layers, kernel3=tuple(kernel3), strides=tuple(strides), **kwargs)
        reachable = [base.receptive_field.size]
        order = list(range(len(layers))) + [s for s in reversed(range(len(layers))) for _ in range(layers[s] - 1)]
        for stage in order:
            if base.receptive_field.size >= patch_size:
                break
            kernel3[stage] += 1
            base = cls(layers=layers, kernel3=tuple(kernel3), strides=tuple(strides), **kwargs)
            reachable.append(base.receptive_field.size)
        if base.receptive_field.size != patch_size:
            raise ValueError(
                f"no BagNet with layers={layers} and strides={tuple(strides)} has patch size {patch_size}; "
                f"reachable patch sizes: {reachable}"
            )
        return base


class SubsampleConv2d(nn.Conv2d):
    """A 1×1 convolution with stride s computed as "take every s-th pixel, then a 1×1 convolution".

    Same parameters and results as ``nn.Conv2d(kernel_size=1, stride=s)``, but it avoids a oneDNN fault in the
    backward pass of strided 1×1 convolutions on channels-last CPU tensors (a heap corruption seen with PyTorch
    2.14.1 for some batch sizes, e.g. 7, on this project's CPU). Inference and NCHW inputs take the native path.
    """

    def forward(self, x: Tensor) -> Tensor:
        # Only where the fault lives (autograd on, channels-last): elsewhere the native strided conv is faster.
        if torch.is_grad_enabled() and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            sh, sw = self.stride
            return F.conv2d(x[..., ::sh, ::sw], self.weight, self.bias, 1, 0, 1, self.groups)
        return super().forward(x)


def require_bagnet(model: object, purpose: str, hint: str = "") -> "BagNet":
    """``model`` if it is a BagNet, else :class:`bagnet.errors.NotABagNetError` saying what needs one and why."""
    if not isinstance(model, BagNet):
        from ..errors import NotABagNetError

        name = getattr(model, "name", None) or type(model).__name__
        raise NotABagNetError(f"{purpose} need a bagnet.BagNet, got {name} ({type(model).__name__})"
                              + (f"; {hint}" if hint else ""))
    return model


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
        shifted = x[..., self.shift:, self.shift:] if self.shift else x
        identity = shifted if self.downsample is None else self.downsample(shifted)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        h, w = out.shape[-2:]
        if identity.shape[-2:] != (h, w):
            identity = identity[..., :h, :w]
        return out, identity

    def add_residual(self, out: Tensor, identity: Tensor) -> Tensor:
        """The residual sum (a canonizer replaces it with a module that LRP rules can see)."""
        return out + identity


class BagNet(nn.Module):
    """A bag-of-local-features network of any patch size and width.

    ``model(x)`` returns logits (N, num_classes); ``model.evidence(x)`` the per-patch class evidence (N, C, h, w)
    whose spatial mean the logits are. Parameter names follow the released checkpoints.
    """

    def __init__(self, config: Optional[BagNetConfig] = None, **kwargs: Any) -> None:
        super().__init__()
        if config is None:
            config = BagNetConfig(**kwargs)
        elif kwargs:
            raise TypeError("pass either a BagNetConfig or keyword arguments, not both")
        self.config = config
        rf = config.receptive_field
        self.patch_size: int = rf.size
        self.stride: int = rf.stride
        #: Class names in the order of the outputs, when the weights provide them.
        self.categories: Optional[list[str]] = None
        #: Transform from a PIL image to the normalised tensor the weights expect.
        self.preprocess: Optional[Callable[[Any], Tensor]] = None
        #: On CUDA, allow TF32 in convolutions and matmuls (off by default: the released weights lose accuracy).
        self.allow_tf32: bool = False
        #: While training, recompute each residual block's activations in the backward pass instead of keeping them
        #: (activation checkpointing): less memory, about one more forward pass of compute. Same results.
        self.checkpoint_stages: bool = False
        #: On the CPU, in eval mode without autograd, run large batches in chunks of at most this many input pixels:
        #: the full-resolution early layers make big batches memory-bound (benchmarks/forward.py: 2× faster at batch
        #: 32 on a 2-core CPU). Results are the same; ``None`` turns it off. On a GPU batches are split only to fit
        #: its free memory (see :func:`inference_chunk`); elsewhere (mps, meta) never.
        self.inference_chunk_pixels: Optional[int] = 2 * 224 * 224
        self.name: str = f"bagnet{self.patch_size}"

        width = config.width
        pad = 1 if config.padding else 0
        if config.stem == "paper":
            self.conv1 = nn.Conv2d(3, width, kernel_size=1, stride=1, padding=0, bias=False)
            self.conv2: nn.Module = nn.Conv2d(width, width, kernel_size=3, stride=1, padding=pad, bias=False)
        else:  # BagNets v2: one 3×3 convolution
            self.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=pad, bias=False)
            self.conv2 = nn.Identity()
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        inplanes = width
        for stage, (blocks, k3, stride) in enumerate(zip(config.layers, config.kernel3, config.strides)):
            planes = width * 2**stage
            layer, inplanes = _make_stage(inplanes, planes, blocks, stride, k3, config.padding, config.align)
            self.add_module(f"layer{stage + 1}", layer)
        self.fc = nn.Linear(config.feature_dim, config.num_classes)

    # ----------------------------------------------------------------------------------------------- structure
    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    def get_classifier(self) -> nn.Linear:
        """The linear classifier applied to every patch's features (timm's convention)."""
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        """A new, freshly initialised classifier for ``num_classes`` classes (fine-tuning; timm's convention)."""
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        self.config = dataclasses.replace(self.config, num_classes=num_classes)
        self.fc = nn.Linear(self.config.feature_dim, num_classes).to(self.fc.weight.device, self.fc.weight.dtype)

    @property
    def stages(self) -> list[nn.Sequential]:
        """The residual stages ``layer1 .. layerN`` in order."""
        return [getattr(self, f"layer{i + 1}") for i in range(len(self.config.layers))]

    def evidence_size(self, height: int, width: int) -> tuple[int, int]:
        """Size (h, w) of the evidence map for an input of ``height × width`` pixels."""
        chain = self.config.conv_chain()
        if self.config.padding:  # same padding: every layer gives ⌈n / stride⌉
            return output_length_padded(height, chain), output_length_padded(width, chain)
        return output_length(height, chain), output_length(width, chain)

    def patch_box(self, i: int, j: int) -> tuple[int, int, int, int]:
        """Pixel box ``(top, left, bottom, right)`` (bottom/right exclusive) seen by evidence cell ``(i, j)``.

        For a same-padded BagNet (v2) the box is centred on pixel (s·i, s·j) and reaches beyond the image at the
        border (negative or too large coordinates): that part of the cell's view is the padding's zeros."""
        if i < 0 or j < 0:
            raise ValueError(f"evidence cell indices must be non-negative, got ({i}, {j})")
        s, q = self.stride, self.patch_size
        c = (q - 1) // 2 if self.config.padding else 0
        return s * i - c, s * j - c, s * i - c + q, s * j - c + q

    # ----------------------------------------------------------------------------------------------- forward
    def check_input(self, x: Tensor) -> None:
        """Raise a ``ValueError`` naming the problem if ``x`` is not a batch this BagNet can take.

        Only the type, shape and dtype are checked, never the values: ``model(x)`` and ``model.evidence(x)`` pass NaN
        and ±inf through as any torch module does (a value check would wait for the GPU on every call and stop
        tracing). bagnet's entry points refuse them instead: ``heatmap``, ``attribute`` and the faithfulness curves
        raise a ``ValueError``, and datasets skip (and name) an image whose transform produced them."""
        if not isinstance(x, Tensor):
            raise TypeError(f"{self.name} expects a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4:
            raise ValueError(
                f"{self.name} expects a batch of images shaped (N, 3, H, W), got a tensor of shape {tuple(x.shape)}"
                + (" (add a batch dimension with x.unsqueeze(0))" if x.dim() == 3 else "")
            )
        if x.shape[1] != self.conv1.in_channels:
            raise ValueError(
                f"{self.name} expects {self.conv1.in_channels} colour channels, got {x.shape[1]} "
                f"(input shape {tuple(x.shape)}); convert grayscale/RGBA images to RGB first"
            )
        h, w = x.shape[-2:]
        if not self.config.padding and (h < self.patch_size or w < self.patch_size):
            raise ValueError(
                f"{self.name} needs images of at least {self.patch_size}×{self.patch_size} pixels (its patch size); "
                f"got {h}×{w}. Upscale the image or use a BagNet with a smaller patch size"
            )
        if not x.is_floating_point():
            raise ValueError(f"{self.name} expects a floating-point tensor, got dtype {x.dtype}")

    def features(self, x: Tensor) -> Tensor:
        """Per-patch features (N, feature_dim, h, w) before the classifier."""
        self.check_input(x)
        chunk = self._inference_chunk(x)
        if chunk < x.shape[0]:
            return torch.cat([self._features(part) for part in x.split(chunk)])
        return self._features(x)

    def _features(self, x: Tensor) -> Tensor:
        with self._precision_guard(x):
            x = self.relu(self.bn1(self.conv2(self.conv1(x))))
            recompute = self.checkpoint_stages and self.training and torch.is_grad_enabled()
            for stage in self.stages:
                if recompute:  # block by block: only each block's input is kept
                    for block in stage:
                        x = checkpointed(block, x)
                else:
                    x = stage(x)
        return x

    def _inference_chunk(self, x: Tensor) -> int:
        """Images per chunk: the whole batch while training or recording gradients (BatchNorm, autograd), else as
        :func:`inference_chunk` decides for ``x``'s device."""
        if self.training or torch.is_grad_enabled() or self.inference_chunk_pixels is None:
            return x.shape[0]
        free = None
        if x.device.type == "cuda":
            free = torch.cuda.mem_get_info(x.device)[0]
        return inference_chunk(x.device.type, x.shape[0], x.shape[-2] * x.shape[-1], self.inference_chunk_pixels,
                               self.peak_floats_per_pixel() * x.element_size(), free)

    def peak_floats_per_pixel(self) -> int:
        """Values alive per input pixel at the widest point of a forward pass (a full-resolution block: its input,
        its branch's two maps, the shortcut and the output), for memory planning."""
        c = self.config
        planes, inplanes = c.width, c.width
        peak = 3 + 2 * c.width
        for stage in range(len(c.layers)):
            scale = 4 ** sum(1 for s in c.strides[:stage] if s > 1)  # fewer pixels in later stages
            out = planes * EXPANSION
            peak = max(peak, (inplanes + 2 * planes + 2 * out) // scale)
            inplanes, planes = out, planes * 2
        return int(peak)

    def evidence(self, x: Tensor) -> Tensor:
        """Class evidence of every patch, shape (N, num_classes, h, w); its spatial mean is ``self(x)``."""
        feats = self.features(x)
        with self._precision_guard(x):
            return F.conv2d(feats, self.fc.weight[:, :, None, None], self.fc.bias)

    def forward(self, x: Tensor) -> Tensor:
        # The classifier is linear, so classifying the mean feature equals averaging the evidence map.
        feats = self.features(x)
        with self._precision_guard(x):
            return self.fc(feats.mean(dim=(2, 3)))

    def precision_context(self, device: torch.device | str) -> contextlib.AbstractContextManager:
        """Strict fp32 (TF32 off) for computing on a CUDA ``device`` unless ``allow_tf32``; nothing elsewhere."""
        if torch.device(device).type == "cuda" and not self.allow_tf32:
            return strict_fp32()
        return contextlib.nullcontext()

    def _precision_guard(self, x: Tensor) -> contextlib.AbstractContextManager:
        return self.precision_context(x.device)

    def extra_repr(self) -> str:
        return f"patch_size={self.patch_size}, stride={self.stride}"


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
