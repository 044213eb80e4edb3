"""Experiments on tiny generated data with models whose answers are known in advance."""

import json

import pytest
import torch

from bagnet.experiments import (
    InteractionConfig,
    MaskingConfig,
    block_scores,
    mask_blocks,
    masking,
    ScramblingConfig,
    SimilarityConfig,
    error_consistency,
    interactions,
    region_pairs,
    scramble,
    scrambling,
    similarity,
)
from experiment_models import (
    CentreColourModel,
    MeanColourModel,
    centre_colour_data,
    TensorImages,
    TwoRegionModel,
    colour_data,
    colour_model,
    two_region_data,
)


def test_scramble_permutes_whole_tiles():
    x = torch.arange(2 * 1 * 8 * 8, dtype=torch.float32).reshape(2, 1, 8, 8)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(scramble(x, 1, g), x)
    s = scramble(x, 4, g)

    def tiles(t):
        return sorted(tuple(t[0, 0, i : i + 2, j : j + 2].flatten().tolist()) for i in (0, 2, 4, 6) for j in (0, 2, 4, 6))

    assert tiles(s) == tiles(x) and not torch.equal(s, x)
    assert scramble(torch.randn(1, 3, 10, 9), 4, g).shape == (1, 3, 8, 8)  # cropped to multiples of the grid
    with pytest.raises(ValueError, match="grid must lie"):
        scramble(x, 9, g)


def test_scrambling_spares_a_local_model_and_breaks_a_spatial_one(tmp_path):
    config = ScramblingConfig(grids=(1, 2, 4))
    local = scrambling({"local": colour_model()}, colour_data(), 2, config, progress=False)
    assert local.top1["local"] == [1.0, 1.0, 1.0]  # colour survives any shuffle
    result = scrambling({"spatial": TwoRegionModel(), "local": colour_model()}, two_region_data(), 2, config,
                        progress=False)
    assert result.grids == [1, 2, 4] and result.tile_sizes == [32, 16, 8] and result.images == 40
    assert result.top1["spatial"][0] == 1.0
    assert result.top1["spatial"][1] <= 0.75 and result.top1["spatial"][2] <= 0.75
    out = result.save(tmp_path / "scr")
    saved = json.loads((out / "scrambling.json").read_text())
    assert saved["top1"]["spatial"][0] == 1.0 and saved["schema_version"] == 1
    assert (out / "scrambling.png").stat().st_size > 5000 and (out / "examples.png").stat().st_size > 5000
    assert len((out / "scrambling.csv").read_text().splitlines()) == 1 + 2 * 3


def test_scrambling_bad_input():
    data = two_region_data(4)
    with pytest.raises(ValueError, match="empty"):
        scrambling({"m": TwoRegionModel()}, TensorImages(torch.zeros(0, 3, 8, 8), torch.zeros(0)), 2, progress=False)
    with pytest.raises(ValueError, match="3 outputs but the dataset has 2 classes"):
        scrambling({"m": MeanColourModel(3)}, data, 2, progress=False)
    with pytest.raises(ValueError, match=r"logits shaped \(N, classes\)"):
        scrambling({"m": torch.nn.Identity()}, data, 2, progress=False)


def test_interactions_zero_for_additive_model_and_large_for_a_product_of_distant_regions(tmp_path):
    from experiment_models import ProductModel

    config = InteractionConfig(region=6, gaps=(0, 8, 16), pairs_per_gap=6, fill="zero")
    result = interactions({"linear": colour_model(), "product": ProductModel()}, two_region_data(8), 2, config,
                          progress=False, limit=8)
    assert result.images == 8
    assert max(result.normalised_interaction["linear"]) < 1e-5  # a linear model adds effects (fp32 rounding only)
    assert min(result.normalised_interaction["product"]) > 1e-3  # a product of region means never adds up
    out = result.save(tmp_path / "int")
    assert json.loads((out / "interactions.json").read_text())["fill"] == "zero"
    assert (out / "interactions.png").stat().st_size > 5000


