"""The shortcut audit: its sums checked by hand on features whose strategy is known by construction, and the
planted-shortcut proof: a model that learned a stamped mark has a top strategy on the mark; a model trained on
clean data has none."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import bagnet
from bagnet.audit import audit
from bagnet.audit.collect import Tally, tally
from bagnet.train import TrainConfig, train

SIDE, MARK = 48, 6  # the mark covers 36 of 2304 pixels: 1.6 % of the image


def test_tally_sums_what_each_strategy_carries_exactly():
    """Two images of a 2×2 grid, two classes, one positive strategy per class; features are the strategies' own
    centroids (members) or orthogonal to both (no one's)."""
    D = 3
    centroids = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]])  # strategy 0: class 0; strategy 1: class 1
    radii = torch.tensor([0.9, 0.9])
    feats = torch.zeros(2, 2, 2, D)
    feats[0, 0, 0] = centroids[0]  # image 0 (class 0): cell (0,0) is strategy 0's, cell (1,1) strategy 1's
    feats[0, 1, 1] = centroids[1]
    feats[0, 0, 1] = feats[0, 1, 0] = torch.tensor([0, 0, 1.0])
    feats[1] = torch.tensor([0, 0, 1.0])  # image 1 (class 1): no member anywhere ...
    feats[1, 0, 0] = centroids[1]  # ... but cell (0,0), strategy 1's
    evidence = torch.tensor([[[[4.0, 1.0], [1.0, -2.0]], [[0.0, 1.0], [1.0, 2.0]]],     # image 0: class 0, class 1
                             [[[1.0, 1.0], [1.0, 1.0]], [[6.0, 1.0], [1.0, 0.0]]]])    # image 1
    bias = torch.tensor([0.0, 0.1])
    t = tally(iter([(torch.tensor([0, 1]), torch.tensor([0, 1]), feats, evidence)]), centroids, radii,
              Tally([("positive", 0, 0), ("positive", 1, 0)], (2, 2), 2, threshold=0.5), bias)
    # strategy 0 in image 0: 4 of class 0's positive evidence 4+1+1 = 6; strategy 1 in image 1: 6 of 6+1+1 = 8
    np.testing.assert_allclose(t.mass, [4.0, 6.0])
    # strategy 0 appears in image 0 (4/6); strategy 1 in image 1 (6/8) and in image 0 too (2 of class 1's 4 there)
    assert t.occurs.tolist() == [[1, 0], [1, 1]]
    assert t.others == {1: [(0.5, 0, 0)]}  # strategy 1 fires on image 0, of class 0, with half of its evidence
    assert t.class_images.tolist() == [1, 1]
    np.testing.assert_allclose(t.positions[0], [[4, 0], [0, 0]])
    np.testing.assert_allclose(t.positions[1], [[6, 0], [0, 0]])
    # logits: image 0 (1, 1.1) → predicts 1 (wrong); image 1 (1, 2.1) → 1 (right): accuracy 1/2
    assert (t.correct, t.images) == (1, 2)
    # without strategy 0 (cell (0,0) of image 0): image 0 → (0, 1.43): still 1, wrong; image 1 unchanged: right
    # without strategy 1 (cell (1,1) of image 0, cell (0,0) of image 1): image 0 → (2, 0.77): right; image 1 → (1, 0.77):
    # wrong
    assert t.correct_without.tolist() == [1, 1]
    # on each strategy's own class: image 0 (class 0) is wrong anyway, image 1 (class 1) turns wrong without strategy 1
    assert t.class_correct.tolist() == [0, 1] and t.class_correct_without.tolist() == [0, 0]
    # both images predict class 1, whose strategy carries half (image 0) and three quarters (image 1) of its evidence
    assert t.decisions == [{"image": 0, "label": 0, "predicted": 1, "strategy": 1, "share": 0.5},
                           {"image": 1, "label": 1, "predicted": 1, "strategy": 1, "share": 0.75}]


def test_removing_a_union_of_strategies_removes_every_cell_of_each():
    """One image of class 0 whose two cells belong to two strategies of class 0; only removing both flips it."""
    centroids = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]])
    feats = torch.tensor([[[[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]]]])  # (1, 1, 3, 3): cells 0, 1 members, cell 2 none
    evidence = torch.tensor([[[[3.0, 3.0, 0.0]], [[0.0, 0.0, 1.0]]]])  # class 0 from cells 0 and 1, class 1 from 2
    columns = [("positive", 0, 0), ("positive", 0, 1)]
    t = tally(iter([(torch.tensor([0]), torch.tensor([0]), feats, evidence)]), centroids, torch.tensor([0.5, 0.5]),
              Tally(columns, (1, 3), 2, threshold=0.5, unions=[[0], [0, 1]]), torch.zeros(2))
    # without cell 0: class 0 (0 + 3 + 0) / 2 = 1.5 > class 1 0.5; without cells 0 and 1: 0 < 1
    assert t.class_correct_without.tolist() == [1, 1] and t.class_correct_without_union.tolist() == [1, 0]


