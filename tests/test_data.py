"""Image decoding of odd files, datasets, and the shared data (marked `data`)."""

import numpy as np
import pytest
from PIL import Image

from bagnet.data import (
    FASHION_MNIST_DEBIAN,
    ImageFolderDataset,
    ImageReadError,
    SkipLog,
    collate,
    default_data_root,
    fashion_mnist,
    imagenette,
    imagenette_classes,
    load_image,
)


def test_rgba_is_composited_on_white(tmp_path):
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 0] = 255
    rgba[:2, :, 3] = 255  # top half opaque red, bottom half fully transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = np.asarray(load_image(tmp_path / "a.png"))
    assert out.shape == (4, 4, 3)
    assert (out[:2] == [255, 0, 0]).all() and (out[2:] == [255, 255, 255]).all()


def test_sixteen_bit_grayscale_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 16384], [32768, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    out = np.asarray(load_image(tmp_path / "g16.png"))[..., 0]
    np.testing.assert_array_equal(out, np.round(values / 65535 * 255).astype(np.uint8))


def test_exif_rotation_is_applied(tmp_path):
    image = Image.new("RGB", (30, 10), (10, 200, 10))
    exif = image.getexif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    image.save(tmp_path / "r.jpg", exif=exif.tobytes())
    assert load_image(tmp_path / "r.jpg").size == (10, 30)


def test_palette_and_grayscale_become_rgb(tmp_path):
    Image.new("P", (5, 5), 3).save(tmp_path / "p.png")
    Image.new("L", (5, 5), 77).save(tmp_path / "l.bmp")
    assert load_image(tmp_path / "p.png").mode == "RGB"
    assert np.asarray(load_image(tmp_path / "l.bmp"))[0, 0].tolist() == [77, 77, 77]


@pytest.mark.parametrize("content", [b"", b"hello, I am text", b"\xff\xd8\xff\xe0 truncated jpeg"])
def test_unreadable_files_raise_a_named_error(tmp_path, content):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageReadError, match="cannot read image .*bad.jpg"):
        load_image(path)


def test_dataset_skips_bad_files_and_collate_reports_them(tmp_path):
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        Image.new("RGB", (8, 8), (1, 2, 3)).save(tmp_path / cls / "ok.png")
    (tmp_path / "b" / "bad.png").write_bytes(b"nope")
    (tmp_path / "a" / "notes.txt").write_text("not an image: ignored by extension")
    from torchvision.transforms import ToTensor

    ds = ImageFolderDataset(tmp_path, ToTensor())
    assert len(ds) == 3 and ds.categories == ["a", "b"]
    batch = collate([ds[i] for i in range(3)])
    assert len(batch) == 2 and batch.images.shape == (2, 3, 8, 8)
    assert [s.path.endswith("bad.png") for s in batch.skipped] == [True]
    messages = []
    log = SkipLog(messages.append)
    log.add(batch.skipped)
    log.add(batch.skipped)  # reported once
    assert len(log) == 1 and len(messages) == 1
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageFolderDataset(tmp_path / "missing")


@pytest.mark.data
def test_imagenette_classes_and_images():
    classes = imagenette_classes()
    assert [c.name for c in classes][:2] == ["tench", "English_springer"]
    assert classes[9].imagenet_index == 701
    val = imagenette("val")
    assert len(val) == 3925 and val.categories[0] == "tench"
    image, label, index = val[0]
    assert image.mode == "RGB" and image.size == (160, 160) and label == 0
    subset = imagenette("train", subset="train_subset300.txt")
    assert len(subset) == 3000


@pytest.mark.skipif(not FASHION_MNIST_DEBIAN.is_dir(), reason="needs Debian's dataset-fashion-mnist package")
def test_fashion_mnist_from_debian_files(tmp_path):
    ds = fashion_mnist("test", cache=tmp_path)
    assert len(ds) == 10_000
    image, label, _ = ds[0]
    assert image.mode == "RGB" and image.size == (28, 28) and ds.categories[label] == "Ankle boot"


def test_default_data_root_honours_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("BAGNET_DATA", str(tmp_path))
    assert default_data_root() == tmp_path


def test_imagenette_is_fetched_from_its_archive_with_a_checked_md5_and_found_without_classes_csv(tmp_path,
                                                                                                  monkeypatch):
    """fetch_imagenette on a local archive laid out like fast.ai's (file:// URL: no network); the official archive
    has no classes.csv, so the ten classes come from the built-in table. A wrong MD5 is refused."""
    import hashlib
    import tarfile

    from PIL import Image

    from bagnet.data import IMAGENETTE_TABLE, fetch_imagenette, imagenette

    src = tmp_path / "src" / "imagenette2-160"
    for split in ("train", "val"):
        for wnid, _, _ in IMAGENETTE_TABLE:
            (src / split / wnid).mkdir(parents=True)
            Image.new("RGB", (40, 30), (10, 200, 30)).save(src / split / wnid / f"{wnid}_1.JPEG")
    archive = tmp_path / "imagenette2-160.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname="imagenette2-160")
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    with pytest.raises(OSError, match="could not fetch Imagenette"):
        fetch_imagenette(tmp_path / "bad", url=archive.as_uri(), md5="0" * 32, progress=False)
    folder = fetch_imagenette(tmp_path / "data", url=archive.as_uri(), md5=md5, progress=False)
    assert folder == tmp_path / "data" / "imagenette2-160" and not (folder / "classes.csv").exists()
    assert fetch_imagenette(tmp_path / "data", url="file:///nonexistent", md5=md5) == folder  # there already
    val = imagenette("val", root=folder)
    assert len(val) == 10 and val.categories[5] == "French_horn"
    # found through BAGNET_DATA, and a missing copy names the command that fetches it
    monkeypatch.setenv("BAGNET_DATA", str(tmp_path / "data"))
    assert len(imagenette("train")) == 10
    monkeypatch.setenv("BAGNET_DATA", str(tmp_path / "nothing"))
    with pytest.raises(FileNotFoundError, match="bagnet fetch imagenette"):
        imagenette("val")