@pytest.mark.parametrize("fill,local", [("mean", True), ("zero", True), ("blur", True), ("mean", False)])
def test_bagnet_interaction_is_exactly_zero_once_no_patch_covers_both_regions(fill, local):
    """Property of BagNets, checked not assumed: zero interaction for gaps ≥ q, none at gap 0 — with the single
    effects from forward passes and from the evidence-map shortcut (the joint effect is a forward pass in both)."""
    from bagnet import BagNet, BagNetConfig
    from test_heatmaps import randomised

    model = randomised(BagNet(BagNetConfig.for_patch_size(9, layers=(1, 1, 1, 1), width=8, num_classes=2))).double()
    data = TensorImages(torch.randn(3, 3, 48, 48, dtype=torch.float64), torch.tensor([0, 1, 0]))
    config = InteractionConfig(region=6, gaps=(0, 3, 9, 12, 20), pairs_per_gap=8, fill=fill, local_effects=local)
    result = interactions({"bagnet9": model}, data, 2, config, progress=False, limit=3)
    norm = dict(zip(result.gaps, result.normalised_interaction["bagnet9"]))
    assert norm[0] > 1e-3
    assert norm[9] <= 1e-5 and norm[12] <= 1e-5 and norm[20] <= 1e-5, norm
    assert result.patch_sizes == {"bagnet9": 9}
    assert result.effects_from == {"bagnet9": "evidence map + reached cells" if local else "forward passes"}


@pytest.mark.parametrize("q,size,region,dtype,tol", [(9, 48, 6, torch.float64, 1e-10), (17, 61, 11, torch.float64, 1e-10),
                                                     (17, 40, 5, torch.float32, 1e-5)])
def test_bagnet_single_effects_from_the_evidence_map_equal_forward_passes(q, size, region, dtype, tol):
    """The shortcut against the full computation, pair by pair, on odd sizes (regions at the image's border too)."""
    from bagnet import BagNet, BagNetConfig
    from bagnet.experiments.interactions import _forward_effects, _local_effects
    from bagnet.masks import fill_image
    from test_heatmaps import randomised

    torch.manual_seed(0)
    model = randomised(BagNet(BagNetConfig.for_patch_size(q, layers=(1, 1, 1, 1), width=8, num_classes=3))).to(dtype)
    with torch.no_grad():
        model.fc.weight.mul_(100)  # logits of a few units, so that a region's effect is far above rounding
    model.eval()
    g = torch.Generator().manual_seed(1)
    image = torch.randn(3, size, size - 3, generator=g, dtype=dtype)
    pairs = [(0, p) for gap in (0, 4, q) for p in region_pairs(size, size - 3, region, gap, 6, g)]
    pairs.append((0, (0, 0, size - region, size - 3 - region)))  # the two corners
    filler = fill_image(image, "blur", 2.0)
    cpu = torch.device("cpu")
    fast = _local_effects(model, image, filler, 2, pairs, region, cpu, 3, "m", 16)
    slow = _forward_effects(model, image, filler, 2, pairs, region, cpu, 3, "m", 16)
    scale = max(float(slow[0].abs().max()), float(slow[1].abs().max()))
    logit = float(model(image[None]).detach().abs().max())  # differences of logits carry the logits' rounding
    assert scale > 1e-3  # the regions do move the logit
    for a, b in zip(fast, slow):
        assert float((a - b).abs().max()) <= tol * max(scale, logit)


def test_region_pairs_respect_gap_and_bounds():
    g = torch.Generator().manual_seed(0)
    for ay, ax, by, bx in region_pairs(40, 30, 5, 7, 50, g):
        assert max(by - ay, bx - ax) == 5 + 7 and min(by - ay, bx - ax) == 0
        assert 0 <= ay and 0 <= ax and by + 5 <= 40 and bx + 5 <= 30
    with pytest.raises(ValueError, match="do not fit"):
        region_pairs(10, 10, 5, 7, 1, g)
    with pytest.raises(ValueError, match="fill must be"):
        InteractionConfig(fill="noise")


