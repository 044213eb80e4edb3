"""Moved to :mod:`bagnet.data.imagenet` (bagnet 0.x); this alias goes away in the next release."""

import warnings

from .data.imagenet import ImageNetVal, detect_layout, imagenet_wnids  # noqa: F401

warnings.warn("bagnet.imagenet moved to bagnet.data.imagenet; the old name goes away in the next release",
              DeprecationWarning, stacklevel=2)
