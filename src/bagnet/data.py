"""Images and datasets: tolerant image decoding, ImageFolder data, Imagenette, Fashion-MNIST, sample photos.

Unreadable images never stop a long run: datasets return a :class:`Skipped` marker in their place, the collate
function drops it from the batch and hands it to the caller, which reports each path once and counts them.
"""

from __future__ import annotations

import csv
import gzip
import os
import shutil
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor
from torchvision import datasets

from .errors import ConfigError

#: Colour photos that ship inside the scikit-image wheel (usable offline).
SAMPLE_IMAGES: tuple[str, ...] = ("astronaut", "chelsea", "coffee", "rocket", "cat")
#: Image file endings that ImageFolder-style datasets read.
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp",
                                     ".gif")
#: Largest image (width × height from the file's header) that is decoded: about 360 MB as 8-bit RGB. Larger ones
#: are refused before any pixel is decoded (a few-KB PNG can declare 10⁶ × 10⁶ pixels).
MAX_IMAGE_PIXELS = 120_000_000
#: Longest-to-shortest side ratio dataset images may have: a resize of the short side to a model's input size
#: would blow a 2,000,000×33 px strip up to gigapixels, so such files are skipped (named) before decoding.
MAX_DATASET_ASPECT = 20.0
#: Where Debian's dataset-fashion-mnist package puts its files.
FASHION_MNIST_DEBIAN = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)

PathLike = Union[str, os.PathLike]


# ---------------------------------------------------------------------------------------------------- images
class ImageReadError(ValueError):
    """An image file could not be decoded; the message names the file."""


class ImageTooLarge(ImageReadError):
    """An image file declares more pixels than bagnet decodes (``MAX_IMAGE_PIXELS``)."""


#: EXIF orientations that swap width and height.
_TRANSPOSED_ORIENTATIONS = (5, 6, 7, 8)


def image_size(path: PathLike, max_pixels: int = MAX_IMAGE_PIXELS) -> tuple[int, int]:
    """(width, height) of an image file, upright (EXIF orientation applied), read from its header only."""
    path = Path(path)
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
               max_pixels: int = MAX_IMAGE_PIXELS, max_aspect: Optional[float] = None) -> Image.Image:
    """Decode any image file PIL reads into an upright 8-bit RGB image (the first frame of an animation).

    EXIF orientation is applied; transparency (RGBA, LA, palette) is composited on ``background``; 16- and 32-bit
    grayscale is scaled to 8 bits; CMYK, palette and grayscale images are converted to RGB. Images whose header
    declares more than ``max_pixels`` pixels, or (when given) a long side more than ``max_aspect`` times the short
    one, are refused (:class:`ImageTooLarge`) before decoding.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings(), _quiet_bomb_warning(), Image.open(path) as image:
            _check_pixels(path, *image.size, max_pixels)
            w, h = image.size
            if max_aspect is not None and max(w, h) > max_aspect * min(w, h):
                raise ImageTooLarge(f"image {path} is {w}×{h} px, an aspect ratio of {max(w, h) / min(w, h):.0f}:1; "
                                    f"datasets accept at most {max_aspect:.0f}:1 (resizing its short side to a "
                                    f"model's input would make it enormous)")
            image.load()
            return to_rgb(ImageOps.exif_transpose(image), background)
    except (FileNotFoundError, ImageReadError):
        raise
    except Exception as err:  # PIL raises many types for a broken or non-image file
        raise ImageReadError(f"cannot read image {path}: {type(err).__name__}: {err}") from err


def to_rgb(image: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Convert a PIL image of any mode to 8-bit RGB (transparency composited on ``background``)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        if image.mode == "F":
            top = 1.0 if array.max(initial=0.0) <= 1.0 else array.max()
        else:
            top = 65535.0 if array.max(initial=0) > 255 or image.mode.startswith("I;16") else 255.0
        image = Image.fromarray(np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
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


# ---------------------------------------------------------------------------------------------------- datasets
@dataclass(frozen=True)
class Skipped:
    """Stands in a batch for a sample that could not be loaded."""

    path: str
    reason: str


@dataclass
class Batch:
    """A collated batch: images (B, 3, H, W), labels (B,), indices into the dataset, and the skipped samples."""

    images: Tensor
    labels: Tensor
    indices: Tensor
    skipped: list[Skipped]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def pin_memory(self) -> "Batch":
        """The batch in page-locked memory (DataLoader's ``pin_memory=True``: faster, asynchronous GPU copies)."""
        return Batch(self.images.pin_memory(), self.labels.pin_memory(), self.indices, self.skipped)


def pin_for(device: Any) -> bool:
    """Whether loaders feeding ``device`` should pin their batches: only for CUDA."""
    return device is not None and torch.device(device).type == "cuda"


class ImageFolderDataset(datasets.ImageFolder):
    """torchvision's ImageFolder (one sub-folder per class, sorted) that returns :class:`Skipped` for bad files.

    ``dataset[i]`` is ``(image, label, i)`` or ``Skipped``; ``categories`` holds readable class names.
    """

    def __init__(
        self,
        root: PathLike,
        transform: Optional[Callable[[Image.Image], Any]] = None,
        categories: Optional[Sequence[str]] = None,
        samples: Optional[Sequence[str]] = None,
    ) -> None:
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"dataset folder {root} does not exist")
        super().__init__(str(root), transform=transform, loader=_dataset_loader, is_valid_file=_is_image_file)
        if samples is not None:
            keep = {str(root / s) for s in samples}
            self.samples = [s for s in self.samples if s[0] in keep]
            self.imgs = self.samples
            self.targets = [t for _, t in self.samples]
            if len(self.samples) != len(keep):
                raise ValueError(f"{len(keep) - len(self.samples)} listed samples are not images under {root}")
        self.categories: list[str] = list(categories) if categories is not None else list(self.classes)
        if len(self.categories) != len(self.classes):
            raise ValueError(f"{len(self.categories)} category names for {len(self.classes)} class folders in {root}")

    def __getitem__(self, index: int) -> Union[tuple[Any, int, int], Skipped]:
        path, label = self.samples[index]
        return read_sample(path, label, index, self.transform)


