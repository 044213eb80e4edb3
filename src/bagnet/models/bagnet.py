"""The BagNet architecture (Brendel & Bethge, ICLR 2019), parameter for parameter as released.

A BagNet is a ResNet-50 whose 3×3 convolutions are mostly 1×1 and which uses no padding, so each cell of the last
feature map sees exactly one q×q image patch. A linear classifier maps each cell's features to class evidence and the
logits are the spatial mean of that evidence.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .receptive import output_length, output_length_padded
from .runtime import checkpointed, inference_chunk, strict_fp32, tf32_allowed, tracing  # noqa: F401 (public here too)

from .bagnet_config import EXPANSION, BagNetConfig  # noqa: F401 (BagNetConfig: public here too)
from .blocks import Bottleneck, SubsampleConv2d, _make_stage, use_subsample_convs  # noqa: F401 (public here too)


def require_bagnet(model: object, purpose: str, hint: str = "") -> "BagNet":
    """``model`` if it is a BagNet, else :class:`bagnet.errors.NotABagNetError` saying what needs one and why."""
    if not isinstance(model, BagNet):
        from ..errors import NotABagNetError

        name = getattr(model, "name", None) or type(model).__name__
        raise NotABagNetError(f"{purpose} need a bagnet.BagNet, got {name} ({type(model).__name__})"
                              + (f"; {hint}" if hint else ""))
    return model


class BagNet(nn.Module):
    """A bag-of-local-features network of any patch size and width.

    ``model(x)`` returns logits (N, num_classes); ``model.evidence(x)`` the per-patch class evidence (N, C, h, w)
    whose spatial mean the logits are. Parameter names follow the released checkpoints.
    """

    #: Python-side properties TorchScript leaves alone.
    __jit_unused_properties__ = ["num_classes", "stages"]

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
        chans = config.in_channels
        if config.stem == "paper":
            self.conv1 = nn.Conv2d(chans, width, kernel_size=1, stride=1, padding=0, bias=False)
            self.conv2: nn.Module = nn.Conv2d(width, width, kernel_size=3, stride=1, padding=pad, bias=False)
        else:  # BagNets v2: one 3×3 convolution
            self.conv1 = nn.Conv2d(chans, width, kernel_size=3, stride=1, padding=pad, bias=False)
            self.conv2 = nn.Identity()
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        inplanes = width
        for stage, (blocks, k3, stride) in enumerate(zip(config.layers, config.kernel3, config.strides)):
            planes = width * 2**stage
            layer, inplanes = _make_stage(inplanes, planes, blocks, stride, k3, config.padding, config.align)
            self.add_module(f"layer{stage + 1}", layer)
        #: timm's model API: features per cell, how the head pools them, and what each stage outputs.
        self.num_features: int = config.feature_dim
        self.global_pool: str = "avg"
        self.feature_info = stage_info(config)
        self.fc: nn.Module = nn.Linear(config.feature_dim, config.num_classes) if config.num_classes else nn.Identity()

    # ----------------------------------------------------------------------------------------------- structure
    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    def get_classifier(self) -> nn.Module:
        """The linear classifier applied to every patch's features (``nn.Identity`` when there is none)."""
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """A new, freshly initialised classifier for ``num_classes`` classes (fine-tuning), or none for 0 (the model
        then returns pooled features); ``global_pool`` ``"avg"`` (the BagNet's own: the mean over cells) or ``""``
        (no pooling: the feature map). timm's convention."""
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"num_classes must be an integer >= 0 (0: no classifier), got {num_classes!r}")
        if global_pool is not None:
            if global_pool not in ("avg", ""):
                raise ValueError(f"a BagNet pools by the mean over its cells: global_pool must be 'avg' or '' (no "
                                 f"pooling), got {global_pool!r}")
            self.global_pool = global_pool
        ref = next(self.parameters())
        self.config = dataclasses.replace(self.config, num_classes=num_classes)
        self.fc = (nn.Linear(self.config.feature_dim, num_classes).to(ref.device, ref.dtype) if num_classes
                   else nn.Identity())

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each residual block in the backward pass (timm's name for :attr:`checkpoint_stages`)."""
        self.checkpoint_stages = bool(enable)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Parameter groups for layer-wise learning-rate decay (timm's optimizer factory): the stem, then each stage
        (``coarse``) or each block."""
        return {"stem": r"^conv1|^bn1|^conv2", "blocks": r"^layer(\d+)" if coarse else r"^layer(\d+)\.(\d+)"}

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Parameters timm's optimizer factory should not decay by name: none (it skips biases and norms itself)."""
        return set()

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

    @torch.jit.export
    def forward_features(self, x: Tensor) -> Tensor:
        """The feature map before pooling (N, num_features, h, w): every cell's patch features (timm's API)."""
        if torch.jit.is_scripting():
            return self.stem_and_stages(x)
        return self._features_python(x)

    @torch.jit.unused
    def _features_python(self, x: Tensor) -> Tensor:
        return self.stem_and_stages(x) if tracing() else self.features(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Pool the feature map (the mean over cells) and classify; ``pre_logits``: the pooled features."""
        if self.global_pool == "avg":
            x = x.mean(dim=(2, 3))
        return x if pre_logits else self.fc(x)

    def stem_and_stages(self, x: Tensor) -> Tensor:
        """The network up to its features, nothing else (scriptable and traceable; :meth:`features` adds the input
        check, chunking, precision guard and activation checkpointing)."""
        x = self.relu(self.bn1(self.conv2(self.conv1(x))))
        x = self.layer1(x)
        # unrolled (TorchScript resolves hasattr when it compiles): at most MAX_STAGES stages
        if hasattr(self, "layer2"):
            x = self.layer2(x)
        if hasattr(self, "layer3"):
            x = self.layer3(x)
        if hasattr(self, "layer4"):
            x = self.layer4(x)
        if hasattr(self, "layer5"):
            x = self.layer5(x)
        if hasattr(self, "layer6"):
            x = self.layer6(x)
        if hasattr(self, "layer7"):
            x = self.layer7(x)
        if hasattr(self, "layer8"):
            x = self.layer8(x)
        return x

    @torch.jit.unused
    def features(self, x: Tensor) -> Tensor:
        """Per-patch features (N, feature_dim, h, w) before the classifier."""
        self.check_input(x)
        chunk = self._inference_chunk(x)
        if chunk < x.shape[0]:
            return torch.cat([self._features(part) for part in x.split(chunk)])
        return self._features(x)

    @torch.jit.unused
    def _features(self, x: Tensor) -> Tensor:
        with self._precision_guard(x):
            if not (self.checkpoint_stages and self.training and torch.is_grad_enabled()):
                return self.stem_and_stages(x)
            x = self.relu(self.bn1(self.conv2(self.conv1(x))))
            for stage in self.stages:  # block by block: only each block's input is kept
                for block in stage:
                    x = checkpointed(block, x)
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

    @torch.jit.unused
    def evidence(self, x: Tensor) -> Tensor:
        """Class evidence of every patch, shape (N, num_classes, h, w); its spatial mean is ``self(x)``."""
        if not isinstance(self.fc, nn.Linear):
            raise RuntimeError(f"{self.name} has no classifier (num_classes=0): there is no class evidence; give it "
                               f"one with reset_classifier(num_classes)")
        feats = self.forward_features(x)
        if tracing():
            return F.conv2d(feats, self.fc.weight[:, :, None, None], self.fc.bias)
        with self._precision_guard(x):
            return F.conv2d(feats, self.fc.weight[:, :, None, None], self.fc.bias)

    def forward(self, x: Tensor) -> Tensor:
        # The classifier is linear, so classifying the mean feature equals averaging the evidence map.
        if torch.jit.is_scripting():
            return self.forward_head(self.stem_and_stages(x))
        return self._forward_python(x)

    @torch.jit.unused
    def _forward_python(self, x: Tensor) -> Tensor:
        if tracing():  # torch.fx, torch.export, torch.compile: the arithmetic only
            return self.forward_head(self.stem_and_stages(x))
        feats = self.features(x)
        with self._precision_guard(x):
            return self.forward_head(feats)

    @torch.jit.unused
    def precision_context(self, device: torch.device | str) -> contextlib.AbstractContextManager:
        """Strict fp32 (TF32 off) for computing on a CUDA ``device`` unless ``allow_tf32``; nothing elsewhere."""
        if torch.device(device).type == "cuda" and not self.allow_tf32:
            return strict_fp32()
        return contextlib.nullcontext()

    def _precision_guard(self, x: Tensor) -> contextlib.AbstractContextManager:
        return self.precision_context(x.device)

    def extra_repr(self) -> str:
        return f"patch_size={self.patch_size}, stride={self.stride}"


#: The most residual stages a BagNet can have (its scriptable forward is unrolled up to this many).
MAX_STAGES = 8


def stage_info(config: BagNetConfig) -> list[dict[str, Any]]:
    """timm's ``feature_info``: the channels and nominal reduction of the stem's and each stage's output (an
    unpadded BagNet's maps are smaller still: every 3×3 convolution trims a border)."""
    info = [{"num_chs": config.width, "reduction": 1, "module": "relu"}]
    reduction = 1
    for stage, stride in enumerate(config.strides):
        reduction *= stride
        info.append({"num_chs": config.width * 2**stage * EXPANSION, "reduction": reduction,
                     "module": f"layer{stage + 1}"})
    return info
