"""The data builders of scripts/transfer_experiment.py (the pinned fine-tuning experiments' inputs)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import transfer_experiment as te  # noqa: E402


def test_item_on_photo_keeps_its_pixels_and_the_photo_elsewhere():
    item = np.zeros((28, 28), np.uint8)
    item[6:22, 9:19] = 200  # a bright garment on Fashion-MNIST's black surround
    item[10:12, 12:14] = 5  # a dark spot inside it: closed into the mask, not a hole onto the photo
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 400), dtype=np.uint8))
    frame = np.asarray(te._on_photo(Image.fromarray(item).convert("RGB"), photo, 56, np.random.default_rng(3)))
    assert frame.shape == (56, 56)
    found = [(y, x) for y in range(29) for x in range(29)
             if (frame[y + 6:y + 22, x + 9:x + 19] == 200).sum() == 16 * 10 - 4]
    assert len(found) == 1, "the item's pixels appear once, unchanged"
    y, x = found[0]
    assert (frame[y + 10:y + 12, x + 12:x + 14] == 5).all()
    # outside the item's box the frame is the photo's crop, not black
    outside = np.ones((56, 56), bool)
    outside[y + 5:y + 23, x + 8:x + 20] = False
    assert frame[outside].std() > 10 and (frame[outside] == 0).mean() < 0.05


def test_photo_backgrounds_ship_with_scikit_image():
    photos = te._photos()
    assert len(photos) == len(te.PHOTOS) >= 10
    assert all(p.mode == "L" and min(p.size) >= 2 * te.CANVAS for p in photos)
    assert min(min(p.size) for p in photos) == te.PHOTO_MIN_SIDE  # the bound of --canvas