def read_sample(path: str, label: int, index: int,
                transform: Optional[Callable[[Image.Image], Any]]) -> Union[tuple[Any, int, int], Skipped]:
    """One dataset item: ``(image, label, index)``, or :class:`Skipped` for a file that cannot be read."""
    try:
        image = _dataset_loader(path)
    except (ImageReadError, OSError) as err:  # a bad file must not end a long run: hand it to the caller
        return Skipped(path, str(err))
    if transform is not None:  # transform errors are programming errors: they propagate
        image = transform(image)
    bad = _non_finite(image)
    if bad:
        return Skipped(path, _non_finite_reason(bad, image))
    return image, label, index


def _non_finite(image: Any) -> int:
    """How many NaN or ±inf values a transformed image holds (0 for anything that is not a float tensor)."""
    if isinstance(image, Tensor) and image.is_floating_point():
        return int((~torch.isfinite(image)).sum())
    return 0


def _non_finite_reason(bad: int, image: Tensor) -> str:
    return (f"its transform gave {bad} non-finite values (NaN or inf) of {image.numel()} (a division by a zero "
            f"standard deviation?); models would turn them into NaN logits")


def _dataset_loader(path: str) -> Image.Image:
    """How datasets read a file: :func:`load_image` with the dataset aspect-ratio bound (picklable for workers)."""
    return load_image(path, max_aspect=MAX_DATASET_ASPECT)


def _is_image_file(path: str) -> bool:
    return path.lower().endswith(IMAGE_EXTENSIONS) and not os.path.basename(path).startswith(".")


def collate(samples: Sequence[Union[tuple[Any, int, int], Skipped]]) -> Batch:
    """Stack the loadable samples of a batch; the others are passed on in ``Batch.skipped``."""
    good, skipped = [], [s for s in samples if isinstance(s, Skipped)]
    for s in samples:
        if isinstance(s, Skipped):
            continue
        bad = _non_finite(s[0])  # any dataset's items (those of files are checked, with their path, when read)
        if bad:
            skipped.append(Skipped(f"item #{s[2]}", _non_finite_reason(bad, s[0])))
        else:
            good.append(s)
    if not good:
        return Batch(torch.empty(0), torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long), skipped)
    shapes = {tuple(s[0].shape) for s in good}
    if len(shapes) > 1:
        raise ValueError(f"images of one batch must share a size, got {sorted(shapes)}: resize or crop them to one "
                         "size in the dataset's transform")
    images = torch.stack([s[0] for s in good])
    labels = torch.tensor([s[1] for s in good], dtype=torch.long)
    indices = torch.tensor([s[2] for s in good], dtype=torch.long)
    return Batch(images, labels, indices, skipped)


