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


def output_length_padded(length: int, layers: Sequence[tuple[int, int]]) -> int:
    """Length of the output of a same-padded conv chain (odd kernels): ⌈n / stride⌉ per layer."""
    for _, stride in layers:
        length = -(-length // stride)
    return length


def cells_reached(patch_size: int, stride: int, top: int, left: int, height: int, width: int,
                  cells: tuple[int, int]) -> tuple[range, range]:
    """Rows and columns of the evidence cells whose ``patch_size`` patches (cell i sees pixels
    ``[stride*i, stride*i + patch_size)``) overlap the pixel rectangle ``[top, top+height) × [left, left+width)``;
    ``cells`` is the evidence map's size."""
    if min(patch_size, stride, height, width) < 1:
        raise ValueError(f"patch size, stride and the rectangle's sides must be >= 1, got "
                         f"{patch_size}, {stride}, {height}×{width}")

    def axis(pos: int, extent: int, n: int) -> range:
        lo = max(0, (pos - patch_size) // stride + 1)
        hi = min(n - 1, (pos + extent - 1) // stride)
        return range(lo, hi + 1)

    return axis(top, height, cells[0]), axis(left, width, cells[1])


def reach_window(patch_size: int, stride: int, extent: int) -> int:
    """The most cells per axis whose patches can overlap ``extent`` consecutive pixels: ⌈(extent + q − 1) / s⌉."""
    if extent < 1 or patch_size < 1 or stride < 1:
        raise ValueError(f"extent, patch size and stride must be >= 1, got {extent}, {patch_size}, {stride}")
    return -(-(extent + patch_size - 1) // stride)


def cell_block(patch_size: int, stride: int, top: int, left: int, height: int, width: int,
               cells: tuple[int, int]) -> tuple[int, int, int, int]:
    """A block of cells ``(row, col, rows, cols)`` of fixed size for a given rectangle size, wherever the rectangle
    lies, that holds every cell :func:`cells_reached` names (so that the blocks of many positions stack)."""
    rows, cols = cells_reached(patch_size, stride, top, left, height, width, cells)
    bh = min(reach_window(patch_size, stride, height), cells[0])
    bw = min(reach_window(patch_size, stride, width), cells[1])
    return min(rows.start, cells[0] - bh), min(cols.start, cells[1] - bw), bh, bw


def block_pixels(patch_size: int, stride: int, block: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """The pixels ``(top, left, height, width)`` that a block of cells sees together."""
    row, col, rows, cols = block
    return stride * row, stride * col, stride * (rows - 1) + patch_size, stride * (cols - 1) + patch_size
