"""Receptive-field and output-size arithmetic for convolution chains without padding.

Everything here is computed from a list of ``(kernel, stride)`` pairs, so any BagNet configuration gets its
patch size, stride and evidence-map size from its layers rather than from a table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence


@dataclass(frozen=True)
class ReceptiveField:
    """Receptive field of one output cell of an unpadded conv chain.

    Output cell ``(i, j)`` sees input pixels ``[stride*i, stride*i + size)`` in each direction.
    """

    size: int
    stride: int


def receptive_field(layers: Iterable[tuple[int, int]]) -> ReceptiveField:
    """Receptive field of a chain of unpadded convolutions given as ``(kernel, stride)`` pairs."""
    size, jump = 1, 1
    for kernel, stride in layers:
        if kernel < 1 or stride < 1:
            raise ValueError(f"kernel and stride must be >= 1, got kernel={kernel}, stride={stride}")
        size += (kernel - 1) * jump
        jump *= stride
    return ReceptiveField(size=size, stride=jump)


def output_length(length: int, layers: Sequence[tuple[int, int]]) -> int:
    """Length of the output of an unpadded conv chain for an input of ``length`` pixels (0 if too short)."""
    for kernel, stride in layers:
        if length < kernel:
            return 0
        length = (length - kernel) // stride + 1
    return length