class SkipLog:
    """Reports each skipped file once (to a callback, default: stderr) and counts them."""

    def __init__(self, report: Optional[Callable[[str], None]] = None) -> None:
        self._report = report or (lambda msg: print(msg, file=__import__("sys").stderr))
        self.paths: dict[str, str] = {}

    def add(self, skipped: Sequence[Skipped]) -> None:
        for s in skipped:
            if s.path not in self.paths:
                self.paths[s.path] = s.reason
                self._report(f"skipped unreadable image {s.path}: {s.reason}")

    def __len__(self) -> int:
        return len(self.paths)


# ---------------------------------------------------------------------------------------------------- Imagenette
#: The official Imagenette archive with 160-px images (fast.ai; the MD5 torchvision's Imagenette dataset checks).
IMAGENETTE_URL = "https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-160.tgz"
IMAGENETTE_MD5 = "e793b78cc4c9e9a4ccc0c1155377a412"
IMAGENETTE_DIR = "imagenette2-160"
#: (WordNet id, ImageNet class index, name) of the ten classes, in folder (= label) order.
IMAGENETTE_TABLE = (
    ("n01440764", 0, "tench"), ("n02102040", 217, "English_springer"), ("n02979186", 482, "cassette_player"),
    ("n03000684", 491, "chain_saw"), ("n03028079", 497, "church"), ("n03394916", 566, "French_horn"),
    ("n03417042", 569, "garbage_truck"), ("n03425413", 571, "gas_pump"), ("n03445777", 574, "golf_ball"),
    ("n03888257", 701, "parachute"),
)


def user_data_dir() -> Path:
    """bagnet's data folder in the user's cache: ``$XDG_CACHE_HOME/bagnet/data`` (default ``~/.cache/bagnet/data``)."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "bagnet" / "data"


def default_data_root() -> Path:
    """Where datasets are looked for (and :func:`fetch_imagenette` puts Imagenette): ``$BAGNET_DATA`` if set, else
    :func:`user_data_dir`. Nothing depends on where the package is installed."""
    env = os.environ.get("BAGNET_DATA")
    return Path(env) if env else user_data_dir()


def fetch_imagenette(root: Optional[PathLike] = None, url: str = IMAGENETTE_URL, md5: Optional[str] = IMAGENETTE_MD5,
                     progress: bool = True) -> Path:
    """Download and unpack Imagenette (160 px, 94 MB, MD5-checked) into ``root`` (default :func:`default_data_root`)
    unless ``root/imagenette2-160`` already holds its ``train`` and ``val`` folders; returns that folder.

    The official archive keeps each photo's aspect ratio (short side 160 px); the copy the shipped models were trained
    on squashed every image to 160×160 first (its SOURCE.txt), so accuracies on the two differ a little."""
    import hashlib
    import tarfile
    import tempfile

    root = Path(root) if root is not None else default_data_root()
    folder = root / IMAGENETTE_DIR
    if (folder / "train").is_dir() and (folder / "val").is_dir():
        return folder
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".fetch-") as tmp:
        archive = Path(tmp) / "archive.tgz"
        try:
            torch.hub.download_url_to_file(url, str(archive), progress=progress)
            digest = hashlib.md5(archive.read_bytes()).hexdigest()
            if md5 is not None and digest != md5:
                raise OSError(f"the archive's MD5 is {digest}, expected {md5}")
            with tarfile.open(archive) as tar:  # members that would land outside root are refused
                tar.extractall(tmp, filter="data") if hasattr(tarfile, "data_filter") else _safe_extract(tar, tmp)
        except (OSError, RuntimeError, tarfile.TarError) as err:
            raise OSError(f"could not fetch Imagenette from {url} into {root} ({err}); download it elsewhere, unpack "
                          f"it so that {folder}/train and {folder}/val exist, or set BAGNET_DATA to the folder holding "
                          f"{IMAGENETTE_DIR}/") from None
        unpacked = Path(tmp) / IMAGENETTE_DIR
        if unpacked.is_dir() and not folder.exists():
            os.replace(unpacked, folder)
    if not ((folder / "train").is_dir() and (folder / "val").is_dir()):
        raise OSError(f"{url} did not unpack into {folder}/train and {folder}/val")
    return folder


@dataclass(frozen=True)
class ImagenetteClass:
    index: int
    wnid: str
    imagenet_index: int
    name: str


def imagenette_classes(root: Optional[PathLike] = None) -> list[ImagenetteClass]:
    """The ten Imagenette classes from its ``classes.csv`` (index order = sorted folder names)."""
    root = Path(root) if root is not None else default_data_root() / IMAGENETTE_DIR
    path = root / "classes.csv"
    if not path.is_file():  # the official archive has none: the ten classes are known
        if not (root / "train").is_dir() and not (root / "val").is_dir():
            raise FileNotFoundError(_missing_imagenette(root))
        return [ImagenetteClass(i, w, k, n) for i, (w, k, n) in enumerate(IMAGENETTE_TABLE)]
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    classes = [ImagenetteClass(int(r["index"]), r["wnid"], int(r["imagenet_index"]), r["name"]) for r in rows]
    return sorted(classes, key=lambda c: c.index)


def imagenette(
    split: str = "train",
    transform: Optional[Callable[[Image.Image], Any]] = None,
    root: Optional[PathLike] = None,
    subset: Optional[str] = None,
) -> ImageFolderDataset:
    """Imagenette (10 ImageNet classes) from the shared copy; ``subset`` names a list file such as
    ``train_subset300.txt`` whose lines are paths relative to the root."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    root = Path(root) if root is not None else default_data_root() / IMAGENETTE_DIR
    if not (root / split).is_dir():
        raise FileNotFoundError(_missing_imagenette(root))
    classes = imagenette_classes(root)
    samples = None
    if subset is not None:
        lines = (root / subset).read_text().split()
        samples = [str(Path(*Path(line).parts[1:])) for line in lines if Path(line).parts[0] == split]
    dataset = ImageFolderDataset(root / split, transform, categories=[c.name for c in classes], samples=samples)
    if dataset.classes != [c.wnid for c in classes]:
        raise ValueError(f"class folders {dataset.classes} under {root / split} do not match classes.csv")
    return dataset