def test_error_consistency_known_values():
    a = torch.tensor([1, 1, 0, 0, 1, 0, 1, 0], dtype=torch.bool)
    assert error_consistency(a, a) == pytest.approx(1.0)
    assert error_consistency(a, ~a) == pytest.approx(-1.0)
    # independent by construction: b is right on half of a's right answers and on half of its wrong ones
    b = torch.tensor([1, 1, 1, 1, 0, 0, 0, 0], dtype=torch.bool)
    assert error_consistency(a, b) == pytest.approx(0.0)
    # by hand: c_obs = 7/8, p = 4/8 and 5/8, c_exp = 0.5·0.625 + 0.5·0.375 = 0.5 → κ = 0.75
    c = torch.tensor([1, 1, 0, 0, 1, 0, 1, 1], dtype=torch.bool)
    assert error_consistency(a, c) == pytest.approx(0.75)


def test_similarity_of_identical_opposite_and_unrelated_models(tmp_path):
    import math

    clean = colour_data(40)
    labels = clean.labels.clone()
    labels[::5] = 1 - labels[::5]  # every fifth label wrong: the colour model is right on 80 %
    data = TensorImages(clean.images, labels)

    class Flip(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return -self.inner(x)

    result = similarity({"a": colour_model(), "a again": colour_model(), "opposite": Flip(colour_model()),
                         "spatial": TwoRegionModel()}, data, 2, SimilarityConfig(), progress=False, batch_size=16)
    m = {name: i for i, name in enumerate(result.models)}
    ec, lc, cc = result.error_consistency, result.logit_correlation, result.class_accuracy_correlation
    assert result.accuracy["a"] == pytest.approx(0.8) and result.accuracy["opposite"] == pytest.approx(0.2)
    assert ec[m["a"]][m["a again"]] == pytest.approx(1.0)
    # complementary errors at 80 % and 20 %: c_obs = 0, c_exp = 2·0.8·0.2 = 0.32 → κ = −0.32 / 0.68
    assert ec[m["a"]][m["opposite"]] == pytest.approx(-0.32 / 0.68)
    assert abs(ec[m["a"]][m["spatial"]]) < 0.5  # the spatial model's errors have nothing to do with colour
    assert lc[m["a"]][m["a again"]] == pytest.approx(1.0) and lc[m["a"]][m["opposite"]] == pytest.approx(-1.0)
    assert math.isnan(cc[m["a"]][m["a again"]]) or cc[m["a"]][m["a again"]] == pytest.approx(1.0)
    out = result.save(tmp_path / "sim")
    assert (out / "similarity.png").stat().st_size > 5000
    assert len((out / "similarity.csv").read_text().splitlines()) == 1 + 6
    with pytest.raises(ValueError, match="at least two"):
        similarity({"a": colour_model()}, data, 2, progress=False)


def test_masking_the_known_region_first_destroys_the_model_that_uses_it(tmp_path):
    def centre_first(images, labels):  # a ranking that knows where the evidence is
        scores = torch.zeros(images.shape[0], *images.shape[-2:])
        scores[:, 12:20, 12:20] = 1.0
        return scores

    config = MaskingConfig(block=8, ks=(0, 1, 4), fill="zero")
    result = masking({"centre": CentreColourModel()}, {"oracle": centre_first, "random": "random"},
                     centre_colour_data(), 2, config, progress=False)
    acc = result.accuracy["centre"]
    assert result.blocks_per_image == 16 and result.ks == [0, 1, 4]
    assert acc["oracle"][0] == 1.0 and acc["random"][0] == 1.0
    # the centre 8×8 region straddles 4 blocks: one masked block removes a quarter, four remove all of it
    assert acc["oracle"][2] == 0.5  # zero fill leaves no colour: every logit is 0, argmax picks class 0
    assert acc["random"][1] >= 0.9
    out = result.save(tmp_path / "mask")
    assert (out / "masking.png").stat().st_size > 5000


def test_masking_by_each_models_own_attribution():
    """Integrated Gradients of a model that looks only at the centre puts the centre first: masking by the model's
    own map destroys it as fast as the oracle; a method that cannot handle the model gets NaN and a note."""
    from bagnet.experiments import OwnAttribution

    config = MaskingConfig(block=8, ks=(0, 4), fill="zero")
    result = masking({"centre": CentreColourModel()},
                     {"own IG": OwnAttribution("integrated_gradients", ig_steps=8), "own evidence":
                      OwnAttribution("evidence")}, centre_colour_data(8), 2, config, progress=False, batch_size=8,
                     limit=8)
    acc = result.accuracy["centre"]
    assert acc["own IG"] == [1.0, 0.5]  # the four blocks the centre straddles go first
    assert all(v != v for v in acc["own evidence"])  # NaN: exact evidence exists only for BagNets
    assert "centre / own evidence" in result.unavailable and not result.skipped  # not an unreadable image


def test_block_scores_and_mask_blocks():
    scores = torch.zeros(1, 4, 6)
    scores[0, 2:4, 4:6] = 3.0
    blocks = block_scores(scores, 2)
    assert blocks.shape == (1, 2, 3) and blocks[0, 1, 2] == 12.0 and blocks.sum() == 12.0
    images, fills = torch.ones(1, 1, 4, 6), torch.zeros(1, 1, 4, 6)
    order = blocks.flatten(1).argsort(1, descending=True)
    masked = mask_blocks(images, fills, order, 1, 2)
    assert masked[0, 0, 2:4, 4:6].sum() == 0 and masked.sum() == 24 - 4


def test_masking_with_a_bagnet_ranking_runs_and_checks_inputs():
    from bagnet import BagNet, BagNetConfig

    ranker = BagNet(BagNetConfig.for_patch_size(9, layers=(1, 1, 1, 1), width=8, num_classes=2)).eval()
    data = centre_colour_data(4)
    result = masking({"centre": CentreColourModel(), "ranker": ranker}, {"bagnet": ranker}, data, 2,
                     MaskingConfig(ks=(0, 2)), progress=False, batch_size=4)
    assert set(result.accuracy) == {"centre", "ranker"}
    with pytest.raises(ValueError, match="cannot mask k = 99"):
        masking({"c": CentreColourModel()}, {"random": "random"}, data, 2, MaskingConfig(ks=(99,)), progress=False)
    with pytest.raises(TypeError, match="must be a BagNet"):
        masking({"c": CentreColourModel()}, {"x": 3}, data, 2, progress=False)


@pytest.mark.parametrize("name, extra", [("scrambling", ["--grids", "1", "2"]),
                                         ("interactions", ["--region", "4", "--gaps", "0", "9"]),
                                         ("interactions", ["--region", "4", "--gaps", "0", "9", "--forward-effects"]),
                                         ("similarity", []),
                                         ("masking", ["--block", "8", "--ks", "0", "2", "--rankers", "RUN"])])
def test_experiment_cli_end_to_end(tmp_path, name, extra, capsys):
    from bagnet import BagNet, BagNetConfig, save_weights
    from bagnet.cli import main
    from PIL import Image

    for split in ("val",):
        for c, colour in (("blue", (20, 20, 200)), ("red", (200, 20, 20))):
            d = tmp_path / "data" / split / c
            d.mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (24, 24), colour).save(d / f"{i}.png")
    paths = []
    for q in (9, 17):
        model = BagNet(BagNetConfig.for_patch_size(q, layers=(1, 1, 1, 1), width=8, num_classes=2))
        meta = {"categories": ["blue", "red"], "preprocess": {"resize": 24, "crop": 24}}
        paths.append(str(save_weights(model, tmp_path / f"q{q}.safetensors", meta)))
    extra = [paths[0] if e == "RUN" else e for e in extra]
    code = main(["experiment", name, "--models", *paths, "--data", str(tmp_path / "data"), "--out",
                 str(tmp_path / "out"), "--no-progress", *extra])
    assert code == 0
    out = capsys.readouterr().out
    assert f"{name} on" in out
    if name == "interactions":  # BagNets' single effects: the exact shortcut unless told otherwise
        how = "forward passes" if "--forward-effects" in extra else "evidence map + reached cells"
        assert out.count(f"(single effects: {how})") == 2
    assert (tmp_path / "out" / f"{name}.json").is_file() and (tmp_path / "out" / f"{name}.png").is_file()


