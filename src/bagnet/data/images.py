"""Tolerant image decoding: any file PIL reads becomes an upright 8-bit RGB image, its size checked from the header
before a pixel is decoded; sample photos from scikit-image."""

from __future__ import annotations

import os
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

import numpy as np
from PIL import Image, ImageOps

from ..errors import ConfigError

#: Colour photos that ship inside the scikit-image wheel (usable offline).
SAMPLE_IMAGES: tuple[str, ...] = ("astronaut", "chelsea", "coffee", "rocket", "cat")
#: Image file endings that ImageFolder-style datasets read.
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp",
                                     ".gif", ".dcm", ".dicom")
#: Largest image (width × height from the file's header) that is decoded: about 360 MB as 8-bit RGB. Larger ones
#: are refused before any pixel is decoded (a few-KB PNG can declare 10⁶ × 10⁶ pixels).
MAX_IMAGE_PIXELS = 120_000_000
#: Longest-to-shortest side ratio dataset images may have: a resize of the short side to a model's input size
#: would blow a 2,000,000×33 px strip up to gigapixels, so such files are skipped (named) before decoding.
MAX_DATASET_ASPECT = 20.0

PathLike = Union[str, os.PathLike]


class ImageReadError(ValueError):
    """An image file could not be decoded; the message names the file."""


class ImageTooLarge(ImageReadError):
    """An image file declares more pixels than bagnet decodes (``MAX_IMAGE_PIXELS``)."""


#: EXIF orientations that swap width and height.
_TRANSPOSED_ORIENTATIONS = (5, 6, 7, 8)


def image_size(path: PathLike, max_pixels: int = MAX_IMAGE_PIXELS) -> tuple[int, int]:
    """(width, height) of an image file, upright (EXIF orientation applied), read from its header only."""
    path = Path(path)
    if path.suffix.lower() in DICOM_SUFFIXES:
        return _dicom_size(path)
    try:
        with warnings.catch_warnings(), _quiet_bomb_warning(), Image.open(path) as image:
            w, h = image.size
            orientation = image.getexif().get(0x0112) if hasattr(image, "getexif") else None
    except FileNotFoundError:
        raise
    except Exception as err:  # PIL raises many types for a broken or non-image file
        raise ImageReadError(f"cannot read image {path}: {type(err).__name__}: {err}") from err
    _check_pixels(path, w, h, max_pixels)
    return (h, w) if orientation in _TRANSPOSED_ORIENTATIONS else (w, h)


@contextmanager
def _quiet_bomb_warning() -> Iterator[None]:
    """PIL warns about images above its own pixel limit; bagnet's ``max_pixels`` decides instead."""
    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
    yield


def _check_pixels(path: Path, w: int, h: int, max_pixels: int) -> None:
    if w < 1 or h < 1:
        raise ImageReadError(f"cannot read image {path}: its header declares {w}×{h} pixels")
    if w * h > max_pixels:
        raise ImageTooLarge(f"image {path} declares {w}×{h} px ({w * h / 1e6:.0f} Mpx) in its header, more than the "
                            f"{max_pixels / 1e6:.0f} Mpx bagnet decodes; scale it down first")


def load_image(path: PathLike, background: tuple[int, int, int] = (255, 255, 255),
               max_pixels: int = MAX_IMAGE_PIXELS, max_aspect: Optional[float] = None,
               window: Optional[tuple[float, float]] = None) -> Image.Image:
    """Decode any image file PIL reads into an upright 8-bit RGB image (the first frame of an animation).

    EXIF orientation is applied; transparency (RGBA, LA, palette) is composited on ``background``; 16-bit, 32-bit and
    float grayscale is scaled to 8 bits by its own range or ``window`` (:func:`window_to_8bit`); CMYK, palette and grayscale images are converted to RGB. Images whose header
    declares more than ``max_pixels`` pixels, or (when given) a long side more than ``max_aspect`` times the short
    one, are refused (:class:`ImageTooLarge`) before decoding.
    """
    path = Path(path)
    if path.suffix.lower() in DICOM_SUFFIXES:
        return to_rgb(read_dicom(path, window, max_pixels), background)
    try:
        with warnings.catch_warnings(), _quiet_bomb_warning(), Image.open(path) as image:
            _check_pixels(path, *image.size, max_pixels)
            w, h = image.size
            if max_aspect is not None and max(w, h) > max_aspect * min(w, h):
                raise ImageTooLarge(f"image {path} is {w}×{h} px, an aspect ratio of {max(w, h) / min(w, h):.0f}:1; "
                                    f"datasets accept at most {max_aspect:.0f}:1 (resizing its short side to a "
                                    f"model's input would make it enormous)")
            image.load()
            return to_rgb(ImageOps.exif_transpose(image), background, window)
    except (FileNotFoundError, ImageReadError):
        raise
    except Exception as err:  # PIL raises many types for a broken or non-image file
        raise ImageReadError(f"cannot read image {path}: {type(err).__name__}: {err}") from err


DICOM_SUFFIXES = (".dcm", ".dicom")