def test_default_data_root_does_not_depend_on_the_installed_package(tmp_path, monkeypatch):
    from bagnet.data import default_data_root, user_data_dir

    monkeypatch.setenv("BAGNET_DATA", str(tmp_path / "mine"))
    assert default_data_root() == tmp_path / "mine"
    monkeypatch.delenv("BAGNET_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert user_data_dir() == tmp_path / "cache" / "bagnet" / "data"
    assert default_data_root() == user_data_dir()  # never derived from where the package lies


def test_download_flag_fetches_imagenette_before_the_command_runs(tmp_path, monkeypatch, capsys):
    """--download on a data-taking command calls the fetch (here refused offline: one error line, exit 1)."""
    import bagnet.data
    from bagnet.cli import main

    calls = []

    def fake_fetch(root=None, **kwargs):
        calls.append(root)
        raise OSError("could not fetch Imagenette (no network)")

    monkeypatch.setattr(bagnet.data, "fetch_imagenette", fake_fetch)
    monkeypatch.setenv("BAGNET_DATA", str(tmp_path))
    assert main(["evaluate", "--model", "default", "--data", "imagenette", "--download", "--out",
                 str(tmp_path / "e")]) == 1
    assert calls == [None] and "could not fetch Imagenette" in capsys.readouterr().err


def _idx_files(folder, gz: bool, counts=(("train", 5), ("t10k", 3))) -> None:
    """Fashion-MNIST's four idx files (tiny, labels 0..n-1), gzipped or not."""
    import gzip
    import struct

    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in counts:
        images = struct.pack(">IIII", 2051, n, 28, 28) + bytes(range(n)) * 784
        labels = struct.pack(">II", 2049, n) + bytes(range(n))
        for name, data in ((f"{prefix}-images-idx3-ubyte", images), (f"{prefix}-labels-idx1-ubyte", labels)):
            if gz:
                with gzip.open(folder / f"{name}.gz", "wb") as f:
                    f.write(data)
            else:
                (folder / name).write_bytes(data)


def test_fashion_mnist_honours_bagnet_data_in_both_layouts(tmp_path, monkeypatch):
    """Like every named dataset, Fashion-MNIST is looked for in $BAGNET_DATA: unpacked (torchvision's layout, read in
    place) or as .gz files (unpacked into the cache, never into the data folder)."""
    from bagnet.data import evaluation_dataset

    unpacked, packed, cache = tmp_path / "unpacked", tmp_path / "packed", tmp_path / "cache"
    _idx_files(unpacked / "FashionMNIST" / "raw", gz=False)
    _idx_files(packed / "fashion-mnist", gz=True)
    monkeypatch.setenv("BAGNET_DATA", str(unpacked))
    assert len(fashion_mnist("train")) == 5 and len(fashion_mnist("test")) == 3
    dataset, categories, name = evaluation_dataset("fashion-mnist")
    assert len(dataset) == 3 and categories[0] == "T-shirt/top" and name == "fashion-mnist/test"
    monkeypatch.setenv("BAGNET_DATA", str(packed))
    before = sorted(p.name for p in (packed / "fashion-mnist").iterdir())
    ds = fashion_mnist("test", cache=cache)
    assert len(ds) == 3 and ds[2][1] == 2 and (cache / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte").is_file()
    assert sorted(p.name for p in (packed / "fashion-mnist").iterdir()) == before  # nothing written there
    monkeypatch.setenv("BAGNET_DATA", str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="fashion-mnist"):
        fashion_mnist("test", cache=tmp_path / "other-cache", source=tmp_path / "nowhere")


def test_training_and_evaluation_take_their_datasets_from_one_catalog(tmp_path):
    from bagnet.data import evaluation_dataset, training_data

    for split, n in (("train", 4), ("val", 2)):
        for c in ("cat", "dog"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (16, 16), (40 * i, 0, 0)).save(tmp_path / split / c / f"{i}.png")
    data = training_data(str(tmp_path), None, None)
    assert (len(data.train), len(data.train_eval), len(data.val)) == (8, 8, 4) and data.categories == ["cat", "dog"]
    val, categories, _ = evaluation_dataset(str(tmp_path))
    assert len(val) == len(data.val) and categories == data.categories
    (tmp_path / "val" / "bird").mkdir()
    Image.new("RGB", (16, 16)).save(tmp_path / "val" / "bird" / "0.png")
    with pytest.raises(ValueError, match="class folders differ"):
        training_data(str(tmp_path), None, None)


def test_the_old_imagenet_module_still_imports_and_warns():
    import importlib
    import sys

    sys.modules.pop("bagnet.imagenet", None)
    with pytest.warns(DeprecationWarning, match="bagnet.data.imagenet"):
        old = importlib.import_module("bagnet.imagenet")
    from bagnet.data.imagenet import ImageNetVal

    assert old.ImageNetVal is ImageNetVal