def test_summary_components_by_hand(tmp_path):
    from bagnet.experiments import likeness_score as summarize
    from bagnet.experiments.interactions import InteractionResult
    from bagnet.experiments.scrambling import ScramblingResult
    from bagnet.experiments.similarity import SimilarityResult

    scr = ScramblingResult(models=["bag", "cnn"], grids=[1, 4, 8], tile_sizes=[64, 16, 8], images=10,
                           top1={"bag": [0.9, 0.85, 0.5], "cnn": [0.9, 0.3, 0.1]},
                           top5={"bag": [1, 1, 1], "cnn": [1, 1, 1]})
    inter = InteractionResult(models=["bag", "cnn"], gaps=[0, 16, 32], region=8, fill="mean", images=10,
                              pairs_per_gap=2, mean_abs_interaction={"bag": [1, 0, 0], "cnn": [1, 1, 1]},
                              normalised_interaction={"bag": [0.2, 0.0, 0.0], "cnn": [0.2, 0.15, 0.05]},
                              mean_abs_effect={"bag": [1, 1, 1], "cnn": [1, 1, 1]},
                              excluded_pairs={"bag": [0, 0, 0], "cnn": [0, 0, 0]})
    sim = SimilarityResult(models=["bag", "cnn"], images=10, accuracy={"bag": 0.9, "cnn": 0.9},
                           class_accuracy_correlation=[[1, 0.5], [0.5, 1]], error_consistency=[[1, 0.4], [0.4, 1]],
                           logit_correlation=[[1, 0.6], [0.6, 1]])
    result = summarize("bag", 16, 10, scr, inter, sim)
    # q = 16: the 4×4 grid (16-px tiles) is the finest usable one; chance = 0.1
    assert result.scrambling_retention["bag"] == pytest.approx((0.85 - 0.1) / (0.9 - 0.1))
    assert result.scrambling_retention["cnn"] == pytest.approx((0.3 - 0.1) / 0.8)
    assert result.locality["bag"] == pytest.approx(1.0)
    assert result.locality["cnn"] == pytest.approx(1 - 0.1 / 0.2)  # far gaps 16 and 32: mean 0.1
    assert result.decision_similarity == {"bag": 1.0, "cnn": 0.4}
    assert result.score["cnn"] == pytest.approx((0.25 + 0.5 + 0.4) / 3)
    assert result.score["bag"] > result.score["cnn"]
    out = result.save(tmp_path / "sum")
    assert (out / "summary.png").stat().st_size > 5000
    partial = summarize("bag", 16, 10, scrambling=scr)
    assert partial.locality["cnn"] is None and partial.score["cnn"] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="at least one"):
        summarize("bag", 16, 10)