def _safe_extract(tar: Any, dest: str) -> None:
    """``extractall`` for Pythons without tarfile filters: refuse links and paths that leave ``dest``."""
    base = Path(dest).resolve()
    for member in tar.getmembers():
        target = (base / member.name).resolve()
        if member.issym() or member.islnk() or not target.is_relative_to(base):
            raise OSError(f"refusing archive member {member.name!r}")
    tar.extractall(dest)


def _missing_imagenette(root: Path) -> str:
    return (f"Imagenette is not at {root} (no train/ and val/ folders there): run `bagnet fetch imagenette` "
            f"(downloads 94 MB into {root.parent}), or set BAGNET_DATA to the folder that holds {IMAGENETTE_DIR}/")


# ---------------------------------------------------------------------------------------------------- Fashion-MNIST
class FashionMNISTDataset(torch.utils.data.Dataset):
    """Fashion-MNIST as 3-channel PIL images through ``transform``; items are ``(image, label, index)``."""

    def __init__(self, split: str, transform: Optional[Callable[[Image.Image], Any]], root: Path) -> None:
        self._inner = datasets.FashionMNIST(str(root), train=split == "train", download=False)
        self.transform = transform
        self.categories = list(FASHION_MNIST_CLASSES)
        self.targets = self._inner.targets.tolist()

    def __len__(self) -> int:
        return len(self._inner)

    def __getitem__(self, index: int) -> tuple[Any, int, int]:
        image, label = self._inner[index]
        image = image.convert("RGB")
        return (self.transform(image) if self.transform else image), int(label), index