def test_audit_settings_are_validated_with_the_flag_named():
    from bagnet.audit import AuditConfig
    from bagnet.errors import ConfigError

    for bad, flag in (({"threshold": 0}, "--threshold"), ({"cross_class_rate": 1.5}, "--cross-class-rate"),
                      ({"strategies": 0}, "--strategies"), ({"examples": 2.5}, "--examples")):
        with pytest.raises(ConfigError, match=flag):
            AuditConfig(**bad)


def test_tally_counts_a_strategy_in_another_classs_images():
    centroids = torch.tensor([[1.0, 0], [0, 1.0]])
    feats = torch.tensor([[[[1.0, 0], [0, 1.0]]]])  # one image, 1×2 cells: cell 0 strategy 0's, cell 1 strategy 1's
    evidence = torch.tensor([[[[3.0, 1.0]], [[1.0, 1.0]]]])  # (1, C=2, 1, 2)
    t = tally(iter([(torch.tensor([0]), torch.tensor([1]), feats, evidence)]), centroids, torch.tensor([0.5, 0.5]),
              Tally([("positive", 0, 0), ("positive", 1, 0)], (1, 2), 2, threshold=0.5), torch.zeros(2))
    assert t.occurs.tolist() == [[0, 1], [0, 1]]  # strategy 0 (class 0) carries 3/4 of class 0's evidence here
    assert t.mass.tolist() == [0.0, 1.0]  # mass counts only the strategy's own class's images


# ------------------------------------------------------------------------------------------------ planted shortcut
def stripes(folder: Path, mark: bool, label_noise: float, seed: int) -> dict[str, tuple[int, int, int, int]]:
    """Two classes of noisy stripes (a: horizontal, b: vertical; a share ``label_noise`` of images drawn with the
    other orientation); with ``mark``, every image of b carries a 6×6 yellow-black checker at a random place.
    Returns each marked file's mark box (top, left, height, width)."""
    rng = np.random.default_rng(seed)
    marks = {}
    for split, n in (("train", 40), ("val", 20)):
        for c, name in enumerate(("a", "b")):
            d = folder / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                orient = c if rng.random() >= label_noise else 1 - c
                pixels = rng.integers(90, 166, (SIDE, SIDE, 3)).astype(np.float32)
                wave = 18 * np.sin(np.arange(SIDE) / 2.0)
                pixels += wave[:, None, None] if orient == 0 else wave[None, :, None]
                pixels = np.clip(pixels, 0, 255).astype(np.uint8)
                if mark and name == "b":
                    y, x = (int(v) for v in rng.integers(0, SIDE - MARK, 2))
                    checker = (np.indices((MARK, MARK)).sum(0) % 2).astype(bool)[..., None]
                    pixels[y:y + MARK, x:x + MARK] = np.where(checker, [255, 230, 0], [0, 0, 0])
                    marks[str(d / f"{i}.png")] = (y, x, MARK, MARK)
                Image.fromarray(pixels).save(d / f"{i}.png")
    return marks


def overlaps(box, mark) -> bool:
    top, left, bottom, right = box
    y, x, h, w = mark
    return not (bottom <= y or top >= y + h or right <= x or left >= x + w)


def mark_overlap(strategy, marks) -> float:
    return float(np.mean([e["source"] in marks and overlaps(e["box"], marks[e["source"]]) for e in strategy.examples]))


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("planted")
    marks = stripes(root / "marked", mark=True, label_noise=0.35, seed=0)  # the mark is the only sure signal
    stripes(root / "clean", mark=False, label_noise=0.0, seed=1)
    models = {}
    for kind in ("marked", "clean"):
        train(TrainConfig(data=str(root / kind), init="bagnet9:imagenette", image_size=SIDE, min_scale=1.0,
                          epochs=6, batch_size=16, lr=3e-3, warmup_epochs=0.5, workers=0, out=str(root / f"run-{kind}"),
                          amp=False), progress=False, log=lambda m: None)
        models[kind] = bagnet.load(root / f"run-{kind}")
    return root, marks, models


def test_the_audit_finds_a_planted_mark_and_not_in_a_model_trained_without_it(planted):
    root, marks, models = planted
    found = {}
    for kind, model in models.items():
        data, _, _ = bagnet.data.evaluation_dataset(str(root / "marked" / "train"), model.preprocess)
        found[kind] = audit(model, data, progress=False)
    top = found["marked"].top("b")
    assert mark_overlap(top, marks) >= 0.8 and len(top.examples) == 8
    assert top.share > 0.2 and top.accuracy_without < found["marked"].accuracy  # the mark is worth accuracy
    positives = [s for s in found["clean"].strategies if s.sign == "positive"]
    assert positives and max(mark_overlap(s, marks) for s in positives) < 0.8