@pytest.mark.slow
def test_dataset_diagnostic_separates_local_from_spatial_data(tmp_path):
    """Two blocks whose arrangement is the class: a 3-px BagNet stays near chance, a BagNet whose 17-px patches
    see both blocks and a ResNet-18 learn it."""
    from PIL import Image

    from bagnet.experiments import dataset_diagnostic
    from bagnet.train import TrainConfig

    def write(root, dataset):
        for split, part in (("train", slice(0, 48)), ("val", slice(48, 64))):
            for i in range(64)[part]:
                image, label, _ = dataset[i]
                d = root / split / str(label)
                d.mkdir(parents=True, exist_ok=True)
                array = ((image.clamp(-1.5, 1.5) + 1.5) / 3 * 255).byte().permute(1, 2, 0).numpy()
                Image.fromarray(array).save(d / f"{i}.png")
        return root

    base = TrainConfig(width=8, layers=(1, 1, 1, 1), image_size=24, resize=24, min_scale=1.0, epochs=12,
                       batch_size=8, lr=5e-3, warmup_epochs=1, workers=0, label_smoothing=0.0)
    from experiment_models import separated_blocks_data

    spatial = write(tmp_path / "spatial", separated_blocks_data(64, size=24))
    result = dataset_diagnostic(base.replace(data=str(spatial)), patch_sizes=(3, 17), cnn="resnet18",
                                runs_dir=tmp_path / "runs", scramble_grid=3, progress=False)
    by_q = dict(zip(result.patch_sizes, result.bagnet_top1))
    assert by_q[3] <= 0.7  # a 3-px patch cannot tell where the bright block is
    assert by_q[17] >= 0.9 and result.cnn_top1 >= 0.9
    # 8-px tiles put the two blocks in different tiles: shuffling them hides which one is where
    assert result.scramble_tile_px == 8
    assert result.scrambling_gap is not None and result.scrambling_gap >= 0.2
    assert result.scrambled_top1["resnet18"] <= 0.75 and result.scrambled_top1["bagnet17"] <= 0.75
    out = result.save(tmp_path / "diag")
    assert (out / "diagnostic.png").stat().st_size > 5000
    rows = (out / "diagnostic.csv").read_text().splitlines()
    assert rows[0] == "model,patch_size,top1,scrambled_top1" and len(rows) == 4
    # reusing finished runs: no retraining, same numbers
    again = dataset_diagnostic(base.replace(data=str(spatial)), patch_sizes=(3, 17), runs_dir=tmp_path / "runs",
                               progress=False)
    assert again.bagnet_top1 == result.bagnet_top1