def fashion_mnist(
    split: str = "train",
    transform: Optional[Callable[[Image.Image], Any]] = None,
    cache: Optional[PathLike] = None,
    source: PathLike = FASHION_MNIST_DEBIAN,
) -> FashionMNISTDataset:
    """Fashion-MNIST read from Debian's ``dataset-fashion-mnist`` files (gunzipped once into ``cache``)."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    cache = Path(cache) if cache is not None else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "bagnet"
    raw = cache / "FashionMNIST" / "raw"
    names = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    for name in names:
        if (raw / name).is_file():
            continue
        gz = Path(source) / f"{name}.gz"
        if not gz.is_file():
            raise FileNotFoundError(
                f"Fashion-MNIST file {gz} not found; install it with: apt-get install dataset-fashion-mnist"
            )
        raw.mkdir(parents=True, exist_ok=True)
        tmp = raw / f"{name}.tmp"
        with gzip.open(gz, "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.replace(tmp, raw / name)
    return FashionMNISTDataset("train" if split == "train" else "test", transform, cache)


def evaluation_dataset(
    spec: str, transform: Optional[Callable[[Image.Image], Any]] = None
) -> tuple[torch.utils.data.Dataset, list[str], str]:
    """The dataset a CLI ``--data`` names, for evaluation: ``imagenette`` (its val split), ``fashion-mnist`` (its
    test split), ``imagenet:ROOT`` (the ImageNet validation split in any of the layouts of :mod:`bagnet.imagenet`)
    or an ImageFolder folder (its ``val/`` sub-folder when there is one). Returns it with its class names and a
    display name."""
    if spec.startswith("imagenet:"):
        from .imagenet import ImageNetVal

        inet = ImageNetVal(spec[len("imagenet:"):], transform)
        return inet, inet.categories, f"imagenet/val ({inet.layout} layout)"
    if spec == "imagenette":
        ds = imagenette("val", transform)
        return ds, ds.categories, "imagenette/val"
    if spec == "fashion-mnist":
        fm = fashion_mnist("test", transform)
        return fm, fm.categories, "fashion-mnist/test"
    root = Path(spec)
    if (root / "val").is_dir():
        root = root / "val"
    else:
        _refuse_split_without_val(root)
    ds = ImageFolderDataset(root, transform)
    return ds, ds.categories, str(root)


#: Sub-folder names that mark a dataset's splits rather than its classes.
SPLIT_NAMES = ("train", "val", "valid", "validation", "test")


def _refuse_split_without_val(root: Path) -> None:
    """A dataset folder laid out in splits (``train/``, ``test/``) but without ``val/``: its splits are not classes."""
    if not root.is_dir():
        return
    folders = [p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    splits = sorted(name for name in folders if name.lower() in SPLIT_NAMES)
    if splits and len(splits) == len(folders):  # only split folders: not a folder of classes
        raise FileNotFoundError(
            f"dataset folder {root} has no val/ split (it has {', '.join(s + '/' for s in splits)}): evaluation reads "
            f"{root / 'val'}/CLASS/IMAGE; add that split, or name the split to evaluate on (--data {root / splits[0]})")


# ---------------------------------------------------------------------------------- iterating a dataset
def sample_path(dataset: torch.utils.data.Dataset, index: int) -> str:
    """File path of sample ``index`` of an ImageFolder-style dataset (through Subsets), or '#index'."""
    while isinstance(dataset, torch.utils.data.Subset):
        dataset = dataset.dataset
    samples = getattr(dataset, "samples", None)
    return samples[index][0] if samples is not None else f"#{index}"


def check_dataset(dataset: torch.utils.data.Dataset, name: str = "dataset") -> int:
    """Length of ``dataset``; a clear error when it is empty."""
    try:
        n = len(dataset)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{name} must be a map-style dataset with a length, got {type(dataset).__name__}") from None
    if n == 0:
        raise ValueError(f"{name} is empty: nothing to run on")
    return n


def subset_indices(n: int, limit: Optional[int], seed: int) -> list[int]:
    """The items ``--limit N --seed S`` pick from a dataset of ``n``, the same in every command and function: the
    first ``limit`` of a seeded permutation, sorted (the whole permutation when ``limit`` is None)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(order[:limit]) if limit is not None else order


def first_per_class(dataset: Any, per_class: int) -> list[int]:
    """Indices of the first ``per_class`` samples of each class, in class order (an ImageFolder's ``samples`` order:
    sorted file names), a fixed sample that does not depend on any seed."""
    firsts: dict[int, list[int]] = {}
    for i, (_, label) in enumerate(dataset.samples):
        firsts.setdefault(label, []).append(i)
    return [i for label in sorted(firsts) for i in firsts[label][:per_class]]


