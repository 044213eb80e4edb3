"""The one reading of "which class": a target given as None (the predicted class), an int, a list of ints, or an
integer tensor of one class per image or several, checked against the model's class count (used by the heatmaps and
the attribution methods alike)."""

from __future__ import annotations

import numbers
from typing import Optional, Sequence, Union

import torch
from torch import Tensor

#: A class target: None (predicted), one class, K classes for every image, or a (N,) / (N, K) tensor.
Target = Union[None, int, Sequence[int], Tensor]


def per_image_classes(target: Target, n: int, num_classes: int, predicted: Optional[Tensor] = None,
                      name: str = "target") -> Tensor:
    """The one reading of a target for ``n`` images, as an (N, K) long tensor: ``None`` (``predicted``, one class per
    image), an int or a list of K ints (the same for every image), or a tensor () / (N,) / (N, K) of class indices.
    Every class must lie in [0, ``num_classes``)."""
    if target is None:
        if predicted is None:
            raise ValueError(f"{name} is None but no predicted classes were given")
        classes = predicted.reshape(-1).long()[:, None]
    elif isinstance(target, Tensor):
        classes = class_indices(target, f"a {name} tensor")
        if classes.dim() == 0:
            classes = classes.expand(n)[:, None]
        elif classes.dim() == 1:
            if classes.shape[0] != n:
                raise ValueError(f"a 1-D {name} tensor gives one class per image: expected {n} entries, got "
                                 f"{classes.shape[0]}")
            classes = classes[:, None]
        elif classes.dim() != 2 or classes.shape[0] != n:
            raise ValueError(f"a {name} tensor must be shaped (N,) or (N, K) with N = {n}, got {tuple(classes.shape)}")
    else:
        classes = class_indices(target, name)[None].expand(n, -1)
    if classes.numel() and (classes.min() < 0 or classes.max() >= num_classes):
        bad = classes[(classes < 0) | (classes >= num_classes)][0].item()
        raise ValueError(f"{name} must lie in [0, {num_classes}): class {bad} is out of range: the model has "
                         f"{num_classes} classes (0..{num_classes - 1})")
    return classes


def class_indices(target: object, name: str = "target") -> Tensor:
    """``target`` (an int, a list of ints or an integer tensor) as a long tensor; bools and floats are refused
    rather than silently truncated to a class."""
    if not isinstance(target, (Tensor, list, tuple, numbers.Number)) and hasattr(target, "__array__"):
        target = torch.as_tensor(target)  # numpy arrays and scalars
    if isinstance(target, Tensor):
        if target.dtype == torch.bool or target.is_floating_point() or target.is_complex():
            raise ValueError(f"{name} must hold integer class indices, got a tensor of dtype {target.dtype}")
        return target.long()
    values = list(target) if isinstance(target, (list, tuple)) else [target]
    if not values or not all(_is_class_index(v) for v in values):
        raise ValueError(f"{name} must be an int, a non-empty list of ints or an integer tensor, got {target!r}")
    return torch.tensor([int(v) for v in values], dtype=torch.long)


def _is_class_index(value: object) -> bool:
    """An integer that is not a bool (True/False as a class would be silently 1/0)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and type(value).__name__ != "bool_"