def test_diagnostic_from_a_scrambling_run_of_trained_models(tmp_path):
    """The diagnostic for models trained already: accuracies and the scrambling gap are read off one scrambling run."""
    from bagnet.experiments import DiagnosticResult

    models = {"local": colour_model(), "spatial": TwoRegionModel()}
    run = scrambling(models, two_region_data(), 2, ScramblingConfig(grids=(1, 2, 4)), progress=False)
    result = DiagnosticResult.from_scrambling(run, {8: "local"}, cnn="spatial", grid=2, dataset="colours")
    assert result.bagnet_top1 == [run.top1["local"][0]] and result.cnn_top1 == run.top1["spatial"][0]
    assert result.scrambling_gap == pytest.approx(run.top1["spatial"][0] - run.top1["spatial"][1])
    assert result.cnn_top1 == 1.0 and result.scrambling_gap >= 0.25  # shuffled quadrants lose their relation
    assert result.scrambled_top1 == {"bagnet8": run.top1["local"][1], "spatial": run.top1["spatial"][1]}
    assert result.scramble_tile_px == run.tile_sizes[1]
    assert (result.save(tmp_path) / "diagnostic.png").is_file()
    with pytest.raises(ValueError, match="not in the scrambling result"):
        DiagnosticResult.from_scrambling(run, {8: "local"}, cnn="resnet", grid=2, dataset="colours")
    with pytest.raises(ValueError, match="grids 1 and 8"):
        DiagnosticResult.from_scrambling(run, {8: "local"}, cnn="spatial", grid=8, dataset="colours")


def test_summary_cli_reads_saved_results(tmp_path, capsys):
    from bagnet.cli import main

    config = ScramblingConfig(grids=(1, 2, 4))
    scrambling({"local": colour_model(), "spatial": TwoRegionModel()}, colour_data(), 2, config,
               progress=False).save(tmp_path / "r")
    similarity({"local": colour_model(), "spatial": TwoRegionModel()}, colour_data(), 2,
               progress=False).save(tmp_path / "r")
    code = main(["experiment", "summary", "--results", str(tmp_path / "r"), "--reference", "local",
                 "--patch-size", "8", "--num-classes", "2", "--out", str(tmp_path / "s")])
    assert code == 0
    saved = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert saved["scrambling_retention"]["local"] == 1.0
    # the reference is right on every image: κ with itself is undefined, and 0 with any other model
    assert saved["decision_similarity"] == {"local": None, "spatial": 0.0}
    assert saved["locality"]["local"] is None  # no interaction results given
    assert "scrambling retention uses 4×4 tiles (8 px)" in capsys.readouterr().out


