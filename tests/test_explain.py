"""bagnet explain / patches: any image a user has, overlays that show the map, the report in a real browser."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import bagnet
from bagnet.cli import main
from bagnet.explanation import ExplainConfig, explain, explain_image
from bagnet.gallery import class_patches
from bagnet.viz import overlay_rgb


def chelsea() -> Image.Image:
    from bagnet.data import sample_image

    return sample_image("chelsea")


def tiny_bagnet(path: Path, q: int = 17, classes: int = 3, size: int = 48) -> Path:
    model = bagnet.BagNet(bagnet.BagNetConfig.for_patch_size(q, layers=(1, 1, 1, 1), width=8, num_classes=classes))
    meta = {"categories": [f"class{c}" for c in range(classes)], "preprocess": {"resize": size, "crop": size}}
    return bagnet.save_weights(model, path, meta)


@pytest.fixture(scope="module")
def odd_folder(tmp_path_factory) -> Path:
    """Good images in every format and mode a user may have, and files that cannot be explained."""
    d = tmp_path_factory.mktemp("odd")
    photo = chelsea().resize((150, 100))
    photo.save(d / "photo.jpg", quality=90)
    photo.save(d / "photo.webp")
    photo.save(d / "photo.bmp")
    photo.save(d / "photo.tiff")
    photo.convert("L").save(d / "grey.png")
    photo.convert("P", palette=Image.ADAPTIVE).save(d / "palette.png")
    rgba = photo.convert("RGBA")
    alpha = np.zeros((100, 150), np.uint8)
    alpha[:, 75:] = 255  # left half transparent: composited on white
    rgba.putalpha(Image.fromarray(alpha))
    rgba.save(d / "rgba.png")
    sixteen = Image.fromarray(np.asarray(photo.convert("L"), np.uint16) * 257)
    assert sixteen.mode.startswith("I;16")
    sixteen.save(d / "sixteen.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    photo.save(d / "rotated.jpg", exif=exif.tobytes())
    Image.new("RGB", (1, 1), (200, 30, 30)).save(d / "one_pixel.png")
    (d / "notes.jpg").write_text("this is a text file with an image name")
    good = (d / "photo.jpg").read_bytes()
    (d / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (d / "README.txt").write_text("not an image extension: ignored when a folder is searched")
    return d


@pytest.mark.slow
def test_explain_cli_on_odd_files_reports_failures_by_name_and_runs_the_rest(odd_folder, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["explain", str(odd_folder), "--out", str(out), "--stride", "4", "--top", "2", "--no-progress"])
    captured = capsys.readouterr()
    assert code == 1
    for name in ("one_pixel.png", "notes.jpg"):
        assert name in captured.err, name
    assert "smaller than" in captured.err and "--upscale-small" in captured.err
    data = json.loads((out / "explanations.json").read_text())
    explained = {Path(e["source"]).name: e for e in data["images"]}
    expected = {"photo.jpg", "photo.webp", "photo.bmp", "photo.tiff", "grey.png", "palette.png", "rgba.png",
                "sixteen.png", "rotated.jpg"}
    assert expected <= set(explained)
    # a JPEG cut to a third is refused (PIL decodes partial files only when told to: the loader never tells it)
    assert set(explained) == expected
    assert {Path(s).name for s in data["failures"]} == {"one_pixel.png", "notes.jpg", "truncated.jpg"}
    assert "truncated.jpg" in captured.err
    # the EXIF rotation is applied: a 150×100 file shown upright is 100 wide, 150 high (then scaled to the model)
    w, h = explained["rotated.jpg"]["size"]
    assert h > w and explained["photo.jpg"]["size"][0] > explained["photo.jpg"]["size"][1]
    for e in explained.values():
        assert len(e["predictions"]) == 2 and 0 < e["predictions"][0]["probability"] <= 1
    html = (out / "report.html").read_text()
    payload = json.loads(re.search(r'id="bagnet-data">(.*?)</script>', html, re.S).group(1))
    assert len(payload["images"]) == len(expected) and all(len(i["classes"]) == 2 for i in payload["images"])
    assert all(c["map"].startswith("data:image/png;base64,") for i in payload["images"] for c in i["classes"])
    assert "one_pixel.png" in html and "Not explained" in html and "http" not in html.replace("http-equiv", "")
    assert len(list((out / "images").glob("*/evidence_*.png"))) == 2 * len(explained)


def test_rgba_is_composited_on_white_and_sixteen_bit_scaled(odd_folder):
    from bagnet.data import load_image

    rgba = np.asarray(load_image(odd_folder / "rgba.png"))
    assert (rgba[:, :70] == 255).all()  # transparent half: white
    sixteen = np.asarray(load_image(odd_folder / "sixteen.png"))
    grey = np.asarray(load_image(odd_folder / "grey.png")).astype(float)
    # 16-bit grey is scaled by its own range (issue 30: never by the container's maximum alone): the 8-bit photo's
    # grey levels, stretched from their minimum and maximum to 0 and 255
    stretched = (grey - grey.min()) * 255 / (grey.max() - grey.min())
    assert np.abs(sixteen.astype(float) - stretched).max() <= 1


def test_tiny_image_upscaled_on_request_and_huge_image_scaled_to_the_limit(tmp_path):
    model = bagnet.load("default")
    tiny = Image.new("RGB", (5, 3), (30, 200, 30))
    with pytest.raises(ValueError, match=r"5×3 px is smaller than .*33×33"):
        explain_image(model, tiny, "tiny.png", ExplainConfig(size=0))
    e = explain_image(model, tiny, "tiny.png", ExplainConfig(size=0, upscale_small=True, stride=8))
    assert min(e.image.shape[:2]) == 33 and e.notes
    huge = Image.new("RGB", (3000, 2000), (90, 90, 200))
    e = explain_image(model, huge, "huge.png", ExplainConfig(size=0, max_side=256, stride=8))
    assert e.image.shape[:2] == (171, 256) and "long side limit 256" in " ".join(e.notes)
    e = explain_image(model, huge, "huge.png", ExplainConfig(stride=8))  # default: the model's own scale, 128 px
    assert e.image.shape[:2] == (128, 192)


def test_overlay_pixels_follow_the_heatmap_and_the_top_patch_is_where_the_map_peaks():
    model = bagnet.load("default")
    e = explain_image(model, chelsea(), "chelsea", ExplainConfig(top=1, stride=1, patches=3))
    hm = e.heatmaps[0]
    q, s = model.patch_size, model.stride
    c = (q - 1) // 2
    # the heatmap at patch centres is the stride-8 evidence: its largest value there is the top patch
    h, w = model.evidence_size(*e.image.shape[:2])
    centres = hm[c : c + s * h : s, c : c + s * w : s]
    i, j = np.unravel_index(centres.argmax(), centres.shape)
    top = e.support[0][0]
    assert top.box == model.patch_box(i, j)
    assert top.evidence == pytest.approx(float(centres.max()), rel=1e-4, abs=1e-4)
    assert e.oppose[0][0].evidence == pytest.approx(float(centres.min()), rel=1e-4, abs=1e-4)
    # the overlay is reddest where the map is largest and bluest where it is smallest
    rgb = overlay_rgb(e.image, hm)
    redness = rgb[..., 0] - rgb[..., 2]
    ymax, xmax = np.unravel_index(hm.argmax(), hm.shape)
    ymin, xmin = np.unravel_index(hm.argmin(), hm.shape)
    assert redness[ymax, xmax] == pytest.approx(redness.max())
    assert redness[ymin, xmin] == pytest.approx(redness.min())
    assert redness.max() > 0.5 and redness.min() < -0.5
    # and its colours are monotone in the evidence (after the percentile clipping)
    order = np.argsort(hm.ravel())
    assert np.corrcoef(hm.ravel()[order], redness.ravel()[order])[0, 1] > 0.9


def test_explain_api_accepts_pil_images_files_and_reports_missing_ones(tmp_path):
    weights = tiny_bagnet(tmp_path / "tiny.safetensors")
    chelsea().save(tmp_path / "cat.png")
    result = explain([chelsea(), tmp_path / "cat.png", tmp_path / "missing.png"], str(weights),
                     ExplainConfig(top=2, stride=2), progress=False)
    assert len(result.images) == 2 and list(result.failures) == [str(tmp_path / "missing.png")]
    a, b = result.images
    assert a.classes == b.classes and np.allclose(a.probabilities, b.probabilities, atol=1e-3)
    assert a.heatmaps.shape == (2, *a.image.shape[:2])
    out = result.save(tmp_path / "out")
    assert (out / "predictions.csv").read_text().count("\n") == 2 * 2 + 1 + 1
    with pytest.raises(ValueError, match=r"need a (bagnet\.)?BagNet"):
        explain([chelsea()], torch.nn.Linear(2, 2))  # type: ignore[arg-type]


def test_patches_gallery_finds_each_images_best_cell(tmp_path, capsys):
    from bagnet.data import evaluation_dataset

    data = tmp_path / "data" / "val"
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (data / c).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(data / c / f"{i}.png")
    weights = tiny_bagnet(tmp_path / "tiny.safetensors", classes=2)
    model = bagnet.load(str(weights))
    dataset, _, _ = evaluation_dataset(str(tmp_path / "data"), model.preprocess)
    gallery = class_patches(model, dataset, per_class=3, batch_size=4, progress=False)
    assert gallery.images == 10 and gallery.top_crops.shape == (2, 3, 17, 17, 3)
    for c in range(2):
        assert gallery.top_values[c] == sorted(gallery.top_values[c], reverse=True)
        assert gallery.bottom_values[c] == sorted(gallery.bottom_values[c])
        assert len(set(gallery.top_sources[c])) == 3  # one patch per image
        # independent check: the source image's evidence map has this value as its maximum, at this box
        src = gallery.top_sources[c][0]
        x = model.preprocess(Image.open(src)).unsqueeze(0)
        with torch.no_grad():
            ev = model.evidence(x)[0, c]
        i, j = divmod(int(ev.argmax()), ev.shape[1])
        assert model.patch_box(i, j) == gallery.top_boxes[c][0]
        assert float(ev.max()) == pytest.approx(gallery.top_values[c][0], rel=1e-5, abs=1e-6)
        img = np.asarray(Image.open(src).convert("RGB"))
        t, l, b, r = gallery.top_boxes[c][0]
        assert np.abs(gallery.top_crops[c][0].astype(int) - img[t:b, l:r].astype(int)).max() <= 1
    code = main(["patches", "--data", str(tmp_path / "data"), "--model", str(weights), "--per-class", "2", "--out",
                 str(tmp_path / "g"), "--no-progress"])
    assert code == 0 and (tmp_path / "g" / "gallery.png").is_file() and (tmp_path / "g" / "report.html").is_file()
    # the data given positionally, as before 0.2: still read, with a note naming the flag
    code = main(["patches", str(tmp_path / "data"), "--model", str(weights), "--per-class", "1", "--out",
                 str(tmp_path / "g1"), "--no-progress"])
    assert code == 0 and (tmp_path / "g1" / "gallery.png").is_file()
    assert "deprecated (removed in 0.3); write --data" in capsys.readouterr().err


def test_main_job_explains_the_sample_photos_offline(tmp_path, capsys):
    """What scripts/main.sh runs (here at stride 8 to keep it quick): the embedded default, no network."""
    code = main(["explain", "--samples", "--stride", "8", "--out", str(tmp_path / "out"), "--no-progress"])
    text = capsys.readouterr().out
    assert code == 0
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        assert f"skimage.data.{name}()" in text
    data = json.loads((tmp_path / "out" / "explanations.json").read_text())
    assert data["model"] == "bagnet33" and len(data["images"]) == 4 and not data["failures"]
    for e in data["images"]:
        probs = [p["probability"] for p in e["predictions"]]
        assert probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