def read_dicom(path: Path, window: Optional[tuple[float, float]] = None,
               max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """A DICOM file's first frame as an 8-bit grey image, through pydicom (``pip install 'bagnet[dicom]'``): stored
    values turned into modality values (RescaleSlope/Intercept), then the ``window`` given, else the file's own
    (WindowCenter/WindowWidth), else the image's range (:func:`window_to_8bit`); MONOCHROME1 is inverted."""
    try:
        import pydicom
        from pydicom.pixels import apply_modality_lut
    except ImportError:
        raise ImageReadError(f"cannot read {path}: DICOM files need pydicom (pip install 'bagnet[dicom]')") from None
    try:
        ds = pydicom.dcmread(str(path))
        _check_pixels(path, int(ds.Columns), int(ds.Rows), max_pixels)
        pixels = np.asarray(apply_modality_lut(ds.pixel_array, ds), dtype=np.float64)
    except ImageReadError:
        raise
    except Exception as err:  # pydicom raises many types for a broken file
        raise ImageReadError(f"cannot read DICOM file {path}: {type(err).__name__}: {err}") from err
    if pixels.ndim == 3 and getattr(ds, "SamplesPerPixel", 1) == 1:
        pixels = pixels[0]  # a multi-frame image: its first frame
    if pixels.ndim != 2:
        raise ImageReadError(f"cannot read DICOM file {path}: expected one grey frame, got shape {pixels.shape}")
    if window is None and "WindowCenter" in ds and "WindowWidth" in ds:
        centre, width = (float(v[0] if isinstance(v, pydicom.multival.MultiValue) else v)
                         for v in (ds.WindowCenter, ds.WindowWidth))
        window = (centre - width / 2, centre + width / 2)
    grey = window_to_8bit(pixels, window)
    if getattr(ds, "PhotometricInterpretation", "") == "MONOCHROME1":
        grey = 255 - grey
    return Image.fromarray(grey, mode="L")


def _dicom_size(path: Path) -> tuple[int, int]:
    try:
        import pydicom

        ds = pydicom.dcmread(str(path), stop_before_pixels=True)
        return int(ds.Columns), int(ds.Rows)
    except ImportError:
        raise ImageReadError(f"cannot read {path}: DICOM files need pydicom (pip install 'bagnet[dicom]')") from None
    except Exception as err:  # pydicom raises many types for a broken file
        raise ImageReadError(f"cannot read DICOM file {path}: {type(err).__name__}: {err}") from err


#: PIL modes of 16-bit, 32-bit integer and float grayscale images.
HIGH_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def window_to_8bit(array: np.ndarray, window: Optional[tuple[float, float]] = None) -> np.ndarray:
    """High-bit-depth grey values as 8 bits: ``window = (low, high)`` maps low → 0 and high → 255 (values outside are
    clipped; a radiology window); without one, the image's own range (its minimum → 0, its maximum → 255), never
    the container's maximum (a 12-bit X-ray in a 16-bit PNG would reach the model as grey levels 0-16). A constant
    image becomes 0. NaN values become 0."""
    array = np.nan_to_num(array, nan=0.0, posinf=0.0, neginf=0.0)
    if window is None:
        low, high = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
    else:
        low, high = window
    if window is not None and not high > low:
        raise ValueError(f"an intensity window needs low < high, got {window}")
    scale = 255.0 / (high - low) if high > low else 0.0
    return np.clip((array - low) * scale + 0.5, 0, 255).astype(np.uint8)


def to_rgb(image: Image.Image, background: tuple[int, int, int] = (255, 255, 255),
           window: Optional[tuple[float, float]] = None) -> Image.Image:
    """Convert a PIL image of any mode to 8-bit RGB (transparency composited on ``background``; 16-bit, 32-bit and
    float grayscale through :func:`window_to_8bit` with ``window``)."""
    if image.mode in HIGH_BIT_MODES:
        image = Image.fromarray(window_to_8bit(np.asarray(image, dtype=np.float64), window), mode="L")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, background + (255,))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return image.convert("RGB") if image.mode != "RGB" else image


def sample_image(name: str = "chelsea") -> Image.Image:
    """A sample RGB photo from scikit-image's bundled data (needs the ``examples`` extra: scikit-image)."""
    if name not in SAMPLE_IMAGES:
        raise ConfigError(f"unknown sample image {name!r}; choose one of {', '.join(SAMPLE_IMAGES)}")
    try:
        from skimage import data as skdata
    except ImportError as err:
        raise ImportError("sample images come from scikit-image: pip install 'bagnet[examples]'") from err
    return Image.fromarray(getattr(skdata, name)()).convert("RGB")


#: What :func:`collect_inputs` (and ``bagnet.explain``) take: a file or folder, a PIL image, or (label, PIL image).
ImageInput = Union[str, os.PathLike, Image.Image, tuple[str, Image.Image]]


def collect_inputs(inputs: Union["ImageInput", Sequence["ImageInput"]]
                   ) -> tuple[list[Union[str, Image.Image]], dict[str, str], dict[str, str]]:
    """Files, folders (their image files, recursively, sorted) and PIL images; the inputs that do not exist
    (failures); and the files inside the folders that are not images by their ending (skipped, named)."""
    if isinstance(inputs, (str, os.PathLike, Image.Image)) or (
            isinstance(inputs, tuple) and len(inputs) == 2 and isinstance(inputs[1], Image.Image)):
        inputs = [inputs]
    sources: list[Union[str, Image.Image]] = []
    failures: dict[str, str] = {}
    skipped: dict[str, str] = {}
    for item in inputs:
        if isinstance(item, Image.Image) or (isinstance(item, tuple) and len(item) == 2
                                             and isinstance(item[1], Image.Image)):
            sources.append(item)  # a PIL image, or (label, PIL image)
            continue
        path = Path(item)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file()
                           and not any(part.startswith(".") for part in p.relative_to(path).parts))
            found = [p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS]
            for p in files:
                if p.suffix.lower() not in IMAGE_EXTENSIONS:
                    skipped[str(p)] = f"not an image file by its ending ({p.suffix or 'none'})"
            if not found:
                failures[str(path)] = f"folder {path} holds no image files ({', '.join(IMAGE_EXTENSIONS)})"
            sources.extend(str(p) for p in found)
        elif path.is_file():
            sources.append(str(path))
        else:
            failures[str(path)] = f"no such file or folder: {path}"
    return sources, failures, skipped