def test_experiments_accept_image_label_pairs_and_name_bad_items():
    """Datasets in torchvision's (image, label) form work as they are; anything else gets a clear error."""

    class Pairs(torch.utils.data.Dataset):
        def __init__(self, items):
            self.items = items

        def __len__(self):
            return len(self.items)

        def __getitem__(self, i):
            return self.items[i]

    data = two_region_data(6)
    pairs = Pairs([(data.images[i], int(data.labels[i])) for i in range(6)])
    a = scrambling({"m": TwoRegionModel()}, pairs, 2, ScramblingConfig(grids=(2,)), progress=False, limit=6)
    b = scrambling({"m": TwoRegionModel()}, data, 2, ScramblingConfig(grids=(2,)), progress=False, limit=6)
    assert a.top1 == b.top1
    from PIL import Image

    with pytest.raises(TypeError, match="dataset item 0: the image must be a tensor.*model.preprocess"):
        scrambling({"m": TwoRegionModel()}, Pairs([(Image.new("RGB", (8, 8)), 0)]), 2, progress=False)
    with pytest.raises(TypeError, match=r"dataset item 0 must be \(image, label\)"):
        scrambling({"m": TwoRegionModel()}, Pairs([data.images[0]]), 2, progress=False)
    with pytest.raises(TypeError, match="the label must be a class index"):
        scrambling({"m": TwoRegionModel()}, Pairs([(data.images[0], "cat")]), 2, progress=False)
    mixed = Pairs([(torch.zeros(3, 8, 8), 0), (torch.zeros(3, 9, 9), 1)])
    with pytest.raises(ValueError, match=r"share a size, got \[\(3, 8, 8\), \(3, 9, 9\)\]"):
        scrambling({"m": MeanColourModel(2)}, mixed, 2, ScramblingConfig(grids=(2,)), progress=False, batch_size=2)


def test_a_dataset_of_only_unreadable_files_is_an_error_not_an_empty_result(capsys):
    from bagnet.data import Skipped
    from bagnet.robust import DefenceConfig, robustness
    from bagnet import BagNet, BagNetConfig

    class Broken(torch.utils.data.Dataset):
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return Skipped(f"img{i}.jpg", "truncated")

    runs = {
        "scrambling": lambda: scrambling({"m": MeanColourModel(2)}, Broken(), 2, progress=False),
        "interactions": lambda: interactions({"m": MeanColourModel(2)}, Broken(), 2, progress=False),
        "similarity": lambda: similarity({"a": MeanColourModel(2), "b": MeanColourModel(2)}, Broken(), 2,
                                         progress=False),
        "masking": lambda: masking({"m": MeanColourModel(2)}, {"random": "random"}, Broken(), 2, progress=False),
        "certify": lambda: robustness(
            BagNet(BagNetConfig.for_patch_size(9, layers=(1, 1, 1, 1), width=8, num_classes=2)), Broken(),
            [DefenceConfig(sticker=4)], progress=False),
    }
    for name, run in runs.items():
        with pytest.raises(ValueError, match=r"no readable images in the dataset \(3 unreadable\)"):
            run()
    assert capsys.readouterr().err.count("skipped unreadable image img0.jpg: truncated") == len(runs)


