"""The shape of a BagNet: stages, 3×3 blocks, strides, width, classes, input channels, stem and padding layout."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from types import MappingProxyType
from typing import Any, Sequence

from .receptive import ReceptiveField, receptive_field

EXPANSION = 4


@dataclass(frozen=True)
class BagNetConfig:
    """Shape of a BagNet.

    Attributes:
        layers: bottleneck blocks per stage ([3, 4, 6, 3] is ResNet-50).
        kernel3: per stage, how many of its first blocks use a 3×3 ``conv2`` (the others use 1×1).
        strides: stride of the first block of each stage.
        width: channels of the stem and of the first stage's bottleneck; stage ``s`` uses ``width * 2**s``.
        num_classes: number of output classes (0: no classifier; the model returns pooled features, timm's way).
        in_channels: input channels (3: RGB; 1: grayscale, …).
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
    in_channels: int = 3

    def __post_init__(self) -> None:
        for name in ("layers", "kernel3", "strides"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        n = len(self.layers)
        if n == 0 or len(self.kernel3) != n or len(self.strides) != n:
            raise ValueError(
                f"layers, kernel3 and strides need one entry per stage; got {len(self.layers)}, "
                f"{len(self.kernel3)} and {len(self.strides)} entries"
            )
        if n > 8:
            raise ValueError(f"a BagNet has at most 8 stages, got {n}")
        if any(b < 1 for b in self.layers):
            raise ValueError(f"every stage needs at least one block, got layers={self.layers}")
        for stage, (blocks, k3) in enumerate(zip(self.layers, self.kernel3)):
            if not 0 <= k3 <= blocks:
                raise ValueError(f"kernel3[{stage}]={k3} must lie in [0, {blocks}] (the blocks of stage {stage + 1})")
        if any(s < 1 for s in self.strides):
            raise ValueError(f"strides must be >= 1, got {self.strides}")
        if self.width < 1 or self.num_classes < 0 or self.in_channels < 1:
            raise ValueError(f"width and in_channels must be >= 1 and num_classes >= 0 (0: no classifier), got "
                             f"width={self.width}, in_channels={self.in_channels}, num_classes={self.num_classes}")
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
