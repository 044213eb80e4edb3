"""The interactive explanation page (issue 33): its data against explanations.json and against the model run patch
by patch; anonymised output; nearest patches from a patch index; and the page as a person uses it, in Chromium."""

import base64
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import bagnet
from bagnet.cli import main
from bagnet.explanation import ExplainConfig, explain
from bagnet.report import colour_indices

MODEL = "bagnet17:imagenette"


def payload_of(page: str) -> dict:
    match = re.search(r'<script type="application/json" id="bagnet-data">(.*?)</script>', page, re.S)
    assert match, "the page holds no data"
    return json.loads(match.group(1))


def decode(b64: str, dtype: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(b64), dtype=dtype)


def grey_png(uri: str) -> np.ndarray:
    assert uri.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Two small photos of different shapes (scikit-image's), under a folder and file names that must not leak."""
    from skimage import data

    root = tmp_path_factory.mktemp("hospital_ward_7")
    Image.fromarray(data.chelsea()).resize((150, 100)).save(root / "patient_4711_scan.png")
    Image.fromarray(data.coffee()).resize((96, 128)).save(root / "patient_4712_scan.jpg")
    (root / "patient_4713_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return root


@pytest.fixture(scope="module")
def explained(photos, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report")
    result = explain(photos, MODEL, ExplainConfig(top=3, stride=4, patches=3), progress=False)
    assert len(result.images) == 2 and len(result.failures) == 1
    result.save(out)
    return out


def test_page_data_are_the_explanations_and_the_evidence_is_exact(explained):
    """Cell evidence in the page = explanations.json (float32, bit for bit) = the model on each patch alone; the
    cells' mean is the logit; each per-pixel map is the colour-scale index of the full map, exactly."""
    model = bagnet.load(MODEL).eval()
    data = json.loads((explained / "explanations.json").read_text())
    page = payload_of((explained / "report.html").read_text())
    assert page["patch_size"] == 17 and page["stride"] == 8 and page["origin"] == data["origin"] == 0
    for n, (img, shown) in enumerate(zip(data["images"], page["images"])):
        gh, gw = img["grid"]
        assert shown["grid"] == [gh, gw] and [shown["w"], shown["h"]] == img["size"]
        cells = decode(shown["cells"], "<f4").reshape(len(img["predictions"]), gh, gw)
        pixels = np.asarray(Image.open(explained / "images" / sorted(p.name for p in (explained / "images")
                                                                      .iterdir())[n] / "input.png"))
        x = model.preprocess.normalize(torch.from_numpy(pixels.copy()).permute(2, 0, 1).float() / 255)
        for k, pred in enumerate(img["predictions"]):
            ev = np.asarray(pred["evidence"], dtype=np.float32)
            assert np.array_equal(cells[k], ev), "the page's numbers differ from explanations.json"
            assert abs(float(ev.astype(np.float64).mean()) - pred["logit"]) < 1e-4  # the logit is the cells' mean
            c = pred["class"]
            with torch.no_grad():  # independent reference: the network on the lone q×q patch of a few cells
                for i, j in ((0, 0), (gh // 2, gw - 1), (gh - 1, gw // 2)):
                    alone = model.evidence(x[None, :, 8 * i:8 * i + 17, 8 * j:8 * j + 17])[0, c]
                    assert alone.shape == (1, 1) and abs(float(alone) - float(ev[i, j])) < 1e-3
            scale = pred["colour_scale"]
            assert shown["classes"][k]["scale"] == scale and shown["classes"][k]["name"] == pred["name"]
            indices = grey_png(shown["classes"][k]["map"])
            with torch.no_grad():
                dense = bagnet.heatmap(model, x[None], [c], stride=4, upsample="bilinear")[0, 0].numpy()
            expected = colour_indices(dense, scale).astype(int)
            assert indices.shape == expected.shape and np.abs(indices.astype(int) - expected).max() <= 1
            assert (indices.astype(int) == expected).mean() > 0.99  # off by one only where rounding ties differ


def test_colour_indices_stay_within_half_a_colour_step():
    rng = np.random.default_rng(0)
    values = rng.normal(0, 3, (40, 50))
    scale = 2.5
    idx = colour_indices(values, scale).astype(float)
    back = (idx / 255 * 2 - 1) * scale
    assert np.abs(back - np.clip(values, -scale, scale)).max() <= scale / 255 + 1e-12
    assert colour_indices(np.array([[-9.0, 0.0, 9.0]]), 1.0).tolist() == [[0, 128, 255]]


def test_the_report_is_one_offline_file_within_its_byte_budget(explained):
    page = (explained / "report.html").read_text()
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert not re.search(r"(src|href)=\"(?!data:|#)", page), "the page refers to something outside itself"
    assert "http://" not in page and "https://" not in page
    # the budget: at most 1 MB per image for the top-3 classes at the model's own resolution
    assert len(page.encode()) / 2 < 1_000_000


def test_anonymised_output_names_no_file_or_folder(photos, tmp_path):
    out = tmp_path / "shared"
    code = main(["explain", str(photos), "--model", MODEL, "--stride", "8", "--top", "2", "--anonymise",
                 "--out", str(out), "--no-progress"])
    assert code == 1  # the broken file failed; the others were explained
    written = [p for p in out.rglob("*") if p.is_file() and p.name != ".bagnet.lock"]
    assert {p.name for p in written} >= {"report.html", "explanations.json", "predictions.csv"}
    for p in written:
        assert not any(word in p.as_posix()[len(str(out)):] for word in ("patient", "hospital")), p
        if p.suffix in (".html", ".json", ".csv"):
            text = p.read_text(encoding="utf-8")
            for secret in ("patient_47", "hospital_ward", str(photos)):
                assert secret not in text, (p.name, secret)
    data = json.loads((out / "explanations.json").read_text())
    assert [e["source"] for e in data["images"]] == ["image 1", "image 2"]
    assert list(data["failures"]) == ["failed 1"] and data["model"] == "bagnet17"
    assert "image 1" in (out / "report.html").read_text()


def test_nearest_patches_of_every_cell_come_from_the_index(photos, tmp_path):
    """With --index the page carries, per cell, the index's nearest patches: checked against brute force over
    features computed image by image, and against the index's own `like`."""
    from bagnet.patches import IndexConfig, PatchIndex, build_index

    model = bagnet.load(MODEL).eval()
    data_dir = tmp_path / "data"
    for c, name in enumerate(("a", "b")):
        (data_dir / name).mkdir(parents=True)
        rng = np.random.default_rng(c)
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (64, 64, 3)).astype(np.uint8)).save(data_dir / name / f"{i}.png")
    ds = bagnet.data.evaluation_dataset(str(data_dir), model.preprocess)[0]
    build_index(model, ds, tmp_path / "index", IndexConfig(), progress=False, log=lambda m: None)
    index = PatchIndex.load(tmp_path / "index")
    query = photos / "patient_4711_scan.png"
    result = explain([str(query)], model, ExplainConfig(top=2, stride=8, index=str(tmp_path / "index"),
                                                        neighbours=3), progress=False)
    near = result.images[0].neighbours
    gh, gw = result.images[0].evidence.shape[1:]
    assert near.ids.shape == (gh, gw, 3) and len(near.crops) == len(near.patches)
    # brute force: every indexed patch's normalised feature, image by image, against the query's cells
    vectors, where = [], []
    with torch.no_grad():
        for k in range(len(ds)):
            f = model.forward_features(ds[k][0][None])[0]
            f = f / f.norm(dim=0, keepdim=True)
            for i in range(f.shape[1]):
                for j in range(f.shape[2]):
                    vectors.append(f[:, i, j].numpy())
                    where.append((ds.samples[k][0], i, j))
        x = model.preprocess.normalize(torch.from_numpy(result.images[0].image).permute(2, 0, 1).float() / 255)
        q = model.forward_features(x[None])[0]
    vectors = np.stack(vectors)
    for i, j in ((0, 0), (gh - 1, gw - 1), (gh // 2, gw // 2)):
        v = (q[:, i, j] / q[:, i, j].norm()).numpy()
        sims = vectors @ v
        best_per_image: dict[str, float] = {}
        for s, (src, _, _) in zip(sims, where):
            best_per_image[src] = max(best_per_image.get(src, -2.0), float(s))
        expected = sorted(best_per_image.values(), reverse=True)[:3]
        got = near.scores[i, j]
        assert np.allclose(got, expected, atol=1e-4), (got, expected)
        first = near.patches[near.ids[i, j, 0]]
        fi, fj = first["cell"]
        assert first["source"] in best_per_image and abs(best_per_image[first["source"]] - got[0]) < 1e-4
        assert abs(float(vectors[where.index((first["source"], fi, fj))] @ v) - got[0]) < 1e-4
    crop = near.crops[0]
    assert crop.shape == (17, 17, 3) and crop.dtype == np.uint8
    out = result.save(tmp_path / "out")
    shown = payload_of((out / "report.html").read_text())["images"][0]["neighbours"]
    assert shown["k"] == 3 and len(shown["patches"]) == len(near.patches)
    assert np.array_equal(decode(shown["ids"], "<i4"), near.ids.reshape(-1))
    assert index.manifest.patches == len(vectors)


def test_an_index_of_another_model_is_refused_by_name(photos, tmp_path, capsys):
    from bagnet.patches import IndexConfig, build_index

    data_dir = tmp_path / "d" / "only"
    data_dir.mkdir(parents=True)
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(data_dir / "0.png")
    other = bagnet.load("bagnet9:imagenette")
    build_index(other, bagnet.data.evaluation_dataset(str(data_dir.parent), other.preprocess)[0], tmp_path / "idx",
                IndexConfig(), progress=False, log=lambda m: None)
    code = main(["explain", str(photos / "patient_4711_scan.png"), "--model", MODEL, "--index", str(tmp_path / "idx"),
                 "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and not (tmp_path / "out" / "report.html").exists()
    assert str(tmp_path / "idx") in err and "bagnet9" in err and err.count("\n") <= 2


# ---------------------------------------------------------------------------------------------------- in Chromium
def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no Chromium on this machine (Debian: apt-get install chromium; .ci/run installs it)")


@pytest.mark.slow
def test_pointing_and_clicking_in_chromium(explained, artifacts_dir):
    """As a person uses it: hover moves the outline and the bars, the numbers are explanations.json's, a click pins
    the patch, the class selector switches the map, a patch chip selects its cell, no request leaves the page;
    screenshots at two window sizes kept as test artifacts."""
    chromium = _chromium()
    playwright = pytest.importorskip("playwright.sync_api", reason="needs playwright (pip install playwright)")
    data = json.loads((explained / "explanations.json").read_text())
    requests, errors = [], []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("request", lambda r: requests.append(r.url))
        page.on("console", lambda m: errors.append(m.text) if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto((explained / "report.html").as_uri())
        page.wait_for_load_state("load")
        sections = page.locator("section.image").all()
        for each in sections:  # each map is drawn when its image comes into view; the index's thumbnails decode
            each.scroll_into_view_if_needed()
            each.locator(".stage[data-v]").wait_for()
        page.wait_for_function(f"document.querySelectorAll('section.image[data-drawn]').length === {len(sections)}")
        page.evaluate("window.scrollTo(0, 0)")
        page.wait_for_function("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
        headings = page.evaluate("Array.from(document.querySelectorAll('h2')).map(h => h.textContent)")
        assert len(sections) == 2 and page.evaluate("document.images.length") == 2
        assert "Not explained" in headings and "patient_4711_scan.png" in headings
        page.screenshot(path=str(artifacts_dir / "explain_report.png"), full_page=True)
        section = page.locator("#img0")
        stage = section.locator(".stage")
        stage.scroll_into_view_if_needed()
        page.wait_for_selector("#img0[data-drawn='0']")
        box = stage.bounding_box()
        img = data["images"][0]
        w, h = img["size"]
        gh, gw = img["grid"]

        def point(px: float, py: float, click: bool = False) -> None:
            x, y = box["x"] + (px + 0.5) * box["width"] / w, box["y"] + (py + 0.5) * box["height"] / h
            page.mouse.click(x, y) if click else page.mouse.move(x, y)

        def shown() -> tuple[tuple[int, int], list[float], dict]:
            cell = tuple(int(v) for v in section.get_attribute("data-cell").split(","))
            values = [float(r.get_attribute("data-evidence")) for r in section.locator("tr.ev").all()]
            outline = section.locator(".outline").evaluate(
                "e => ({top: parseFloat(e.style.top), left: parseFloat(e.style.left), "
                "width: parseFloat(e.style.width)})")
            return cell, values, outline

        for (py, px) in ((8, 8), (h - 9, w - 9), (h // 2, 20)):
            point(px, py)
            cell, values, outline = shown()
            i, j = cell
            # the pointed pixel's patch: the cell whose patch centre is nearest (centre of cell i at row 8 i + 8)
            assert (i, j) == (min(max(round((py - 8) / 8), 0), gh - 1), min(max(round((px - 8) / 8), 0), gw - 1))
            assert values == [pred["evidence"][i][j] for pred in img["predictions"]]  # explanations.json's numbers
            assert outline == {"top": pytest.approx(100 * 8 * i / h, abs=1e-3),  # percent of the image
                               "left": pytest.approx(100 * 8 * j / w, abs=1e-3),
                               "width": pytest.approx(100 * 17 / w, abs=1e-3)}
            shares = [float(r.get_attribute("data-share")) for r in section.locator("tr.ev").all()]
            assert shares == pytest.approx([pred["evidence"][i][j] / (gh * gw) / pred["logit"]
                                            for pred in img["predictions"]], rel=1e-5)
        point(8, 8, click=True)
        assert stage.get_attribute("data-pinned") == "1" and section.get_attribute("data-cell") == "0,0"
        point(w - 9, h - 9)  # pinned: hovering elsewhere changes nothing
        assert section.get_attribute("data-cell") == "0,0"
        page.screenshot(path=str(artifacts_dir / "report_page_wide.png"), full_page=False)
        before = stage.locator("canvas").evaluate("c => c.toDataURL()")
        section.locator("input[value='1']").check()
        page.wait_for_selector("#img0[data-drawn='1']")
        assert section.locator("tr.ev.sel").get_attribute("data-class") == "1"
        assert stage.locator("canvas").evaluate("c => c.toDataURL()") != before  # another class, another map
        chip = section.locator(".chips canvas").first
        chip_cell = chip.get_attribute("data-cell")
        chip.click()
        assert section.get_attribute("data-cell") == chip_cell
        page.keyboard.press("ArrowRight")
        i, j = (int(v) for v in chip_cell.split(","))
        assert section.get_attribute("data-cell") == f"{i},{min(j + 1, gw - 1)}"
        page.set_viewport_size({"width": 420, "height": 860})
        stage.scroll_into_view_if_needed()
        page.screenshot(path=str(artifacts_dir / "report_page_narrow.png"), full_page=False)
        browser.close()
    assert errors == []
    assert requests == [(explained / "report.html").as_uri()], requests  # nothing but the page itself
    for name in ("report_page_wide.png", "report_page_narrow.png"):
        assert (artifacts_dir / name).stat().st_size > 10_000


def test_hostile_file_names_cannot_break_out_of_the_page(tmp_path):
    """A file called ``x<!--<script><img src=y onerror=alert(1)>.png`` stays text: escaped in the HTML, escaped in
    the page's JSON (which still parses whole: ``<!--<script`` inside a script element would otherwise swallow the
    rest of the page), and no element comes of it."""
    from skimage import data

    name = "x<!--<script><img src=y onerror=alert(1)>.png"
    Image.fromarray(data.astronaut()).resize((64, 64)).save(tmp_path / name)
    result = explain([str(tmp_path / name)], MODEL, ExplainConfig(top=1, stride=8, patches=1), progress=False)
    out = result.save(tmp_path / "out")
    page = (out / "report.html").read_text()
    assert "<img src=y" not in page and "<!--<script" not in page and page.count("</script>") == 2
    assert payload_of(page)["images"][0]["classes"][0]["name"] == result.images[0].names[0]
    assert "&lt;img src=y onerror=alert(1)&gt;.png" in page
