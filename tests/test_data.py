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