def seeded_subset(dataset: torch.utils.data.Dataset, limit: Optional[int], seed: int = 0) -> torch.utils.data.Dataset:
    """``dataset`` restricted to the items :func:`subset_indices` picks (the dataset itself when ``limit`` is None)."""
    if limit is None:
        return dataset
    return torch.utils.data.Subset(dataset, subset_indices(check_dataset(dataset), limit, seed))


def load_batch(dataset: torch.utils.data.Dataset, limit: Optional[int], seed: int = 0,
               skips: Optional[SkipLog] = None) -> tuple[Tensor, Tensor]:
    """The images (N, 3, H, W) and labels (N,) of the ``limit`` items :func:`subset_indices` picks, as one batch;
    unreadable ones go to ``skips``. Raises when none could be read."""
    skips = skips if skips is not None else SkipLog()
    got = list(batches(dataset, max(1, limit or check_dataset(dataset)), limit, seed, skips))
    if not got:
        raise ValueError(f"no readable images in the dataset ({len(skips.paths)} unreadable)")
    return torch.cat([b.images for b in got]), torch.cat([b.labels for b in got])


def batches(dataset: torch.utils.data.Dataset, batch_size: int, limit: Optional[int], seed: int,
            skips: SkipLog, workers: int = 0, pin_memory: bool = False) -> Iterator[Batch]:
    """Batches of the items :func:`subset_indices` picks (all samples, in a seeded order, when ``limit`` is None);
    under ``torchrun``, this process's shard of them (:func:`bagnet.parallel.shard`). ``pin_memory``: page-locked
    batches for fast copies to a GPU."""
    from .parallel import shard

    n = check_dataset(dataset)
    order = shard(subset_indices(n, limit, seed))
    subset = _Indexed(dataset, order)
    loader = torch.utils.data.DataLoader(subset, batch_size=batch_size, collate_fn=collate, num_workers=workers,
                                         generator=torch.Generator().manual_seed(seed), pin_memory=pin_memory)
    for batch in loader:
        skips.add(batch.skipped)
        if len(batch):
            yield batch


def tracked_batches(dataset: torch.utils.data.Dataset, batch_size: int, limit: Optional[int], seed: int,
                    skips: SkipLog, desc: str, progress: bool = True, workers: int = 0,
                    pin_memory: bool = False) -> Iterator[Batch]:
    """:func:`batches` with a progress bar counted in images (rank 0's shard under ``torchrun``); raises when no
    image of the dataset could be read (by any process)."""
    from tqdm.auto import tqdm

    from .parallel import is_main, merged_sum, world

    n = check_dataset(dataset)
    total = min(limit, n) if limit is not None else n
    size = world()[1]
    seen = 0
    with tqdm(total=-(-total // size), desc=desc, unit="img", disable=not progress or not is_main()) as bar:
        for batch in batches(dataset, batch_size, limit, seed, skips, workers, pin_memory):
            yield batch
            seen += len(batch)
            bar.update(len(batch))
    if merged_sum(seen) == 0:
        raise ValueError(f"no readable images in the dataset ({len(skips.paths)} unreadable)")


class _Indexed(torch.utils.data.Dataset):
    """``dataset[order[k]]`` as an ``(image, label, index)`` item: accepts the ``(image, label)`` pairs of torchvision
    and most user datasets as well as bagnet's own triples, and names what is wrong with any other item."""

    def __init__(self, dataset: torch.utils.data.Dataset, order: Sequence[int]) -> None:
        self.dataset, self.order = dataset, list(order)

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, k: int) -> Any:
        index = self.order[k]
        item = self.dataset[index]
        if isinstance(item, Skipped):
            return item
        if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
            got = f"a {type(item).__name__} of {len(item)}" if isinstance(item, (tuple, list)) else type(item).__name__
            raise TypeError(f"dataset item {index} must be (image, label) or (image, label, index), got {got}")
        image, label = item[0], item[1]
        if not isinstance(image, Tensor) or image.dim() != 3:
            what = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
            raise TypeError(f"dataset item {index}: the image must be a tensor (channels, H, W), got {what}; give "
                            "the dataset a transform such as model.preprocess")
        try:
            label = int(label)
        except (TypeError, ValueError):
            raise TypeError(f"dataset item {index}: the label must be a class index, got {label!r}") from None
        return image, label, index