def test_renamed_functions_keep_working_with_a_deprecation_warning():
    import bagnet.experiments as ex
    import bagnet.models as models

    with pytest.warns(DeprecationWarning, match="likeness_score"):
        with pytest.raises(ValueError, match="at least one experiment result"):
            ex.summarize("bag", 16, 10)
    model = models.BagNet(models.BagNetConfig.for_patch_size(9, layers=(1, 1, 1, 1), width=8, num_classes=3))
    image = torch.randn(3, 20, 20)
    with pytest.warns(DeprecationWarning, match="summarize_model"):
        old = models.summarize(model, image)
    assert old == models.summarize_model(model, image)


def test_run_plumbing_is_keyword_arguments_that_override_the_config():
    data = colour_data(40)
    models = {"local": colour_model()}
    whole = scrambling(models, data, 2, ScramblingConfig(grids=(1, 2)), progress=False)
    assert whole.images == 40
    some = scrambling(models, data, 2, ScramblingConfig(grids=(1, 2)), progress=False, limit=7, seed=3, batch_size=4)
    assert some.images == 7 and some.config["limit"] == 7 and some.config["seed"] == 3
    with pytest.warns(DeprecationWarning, match=r"ScramblingConfig\(limit=…\).* bagnet 0\.3.* limit= to the function"):
        old = ScramblingConfig(grids=(1, 2), limit=5)
    kept = scrambling(models, data, 2, old, progress=False)
    assert kept.images == 5  # the deprecated field still works for one release, when no keyword overrides it
    assert scrambling(models, data, 2, old, progress=False, limit=3).images == 3  # the keyword wins
    assert similarity({**models, "again": colour_model()}, data, 2, progress=False, limit=9).images == 9
    assert masking(models, {"random": "random"}, data, 2, MaskingConfig(block=4, ks=(0, 1)), progress=False,
                   limit=6).images == 6
    with pytest.raises(ValueError):
        scrambling(models, data, 2, progress=False, batch_size=0)


def test_summary_infers_the_reference_bagnet_from_registered_names_and_reads_the_default_folders(tmp_path, capsys,
                                                                                                  monkeypatch):
    """Results whose models are registered names: `bagnet experiment summary` with no flags reads out/scrambling …
    and takes the first BagNet as the reference, with its patch size and class count; unknown names ask for flags."""
    from bagnet.cli import main

    config = ScramblingConfig(grids=(1, 2, 4))
    models = {"resnet18:imagenette": TwoRegionModel(), "bagnet17:imagenette": colour_model()}
    scrambling(models, colour_data(), 2, config, progress=False).save(tmp_path / "out" / "scrambling")
    monkeypatch.chdir(tmp_path)
    assert main(["experiment", "summary"]) == 0
    out = capsys.readouterr().out
    assert "reference bagnet17:imagenette (q = 17, 10 classes)" in out
    saved = json.loads((tmp_path / "out" / "summary" / "summary.json").read_text())
    assert saved["reference"] == "bagnet17:imagenette" and saved["patch_size"] == 17
    scrambling({"a": TwoRegionModel()}, colour_data(), 2, config, progress=False).save(tmp_path / "other")
    assert main(["experiment", "summary", "--results", "other", "--out", "s2"]) == 2
    assert "pass --reference NAME --patch-size Q --num-classes C" in capsys.readouterr().err
    assert main(["experiment", "summary", "--results", "nothing-here"]) == 2


def test_scrambling_results_of_the_same_images_merge_and_others_do_not():
    config = ScramblingConfig(grids=(1, 2, 4))
    a = scrambling({"local": colour_model()}, colour_data(), 2, config, progress=False)
    b = scrambling({"spatial": TwoRegionModel()}, colour_data(), 2, config, progress=False)
    both = scrambling({"local": colour_model(), "spatial": TwoRegionModel()}, colour_data(), 2, config, progress=False)
    merged = a.merged(b)
    assert merged.models == ["local", "spatial"] and merged.top1 == both.top1 and merged.top5 == both.top5
    with pytest.raises(ValueError, match="different runs"):
        a.merged(scrambling({"spatial": TwoRegionModel()}, colour_data(), 2, ScramblingConfig(grids=(1, 2)),
                            progress=False))
