"""Images and datasets: sample photos, tolerant image loading.

(Dataset classes for ImageFolder data, Imagenette and Fashion-MNIST join this module with the training work.)
"""

from __future__ import annotations

from PIL import Image

#: Colour photos that ship inside the scikit-image wheel (usable offline).
SAMPLE_IMAGES: tuple[str, ...] = ("astronaut", "chelsea", "coffee", "rocket", "cat")


def sample_image(name: str = "chelsea") -> Image.Image:
    """A sample RGB photo from scikit-image's bundled data (needs the ``examples`` extra: scikit-image)."""
    if name not in SAMPLE_IMAGES:
        raise ValueError(f"unknown sample image {name!r}; choose one of {', '.join(SAMPLE_IMAGES)}")
    try:
        from skimage import data as skdata
    except ImportError as err:
        raise ImportError("sample images come from scikit-image: pip install 'bagnet[examples]'") from err
    array = getattr(skdata, name)()
    return Image.fromarray(array).convert("RGB")


def default_data_root() -> "Path":
    """Where the shared datasets live: ``$BAGNET_DATA`` or ``../shared/data`` beside the repository."""
    import os
    from pathlib import Path

    env = os.environ.get("BAGNET_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "shared" / "data"
