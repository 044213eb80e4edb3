"""The data catalog: names → datasets (``imagenette``, ``fashion-mnist``, ``imagenet:ROOT``, a folder), where data
lives (``$BAGNET_DATA``, else the user's cache; never a path derived from where the package is installed), and
fetching Imagenette. Evaluation, training and the experiments all take their datasets from here."""

from __future__ import annotations

import csv
import gzip
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
from PIL import Image
from torchvision import datasets

from ..errors import ConfigError
from .folders import CsvDataset, ImageFolderDataset
from .split import DataSplit
from .images import PathLike

#: Where Debian's dataset-fashion-mnist package puts its files.
FASHION_MNIST_DEBIAN = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)



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


FASHION_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                       "t10k-labels-idx1-ubyte")


def fashion_mnist(
    split: str = "train",
    transform: Optional[Callable[[Image.Image], Any]] = None,
    cache: Optional[PathLike] = None,
    source: Optional[PathLike] = None,
) -> FashionMNISTDataset:
    """Fashion-MNIST, looked for like every named dataset: in ``$BAGNET_DATA`` (or the user's cache), either unpacked
    in torchvision's layout (``FashionMNIST/raw/``) or as the four ``.gz`` files in ``fashion-mnist/``; else in
    Debian's ``dataset-fashion-mnist`` package. ``.gz`` files are gunzipped once into ``cache`` (default: the user's
    cache, never the data folder, which may be read-only); ``source`` names the ``.gz`` folder explicitly."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    split = "train" if split == "train" else "test"
    root = default_data_root()
    if source is None and all((root / "FashionMNIST" / "raw" / name).is_file() for name in FASHION_MNIST_FILES):
        return FashionMNISTDataset(split, transform, root)  # unpacked where the data lives: read in place
    cache = Path(cache) if cache is not None else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "bagnet"
    raw = cache / "FashionMNIST" / "raw"
    if source is None:
        here = root / "fashion-mnist"
        source = here if all((here / f"{name}.gz").is_file() for name in FASHION_MNIST_FILES) else FASHION_MNIST_DEBIAN
    for name in FASHION_MNIST_FILES:
        if (raw / name).is_file():
            continue
        gz = Path(source) / f"{name}.gz"
        if not gz.is_file():
            raise FileNotFoundError(
                f"Fashion-MNIST file {gz} not found: put the four .gz files in {root / 'fashion-mnist'} (or set "
                f"BAGNET_DATA to the folder that holds fashion-mnist/), or install Debian's: apt-get install "
                f"dataset-fashion-mnist")
        raw.mkdir(parents=True, exist_ok=True)
        tmp = raw / f"{name}.tmp"
        with gzip.open(gz, "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.replace(tmp, raw / name)
    return FashionMNISTDataset(split, transform, cache)


@dataclass(frozen=True)
class TrainingData:
    """The datasets a training run needs: training images with the training transform, the same images with the
    evaluation transform (for a hold-out), the validation split, the class names, and a test split when there is
    one (a single folder split with a test fraction)."""

    train: torch.utils.data.Dataset
    train_eval: torch.utils.data.Dataset
    val: torch.utils.data.Dataset
    categories: list[str]
    test: Optional[torch.utils.data.Dataset] = None


def training_data(spec: str, train_transform: Optional[Callable[[Image.Image], Any]],
                  eval_transform: Optional[Callable[[Image.Image], Any]], subset: Optional[str] = None, *,
                  classes: Optional[Sequence[str]] = None, split: Optional[DataSplit] = None,
                  window: Optional[tuple[float, float]] = None) -> TrainingData:
    """The training and validation datasets a ``--data`` names: ``imagenette`` (train / val; ``subset`` names one of
    its list files), ``fashion-mnist`` (train / test), a folder holding ``train/`` and ``val/`` class folders, or one
    folder of class folders divided by ``split`` (:func:`bagnet.data.split.split_folder`). ``classes`` orders the
    labels of folder data (default: sorted folder names); ``window`` scales the 16-bit and float images of folder
    and table data (:func:`bagnet.data.images.window_to_8bit`)."""
    if window is not None and spec in ("imagenette", "fashion-mnist"):
        raise ConfigError(f"an intensity window applies to 16-bit or float images of your own folder or label table; "
                          f"{spec} is 8-bit", "intensity_window")
    if spec == "imagenette":
        train = imagenette("train", train_transform, subset=subset)
        return TrainingData(train, imagenette("train", eval_transform, subset=subset), imagenette("val", eval_transform),
                            list(train.categories))
    if spec == "fashion-mnist":
        train = fashion_mnist("train", train_transform)
        return TrainingData(train, fashion_mnist("train", eval_transform), fashion_mnist("test", eval_transform),
                            list(train.categories))
    root = Path(spec)
    if split is not None:
        def part(files: list[str], transform: Optional[Callable[[Image.Image], Any]]) -> torch.utils.data.Dataset:
            return split_dataset(split, files, transform, window)

        return TrainingData(part(split.train, train_transform), part(split.train, eval_transform),
                            part(split.val, eval_transform), list(split.classes),
                            part(split.test, eval_transform) if split.test else None)
    if root.is_dir() and not ((root / "train").is_dir() and (root / "val").is_dir()):
        raise unsplit_folder(root)
    train = ImageFolderDataset(root / "train", train_transform, classes=classes, window=window)
    val = ImageFolderDataset(root / "val", eval_transform, classes=classes, window=window)
    if train.classes != val.classes:
        raise ValueError(f"class folders differ between {root / 'train'} and {root / 'val'}")
    return TrainingData(train, ImageFolderDataset(root / "train", eval_transform, classes=classes, window=window), val,
                        list(train.categories))


def split_dataset(split: DataSplit, files: Sequence[str], transform: Optional[Callable[[Image.Image], Any]] = None,
                  window: Optional[tuple[float, float]] = None) -> torch.utils.data.Dataset:
    """The images ``files`` of a :class:`DataSplit`, from its folder or its label table, labelled in its class order
    (``window``: the intensity window of 16-bit and float images)."""
    if split.source == "csv":
        return CsvDataset(split.root, transform, classes=split.classes, samples=files, window=window)
    return ImageFolderDataset(split.root, transform, samples=files, classes=split.classes, window=window)


def unsplit_folder(root: Path) -> ConfigError:
    """The error for training data that is one folder of class folders, given without the flag that splits it."""
    return ConfigError(f"{root} has no train/ and val/ folders: to train on one folder of class folders, let bagnet "
                       f"split it with --val-fraction (e.g. 0.2; and --test-fraction for a test split)", "val_fraction")


def evaluation_dataset(
    spec: str, transform: Optional[Callable[[Image.Image], Any]] = None
) -> tuple[torch.utils.data.Dataset, list[str], str]:
    """The dataset a CLI ``--data`` names, for evaluation: ``imagenette`` (its val split), ``fashion-mnist`` (its
    test split), ``imagenet:ROOT`` (the ImageNet validation split in any of the layouts of :mod:`bagnet.data.imagenet`),
    a training run's folder holding ``split.json`` (its test split, else its val split: the images it never trained
    on) or an ImageFolder folder (its ``val/`` sub-folder when there is one). Returns it with its class names and a
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
    if (root / "split.json").is_file():  # a training run that split one folder: its test split (else val)
        split = DataSplit.load(root / "split.json")
        part = "test" if split.test else "val"
        ds = split_dataset(split, split.files(part), transform, None if split.window is None else tuple(split.window))
        return ds, ds.categories, f"{split.root} ({part} split of {root})"  # type: ignore[attr-defined]
    if root.suffix.lower() == ".csv" and root.is_file():  # a label table: every image it lists
        table = CsvDataset(root, transform)
        return table, table.categories, str(root)
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