def test_the_audit_saves_its_report_and_the_cli_runs_it(planted, tmp_path, capsys):
    from bagnet.cli import main

    root, marks, models = planted
    data = root / "marked" / "train"
    assert main(["audit", "--model", str(root / "run-marked"), "--data", str(data), "--out", str(tmp_path / "a"),
                 "--workers", "0", "--no-progress", "--strategies", "3", "--examples", "4"]) == 0
    assert "top strategy" in capsys.readouterr().out
    saved = json.loads((tmp_path / "a" / "audit.json").read_text())
    assert "at least 25%" in saved["rule"]["text"] and saved["images"] == 80
    assert {s["category"] for s in saved["strategies"]} == {"a", "b"}
    assert max(len(s["examples"]) for s in saved["strategies"]) == 4  # --examples 4
    for s in saved["strategies"]:  # images of other classes it fires on: named, never its own class
        assert all(o["class"] != s["category"] and o["share"] >= 0.25 for o in s["other_images"])
    assert all(len(s["positions"]) == saved["grid"][0] for s in saved["strategies"])
    rows = (tmp_path / "a" / "strategies.csv").read_text().splitlines()
    assert rows[0].startswith("id,class,sign,share") and len(rows) == 1 + len(saved["strategies"])
    page = (tmp_path / "a" / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and "default-src 'none'" in page  # 2 figures; no request
    payload = json.loads(re.search(r'id="bagnet-data">(.*?)</script>', page, re.S).group(1))
    for s in saved["strategies"]:  # every example of every strategy, with its image, in the page
        shown = payload["strategies"][str(s["id"])]
        assert [(e["image"], e["box"]) for e in shown] == [(str(e["image"]), e["box"]) for e in s["examples"]]
        assert all(payload["images"][e["image"]].startswith("data:image/jpeg;base64,") for e in shown)
    _click_a_strategy(tmp_path / "a" / "report.html", saved)
    assert (tmp_path / "a" / "decisions.csv").read_text().startswith("image,source,label,predicted,strategy,share")
    # a model that is not a BagNet: said why, exit 2
    assert main(["audit", "--model", "resnet18:imagenette", "--data", str(data), "--out", str(tmp_path / "b")]) == 2
    assert "BagNet" in capsys.readouterr().err


def _click_a_strategy(report: Path, saved: dict) -> None:
    """In Chromium (where there is one): a click on a strategy's number shows its examples, each outlined at its
    box on its image; a second click closes them; nothing is requested."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return
    if not chromium:
        return
    strategy = saved["strategies"][0]
    requests = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page()
        page.on("request", lambda r: requests.append(r.url))
        page.goto(report.as_uri())
        page.click(f"tr.strategy[data-strategy='{strategy['id']}'] button")
        figures = page.locator("figure.example")
        figures.first.locator(".outline").wait_for()
        assert figures.count() == len(strategy["examples"])
        outline = figures.first.evaluate("f => { const o = f.querySelector('.outline'), i = f.querySelector('img'); "
                                         "return [parseFloat(o.style.top), parseFloat(o.style.left), "
                                         "i.naturalHeight, i.naturalWidth]; }")
        top, left = strategy["examples"][0]["box"][:2]
        assert outline[:2] == pytest.approx([100 * top / outline[2], 100 * left / outline[3]], abs=1e-3)
        page.click(f"tr.strategy[data-strategy='{strategy['id']}'] button")
        assert page.locator("figure.example").count() == 0
        browser.close()
    assert requests == [report.as_uri()]


def test_the_audit_finds_images_shared_with_an_indexed_split(planted, tmp_path):
    from bagnet.patches import build_index

    root, _, models = planted
    model = models["marked"]
    train_data, _, _ = bagnet.data.evaluation_dataset(str(root / "marked" / "train"), model.preprocess)
    index = build_index(model, train_data, tmp_path / "index", progress=False, log=lambda m: None)
    leaky = tmp_path / "leaky"
    shutil.copytree(root / "marked" / "val", leaky)
    shutil.copy(root / "marked" / "train" / "a" / "3.png", leaky / "a" / "copied.png")  # a training image, again
    data, _, _ = bagnet.data.evaluation_dataset(str(leaky), model.preprocess)
    result = audit(model, data, index=index, progress=False)
    assert [Path(r["source"]).name for r in result.leakage] == ["copied.png"]
    assert result.leakage[0]["indexed_source"].endswith("train/a/3.png")
    with pytest.raises(bagnet.errors.PatchIndexError, match="built with"):
        audit(models["clean"], data, index=index, progress=False)
