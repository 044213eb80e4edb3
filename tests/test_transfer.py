"""Fine-tuning on your own images: --init any model by name, classifier replaced, frozen stages exactly frozen, one
folder split (stratified, saved, reused), explicit class order, sparse evidence, task metrics and the run's card."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import bagnet
from bagnet.errors import ConfigError
from bagnet.train import TrainConfig, train

COLOURS = {"none": (200, 40, 40), "mild": (40, 190, 60), "severe": (50, 60, 210)}
SHIPPED = "bagnet17:imagenette"  # in the package: offline


def one_folder(root: Path, per_class: int = 10, size: int = 40) -> Path:
    """One folder of class folders (no train/val): noisy images whose class is their dominant colour."""
    rng = np.random.default_rng(1)
    for name, colour in COLOURS.items():
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            noise = rng.integers(-60, 60, size=(size, size, 3))
            Image.fromarray(np.clip(np.array(colour)[None, None] + noise, 0, 255).astype(np.uint8)).save(d / f"{i}.png")
    return root


def config(data: Path, out: Path, **kw) -> TrainConfig:
    base = dict(data=str(data), init=SHIPPED, val_fraction=0.2, test_fraction=0.2, image_size=40, epochs=1,
                batch_size=6, lr=1e-2, warmup_epochs=0, workers=0, out=str(out), amp=False)
    base.update(kw)
    return TrainConfig(**base)


def state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ------------------------------------------------------------------------------------------------ --init
def test_a_linear_probe_from_a_registered_name_changes_only_the_new_classifier(tmp_path):
    data = one_folder(tmp_path / "photos")
    said: list[str] = []  # precise BN asked for: with every BatchNorm frozen it must say so and change nothing
    result = train(config(data, tmp_path / "run", freeze_stages=-1, precise_bn=2), progress=False, log=said.append)
    assert result.completed and "kept" in result.init and "new fc for your 3 classes" in result.init
    assert any("--precise-bn 2 changes nothing" in line and "outside the frozen stages" in line for line in said)
    saved = yaml_config(tmp_path / "run")
    assert (saved["arch"], saved["patch_size"], saved["width"], saved["layers"]) == ("bagnet", 17, 24, [1, 2, 2, 1])
    tuned, source = bagnet.load(tmp_path / "run"), bagnet.load(SHIPPED)
    before, after = state(source), state(tuned)
    backbone = [k for k in after if not k.startswith("fc.")]
    assert backbone and all(torch.equal(before[k], after[k]) for k in backbone)  # weights and BatchNorm statistics
    assert after["fc.weight"].shape == (3, source.config.feature_dim)
    assert tuned.categories == ["mild", "none", "severe"]  # sorted folder names by default


def test_frozen_stages_stay_exactly_and_the_rest_trains(tmp_path):
    data = one_folder(tmp_path / "photos")
    train(config(data, tmp_path / "run", freeze_stages=2, classes=("none", "mild", "severe")), progress=False,
          log=lambda m: None)
    before, after = state(bagnet.load(SHIPPED)), state(bagnet.load(tmp_path / "run"))
    frozen = [k for k in after if k.split(".")[0] in ("conv1", "bn1", "conv2", "bn2", "layer1", "layer2")]
    free = [k for k in after if k.startswith(("layer3.", "layer4.")) and "num_batches" not in k]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    assert any(not torch.equal(before[k], after[k]) for k in free)
    assert bagnet.load(tmp_path / "run").categories == ["none", "mild", "severe"]  # the order asked for


def test_a_zero_learning_rate_multiplier_and_frozen_batchnorm_keep_every_pretrained_tensor(tmp_path):
    data = one_folder(tmp_path / "photos")
    train(config(data, tmp_path / "run", pretrained_lr_mult=0.0, freeze_bn=True), progress=False, log=lambda m: None)
    before, after = state(bagnet.load(SHIPPED)), state(bagnet.load(tmp_path / "run"))
    assert all(torch.equal(before[k], after[k]) for k in after if not k.startswith("fc.") and "num_batches" not in k)
    # and without the multiplier the same run moves them
    train(config(data, tmp_path / "moved"), progress=False, log=lambda m: None)
    moved = state(bagnet.load(tmp_path / "moved"))
    assert any(not torch.equal(before[k], moved[k]) for k in moved if k.startswith("layer4.") and "weight" in k)


def test_init_errors_name_the_problem_and_write_nothing(tmp_path):
    data = one_folder(tmp_path / "photos")
    with pytest.raises(ConfigError, match="patch-size 33 contradicts --init bagnet17:imagenette"):
        train(config(data, tmp_path / "a", patch_size=33), progress=False)
    with pytest.raises(ConfigError, match="--init no-such-model"):
        train(config(data, tmp_path / "b", init="no-such-model"), progress=False)
    with pytest.raises(ConfigError, match="applies to a run that starts from --init"):
        config(data, tmp_path / "c", init=None, freeze_stages=1)
    with pytest.raises(ConfigError, match="has 4 residual stages"):
        train(config(data, tmp_path / "d", freeze_stages=5), progress=False, log=lambda m: None)
    assert not any((tmp_path / n).exists() for n in "abc")


# ------------------------------------------------------------------------------------------------ data
def test_one_folder_is_split_stratified_saved_and_reused(tmp_path):
    from bagnet.data.split import DataSplit, stratified_split

    labels = [0] * 10 + [1] * 20 + [2] * 5
    parts = stratified_split(labels, ["a", "b", "c"], 0.2, 0.2, seed=3)
    assert sorted(parts["train"] + parts["val"] + parts["test"]) == list(range(35))
    for split in ("val", "test"):
        counts = np.bincount([labels[i] for i in parts[split]], minlength=3)
        assert counts.tolist() == [2, 4, 1]  # round(n · 0.2), at least one per class
    assert parts == stratified_split(labels, ["a", "b", "c"], 0.2, 0.2, seed=3)
    assert parts != stratified_split(labels, ["a", "b", "c"], 0.2, 0.2, seed=4)
    with pytest.raises(ConfigError, match="class 'c' has 2 images: too few"):
        stratified_split([0] * 10 + [2] * 2 + [1] * 10, ["a", "b", "c"], 0.3, 0.3, seed=0)

    data = one_folder(tmp_path / "photos")
    train(config(data, tmp_path / "run", freeze_stages=-1), progress=False, log=lambda m: None)
    split = DataSplit.load(tmp_path / "run" / "split.json")
    assert len(split.train) == 18 and len(split.val) == 6 and len(split.test) == 6
    assert not set(split.train) & (set(split.val) | set(split.test))
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["evaluation"]["sizes"] == {"train": 18, "val": 6, "test": 6}
    # evaluation of the run folder scores its test split, images it never trained on
    dataset, categories, name = bagnet.data.evaluation_dataset(str(tmp_path / "run"))
    assert len(dataset) == 6 and "test split" in name
    assert {Path(p).relative_to(data.resolve()).as_posix() for p, _ in dataset.samples} == set(split.test)
    # a resumed run with another split is refused
    with pytest.raises(ConfigError, match="records another split"):
        from bagnet.train.splits import run_split

        run_split(config(data, tmp_path / "run", val_fraction=0.3, freeze_stages=-1))


def test_a_folder_without_splits_names_the_flag_and_writes_nothing(tmp_path):
    data = one_folder(tmp_path / "photos")
    with pytest.raises(ConfigError, match="--val-fraction"):
        train(config(data, tmp_path / "run", val_fraction=0.0, test_fraction=0.0), progress=False)
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match="does not match the class folders.*no folder for \\['moderate'\\]"):
        train(config(data, tmp_path / "run2", classes=("none", "moderate", "severe"), freeze_stages=-1),
              progress=False, log=lambda m: None)


# ------------------------------------------------------------------------------------------------ sparsity
def test_sparsity_measures_match_their_definitions():
    from bagnet.sparsity import map_sparsity

    rng = np.random.default_rng(0)
    maps = torch.from_numpy(rng.standard_normal((4, 6, 7)))
    got = map_sparsity(maps)
    for n in range(4):
        a = np.abs(maps[n].numpy().ravel())
        gini = np.abs(a[:, None] - a[None, :]).sum() / (2 * a.size * a.sum())  # the pairwise definition
        k = int(np.ceil(0.05 * a.size))
        share = np.sort(a)[::-1][:k].sum() / a.sum()
        assert float(got.gini[n]) == pytest.approx(gini, rel=1e-12)
        assert float(got.top_share[n]) == pytest.approx(share, rel=1e-12)
    flat, spike = torch.ones(1, 10, 10), torch.zeros(1, 10, 10)
    spike[0, 3, 4] = -2.0
    assert float(map_sparsity(flat).gini[0]) == pytest.approx(0.0, abs=1e-12)
    assert float(map_sparsity(flat).top_share[0]) == pytest.approx(0.05)
    assert float(map_sparsity(spike).top_share[0]) == 1.0 and float(map_sparsity(spike).gini[0]) == pytest.approx(0.99)
    assert torch.isnan(map_sparsity(torch.zeros(1, 3, 3)).gini).all()


def test_an_l1_penalty_makes_the_evidence_sparser_and_is_logged(tmp_path):
    data = one_folder(tmp_path / "photos", per_class=12)
    runs = {}
    for lam in (0.0, 2.0):
        # BatchNorm statistics fixed: the evidence the penalty shrinks in training is the one evaluation sees
        runs[lam] = train(config(data, tmp_path / f"l{lam}", epochs=3, evidence_l1=lam, freeze_stages=2,
                                 freeze_bn=True), progress=False, log=lambda m: None)
    assert runs[0.0].history[-1].evidence_l1 is None and runs[2.0].history[-1].evidence_l1 > 0
    gini = {lam: r.evaluation["val"]["sparsity"]["gini"] for lam, r in runs.items()}
    l1 = {}
    for lam in runs:
        model = bagnet.load(tmp_path / f"l{lam}")
        x = torch.stack([model.preprocess(Image.open(p)) for p in sorted((data / "mild").glob("*.png"))])
        with torch.no_grad():
            l1[lam] = float(torch.nn.functional.conv2d(model.features(x), model.fc.weight[:, :, None, None]).abs().mean())
    assert l1[2.0] < 0.6 * l1[0.0], l1  # the penalty shrinks the evidence it is put on
    assert all(0 <= g <= 1 for g in gini.values())
    with pytest.raises(ConfigError, match="evidence_l1"):
        TrainConfig(arch="resnet18", evidence_l1=0.1)


# ------------------------------------------------------------------------------------------------ metrics and card
def test_task_metrics_agree_with_their_textbook_definitions():
    from bagnet.train.metrics import task_metrics

    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 300)
    logits = rng.standard_normal((300, 3)) + 1.5 * np.eye(3)[y]
    m = task_metrics(torch.from_numpy(logits), torch.from_numpy(y), ["a", "b", "c"], bootstrap=200, seed=1)
    pred = logits.argmax(1)
    recalls = [np.mean(pred[y == c] == c) for c in range(3)]
    assert m["balanced_accuracy"]["value"] == pytest.approx(np.mean(recalls), abs=1e-6)
    assert m["accuracy"]["value"] == pytest.approx(np.mean(pred == y), abs=1e-6)
    # quadratic weighted kappa from its definition: 1 − Σ w·O / Σ w·E
    observed = np.zeros((3, 3))
    np.add.at(observed, (y, pred), 1)
    expected = np.outer(observed.sum(1), observed.sum(0)) / observed.sum()
    w = (np.subtract.outer(np.arange(3), np.arange(3)) ** 2) / 4
    assert m["quadratic_kappa"]["value"] == pytest.approx(1 - (w * observed).sum() / (w * expected).sum(), abs=1e-6)
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "roc_auc"):
        assert m[key]["low"] <= m[key]["value"] <= m[key]["high"]
    assert m == task_metrics(torch.from_numpy(logits), torch.from_numpy(y), ["a", "b", "c"], bootstrap=200, seed=1)
    # binary ROC AUC is the probability that a positive outranks a negative (Mann-Whitney)
    yb = rng.integers(0, 2, 200)
    lb = rng.standard_normal((200, 2)) + np.eye(2)[yb]
    score = torch.from_numpy(lb).softmax(1)[:, 1].numpy()
    pos, neg = score[yb == 1], score[yb == 0]
    auc = (np.greater.outer(pos, neg).sum() + 0.5 * np.equal.outer(pos, neg).sum()) / (pos.size * neg.size)
    mb = task_metrics(torch.from_numpy(lb), torch.from_numpy(yb), ["neg", "pos"], bootstrap=50)
    assert mb["roc_auc"]["value"] == pytest.approx(auc, abs=1e-6)


def test_the_run_writes_a_card_and_evaluate_reports_metrics_and_sparsity(tmp_path, capsys):
    from bagnet.cli import main

    data = one_folder(tmp_path / "photos")
    train(config(data, tmp_path / "run", freeze_stages=-1, classes=("none", "mild", "severe")), progress=False,
          log=lambda m: None)
    card = (tmp_path / "run" / "model.md").read_text()
    for part in ("Started from `bagnet17:imagenette`", "none, mild, severe", "## val", "## test", "balanced accuracy",
                 "quadratic kappa", "evidence Gini", "## Learning curve", "split.json"):
        assert part in card, part
    code = main(["evaluate", "--model", str(tmp_path / "run"), "--data", str(tmp_path / "run"), "--out",
                 str(tmp_path / "ev"), "--no-progress", "--workers", "0"])
    out = capsys.readouterr().out
    assert code == 0 and "balanced accuracy" in out and "Gini" in out
    saved = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    assert saved["metrics"]["balanced_accuracy"]["low"] <= saved["metrics"]["balanced_accuracy"]["value"]
    assert 0 <= saved["sparsity"]["top5_share"] <= 1
    rows = (tmp_path / "ev" / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("metric,class,value,low,high") and any(r.startswith("recall,severe") for r in rows)


def yaml_config(run: Path) -> dict:
    import yaml

    return yaml.safe_load((run / "config.yaml").read_text())


def test_twelve_bit_images_in_sixteen_bit_files_use_their_range_or_a_window(tmp_path):
    from bagnet.data import load_image

    values = np.array([[0, 1024], [2048, 4095]], dtype=np.uint16)  # a 12-bit X-ray stored in a 16-bit PNG
    Image.fromarray(values).save(tmp_path / "xray.png")
    own = np.asarray(load_image(tmp_path / "xray.png"))[..., 0]
    np.testing.assert_array_equal(own, np.round(values / 4095 * 255).astype(np.uint8))  # not grey levels 0-16
    windowed = np.asarray(load_image(tmp_path / "xray.png", window=(1024, 3072)))[..., 0]
    assert windowed.tolist() == [[0, 0], [128, 255]]
    floats = np.array([[0.1, 0.2], [0.3, 0.5]], dtype=np.float32)
    Image.fromarray(floats, mode="F").save(tmp_path / "f.tif")
    assert np.asarray(load_image(tmp_path / "f.tif"))[..., 0].tolist() == [[0, 64], [128, 255]]


def test_a_runs_intensity_window_reaches_every_split_its_card_and_its_evaluation(tmp_path):
    """16-bit class folders whose classes differ only inside the window: the run reads them through it."""
    rng = np.random.default_rng(2)
    for name, level in (("dark", 1200), ("bright", 2800)):  # 12-bit values in 16-bit files
        (tmp_path / "xrays" / name).mkdir(parents=True)
        for i in range(10):
            pixels = np.clip(level + rng.normal(0, 100, (24, 24)), 0, 4095).astype(np.uint16)
            pixels[0, 0], pixels[-1, -1] = 0, 4095  # every image spans the whole range: its own range hides nothing
            Image.fromarray(pixels).save(tmp_path / "xrays" / name / f"{i}.png")
    run = tmp_path / "run"
    train(config(tmp_path / "xrays", run, image_size=24, freeze_stages=-1, intensity_window=(1000, 3000)),
          progress=False, log=lambda m: None)
    from bagnet.data.split import DataSplit

    assert DataSplit.load(run / "split.json").window == [1000.0, 3000.0]
    assert "intensity window 1000–3000" in (run / "model.md").read_text()
    dataset, _, _ = bagnet.data.evaluation_dataset(str(run))
    image = dataset.loader_fn(dataset.samples[0][0])
    path = Path(dataset.samples[0][0])
    expected = bagnet.data.load_image(path, window=(1000, 3000))
    np.testing.assert_array_equal(np.asarray(image), np.asarray(expected))
    assert not np.array_equal(np.asarray(image), np.asarray(bagnet.data.load_image(path)))
    # the window travels with the model: `bagnet explain --model RUN xray.png` reads a 16-bit file through it
    model = bagnet.load(run)
    assert bagnet.models.meta.model_meta(model).intensity_window == (1000.0, 3000.0)
    from bagnet.explanation import ExplainConfig, explain

    config_x = ExplainConfig(top=1, stride=8, patches=0, size=0)
    by_file = explain([str(path)], model, config_x, progress=False).images[0]
    by_hand = explain([expected], model, config_x, progress=False).images[0]
    np.testing.assert_array_equal(by_file.image, by_hand.image)
    assert by_file.logits == by_hand.logits
    # resuming the run with another window is refused, naming the setting
    with pytest.raises(ConfigError, match="intensity_window"):
        train(config(tmp_path / "xrays", run, image_size=24, freeze_stages=-1, intensity_window=(0, 4095)),
              resume=True, progress=False, log=lambda m: None)
    for bad in ((3000, 1000), (0,), (0, float("inf"))):
        with pytest.raises(ConfigError, match="intensity_window .*LOW HIGH"):
            config(tmp_path / "xrays", tmp_path / "other", intensity_window=bad)
    with pytest.raises(ConfigError, match="intensity window applies"):
        bagnet.data.training_data("imagenette", None, None, window=(0, 1))
    assert not (tmp_path / "other").exists()


def test_the_normalisation_of_the_initial_weights_is_the_runs(tmp_path):
    """Weights that expect another normalisation (a timm model's 0.5/0.5) pass it to the run's transforms, its
    config and its saved model; ImageNet's stays implicit; a bad --mean is a usage error naming it."""
    from bagnet.models import save_weights
    from bagnet.train.splits import eval_transform

    source = bagnet.load(SHIPPED)
    metadata = {"arch": "bagnet", "categories": list(source.categories),
                "preprocess": {"resize": 40, "crop": 40, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}}
    init = save_weights(source, tmp_path / "half.safetensors", metadata=metadata)
    data = tmp_path / "photos"
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (data / name).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (40, 40, 3)).astype(np.uint8)).save(data / name / f"{i}.png")
    run = tmp_path / "run"
    result = train(config(data, run, init=str(init), test_fraction=0.0), progress=False, log=lambda m: None)
    assert result.config.mean == (0.5, 0.5, 0.5) and result.config.std == (0.5, 0.5, 0.5)
    white = eval_transform(result.config)(Image.new("RGB", (40, 40), "white"))
    assert torch.allclose(white, torch.ones_like(white))  # (1 − 0.5) / 0.5
    loaded = bagnet.load(run)
    assert tuple(loaded.preprocess.mean) == (0.5, 0.5, 0.5) and tuple(loaded.preprocess.std) == (0.5, 0.5, 0.5)
    from bagnet.train.transfer import resolve_init

    plain = resolve_init(config(data, tmp_path / "plain", test_fraction=0.0))
    assert plain.mean is None and plain.std is None  # the shipped BagNet expects ImageNet's: nothing to carry
    with pytest.raises(ConfigError, match=r"std \(--std\) must be three finite numbers"):
        config(data, tmp_path / "bad", std=(0.5, 0.0, 0.5))
    from bagnet.models import WeightsError

    for window in ([3000, 1000], [0, float("nan")], "wide"):  # a file's metadata is checked as the flag is
        bad = save_weights(source, tmp_path / "bad.safetensors", metadata={**metadata, "intensity_window": window})
        with pytest.raises(WeightsError, match="intensity_window"):
            bagnet.load(str(bad))


# ------------------------------------------------------------------------------------------------ label tables
def label_table(root: Path, patients: int = 12, per_patient: int = 3, extra: str = "") -> Path:
    """A CSV of path,label,group: each patient's images share a class (images in one flat folder)."""
    rng = np.random.default_rng(4)
    (root / "images").mkdir(parents=True, exist_ok=True)
    lines = ["path,label,group" + extra]
    names = list(COLOURS)
    for p in range(patients):
        label = names[p % 3]
        for k in range(per_patient):
            noise = rng.integers(-60, 60, size=(40, 40, 3))
            pixels = np.clip(np.array(COLOURS[label])[None, None] + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / "images" / f"p{p}_{k}.png")
            lines.append(f"images/p{p}_{k}.png,{label},patient{p}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root / "labels.csv"


def test_a_label_table_with_groups_keeps_every_patient_in_one_split(tmp_path):
    from bagnet.data.split import DataSplit

    table = label_table(tmp_path / "study")
    train(config(table, tmp_path / "run", val_fraction=0.25, test_fraction=0.25, freeze_stages=-1,
                 classes=("none", "mild", "severe")), progress=False, log=lambda m: None)
    split = DataSplit.load(tmp_path / "run" / "split.json")
    patient = {f: f.split("/")[1].split("_")[0] for f in split.train + split.val + split.test}
    owners = {s: {patient[f] for f in split.files(s)} for s in ("train", "val", "test")}
    assert not (owners["train"] & owners["val"]) and not (owners["train"] & owners["test"])
    assert not (owners["val"] & owners["test"])
    assert split.source == "csv" and sum(split.groups.values()) == 12
    assert len(split.train) + len(split.val) + len(split.test) == 36
    dataset, categories, _ = bagnet.data.evaluation_dataset(str(tmp_path / "run"))
    assert categories == ["none", "mild", "severe"] and len(dataset) == len(split.test)


def test_label_table_errors_name_the_file_line_and_problem(tmp_path):
    from bagnet.data.folders import CsvDataset, read_label_table
    from bagnet.data.split import split_table

    bad = tmp_path / "bad.csv"
    bad.write_text("file,class\na.png,x\n")
    with pytest.raises(ConfigError, match="lacks path, label .its columns: file, class"):
        read_label_table(bad)
    table = label_table(tmp_path / "study")
    with pytest.raises(ConfigError, match="line 2: label 'none' is not among the classes"):
        CsvDataset(table, classes=("mild", "severe"))
    hand = tmp_path / "hand.csv"
    rows = table.read_text().splitlines()
    hand.write_text("\n".join([rows[0] + ",split"] + [r + (",test" if i == 1 else ",train") for i, r in
                                                     enumerate(rows[1:])]) + "\n")
    with pytest.raises(ConfigError, match="group 'patient0' is in the splits test, train"):
        split_table(hand, 0, 0, 0)
    (tmp_path / "study" / "images" / "p1_0.png").unlink()  # a listed file that is missing: skipped, named
    sample = CsvDataset(table)[3]
    assert isinstance(sample, bagnet.data.Skipped) and "p1_0.png" in sample.path
    with pytest.raises(ConfigError, match="--val-fraction"):
        train(config(table, tmp_path / "r", val_fraction=0.0, test_fraction=0.0), progress=False)
    assert not (tmp_path / "r").exists()
    with pytest.raises(ConfigError, match="evidence_l1 .--evidence-l1. must lie in"):
        config(table, tmp_path / "r", evidence_l1=-1.0)


def test_class_weights_and_a_balanced_sampler_follow_the_class_counts(tmp_path):
    from bagnet.train.splits import EpochBatches, Splits, class_balance

    targets = [0] * 30 + [1] * 10
    dataset = torch.utils.data.TensorDataset(torch.zeros(40))
    dataset.targets = targets
    splits = Splits(torch.utils.data.Subset(dataset, list(range(40))), None, dataset, ["common", "rare"])
    weights, per_image = class_balance(splits)
    assert weights.tolist() == pytest.approx([40 / 60, 40 / 20])
    drawn = [i for b in EpochBatches(40, 8, seed=0, epoch=0, weights=per_image) for i, _ in b]
    drawn += [i for b in EpochBatches(40, 8, seed=0, epoch=1, weights=per_image) for i, _ in b]
    rare = sum(targets[i] for i in drawn) / len(drawn)
    assert 0.35 < rare < 0.65  # about half, not a quarter
    again = [i for b in EpochBatches(40, 8, seed=0, epoch=1, weights=per_image, skip=2) for i, _ in b]
    assert again == drawn[40 + 16:]  # a resumed epoch draws the same images


def test_dicom_files_are_read_with_their_rescale_and_window(tmp_path):
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    from bagnet.data import load_image

    def write(path, stored, **extra):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.Rows, ds.Columns = stored.shape
        ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 1, 16, 12, 11, 0
        ds.PhotometricInterpretation = extra.pop("photometric", "MONOCHROME2")
        for key, value in extra.items():
            setattr(ds, key, value)
        ds.PixelData = stored.astype(np.uint16).tobytes()
        ds.save_as(path, enforce_file_format=True)

    stored = np.array([[0, 1000], [2000, 4000]])
    write(tmp_path / "a.dcm", stored, RescaleSlope=1, RescaleIntercept=-1000, WindowCenter=0, WindowWidth=2000)
    # modality values −1000, 0, 1000, 3000 HU through the file's window [−1000, 1000]
    assert np.asarray(load_image(tmp_path / "a.dcm"))[..., 0].tolist() == [[0, 128], [255, 255]]
    assert np.asarray(load_image(tmp_path / "a.dcm", window=(-1000, 3000)))[..., 0].tolist() == [[0, 64], [128, 255]]
    write(tmp_path / "b.dcm", stored, photometric="MONOCHROME1")  # no window: its range, inverted
    assert np.asarray(load_image(tmp_path / "b.dcm"))[..., 0].tolist() == [[255, 191], [127, 0]]
    (tmp_path / "c.dcm").write_bytes(b"not a dicom file")
    with pytest.raises(bagnet.data.ImageReadError, match="cannot read DICOM file .*c.dcm"):
        load_image(tmp_path / "c.dcm")


def test_a_dicom_file_has_its_size_from_the_header(tmp_path):
    pytest.importorskip("pydicom")
    from bagnet.data import image_size

    test_dicom_files_are_read_with_their_rescale_and_window(tmp_path)
    assert image_size(tmp_path / "a.dcm") == (2, 2)


def test_the_head_is_kept_only_for_the_same_classes(tmp_path):
    from bagnet.train.transfer import initial_model

    shipped = bagnet.load(SHIPPED)
    same, report = initial_model(TrainConfig(init=SHIPPED), shipped.categories)
    assert report.new == 0 and torch.equal(same.fc.weight, shipped.fc.weight)
    other = [f"class{i}" for i in range(10)]  # ten classes too, but other ones: a fresh head
    fresh, report = initial_model(TrainConfig(init=SHIPPED), other)
    assert report.new == fresh.fc.weight.numel() + fresh.fc.bias.numel()
    assert not torch.equal(fresh.fc.weight, shipped.fc.weight) and "10 others" in report.describe()
    # the same classes listed in another order (sorted folder names, a --classes list): the rows follow the names
    shuffled = sorted(shipped.categories)
    assert shuffled != list(shipped.categories)
    moved, report = initial_model(TrainConfig(init=SHIPPED), shuffled)
    assert report.new == 0 and report.reordered and "your class order" in report.describe()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before, after = shipped.eval()(x), moved.eval()(x)
    for j, name in enumerate(shuffled):  # the logit of each class is the one the shipped model gave it
        torch.testing.assert_close(after[:, j], before[:, list(shipped.categories).index(name)])


def test_explain_reports_each_images_evidence_sparsity(tmp_path):
    from bagnet.sparsity import map_sparsity

    model = bagnet.load(SHIPPED)
    rng = np.random.default_rng(5)
    Image.fromarray(rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    result = bagnet.explain([tmp_path / "a.png"], model, progress=False)
    one = result.images[0]
    x = model.preprocess(Image.open(tmp_path / "a.png")).unsqueeze(0)
    with torch.no_grad():
        maps = model.evidence(x)[0, one.classes[0]] - model.fc.bias[one.classes[0]]
    want = map_sparsity(maps[None])
    assert one.sparsity["gini"] == pytest.approx(float(want.gini[0]), rel=1e-5)
    assert one.to_dict()["sparsity"]["top5_share"] == pytest.approx(float(want.top_share[0]), rel=1e-5)


def test_a_validation_at_chance_beside_a_fitted_training_split_points_at_freeze_bn():
    from types import SimpleNamespace

    from bagnet.train.transfer import batchnorm_hint

    nn = torch.nn
    bn, plain = nn.Sequential(nn.Conv2d(1, 1, 1), nn.BatchNorm2d(1)), nn.Sequential(nn.Conv2d(1, 1, 1))
    drifted = SimpleNamespace(val_top1=0.10, train_top1=0.80)  # what a black-canvas run without --freeze-bn logged
    hint = batchnorm_hint(drifted, 10, TrainConfig(), bn)
    assert hint is not None and "--precise-bn" in hint and "--freeze-bn" in hint and "0.100" in hint and "0.800" in hint
    assert "--precise-bn" not in batchnorm_hint(drifted, 10, TrainConfig(precise_bn=8), bn)  # tried: the other cure
    assert batchnorm_hint(drifted, 10, TrainConfig(freeze_bn=True), bn) is None  # already frozen: nothing to suggest
    assert batchnorm_hint(drifted, 10, TrainConfig(), plain) is None  # no BatchNorm (a ViT): another cause
    assert batchnorm_hint(SimpleNamespace(val_top1=0.55, train_top1=0.80), 10, TrainConfig(), bn) is None  # overfit
    assert batchnorm_hint(SimpleNamespace(val_top1=0.12, train_top1=0.20), 10, TrainConfig(), bn) is None  # early
    assert batchnorm_hint(SimpleNamespace(val_top1=float("nan"), train_top1=0.9), 10, TrainConfig(), bn) is None
    assert batchnorm_hint(SimpleNamespace(val_top1=0.52, train_top1=0.97), 2, TrainConfig(), bn) is not None  # binary


def test_the_batchnorm_hint_is_said_once_a_run(tmp_path, monkeypatch):
    import bagnet.train.loop as loop

    monkeypatch.setattr(loop, "batchnorm_hint", lambda *a: "note: a hint")  # as if every epoch sat at chance
    said: list[str] = []
    train(config(one_folder(tmp_path / "photos"), tmp_path / "run", epochs=3, test_fraction=0.0), progress=False,
          log=said.append)
    assert sum(line.startswith("epoch ") for line in said) == 3 and said.count("note: a hint") == 1


# ------------------------------------------------------------------------------------------------ precise BN
def test_precise_bn_says_when_there_is_no_batchnorm_to_re_estimate():
    from bagnet.train.transfer import precise_bn_note

    nn = torch.nn
    bn = nn.BatchNorm2d(1)
    with_bn, plain = nn.Sequential(nn.Conv2d(1, 1, 1), bn), nn.Sequential(nn.Conv2d(1, 1, 1), nn.LayerNorm(1))
    assert precise_bn_note(with_bn, [], TrainConfig(precise_bn=4)) is None
    assert precise_bn_note(with_bn, [], TrainConfig()) is None  # not asked for
    note = precise_bn_note(plain, [], TrainConfig(precise_bn=4))
    assert note is not None and "--precise-bn 4" in note and "Sequential" in note and "at all" in note
    assert "frozen" in precise_bn_note(with_bn, [with_bn], TrainConfig(precise_bn=4))  # all of it frozen
    assert precise_bn_note(nn.Sequential(nn.BatchNorm2d(1, track_running_stats=False)), [],
                           TrainConfig(precise_bn=4)) is not None  # batch statistics always: nothing kept to estimate


class _Images(torch.utils.data.Dataset):
    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i], 0


def test_precise_bn_is_the_plain_average_over_the_epochs_batches():
    from bagnet.train.splits import EpochBatches
    from bagnet.train.transfer import precise_bn

    torch.manual_seed(0)
    images = torch.randn(24, 3, 5, 5) * torch.tensor([1.0, 3.0, 0.5])[:, None, None] + torch.tensor([2.0, -1, 0])[
        :, None, None]
    bn, frozen = torch.nn.BatchNorm2d(3), torch.nn.BatchNorm2d(3)
    model = torch.nn.Sequential(bn, torch.nn.ReLU(), frozen).train()
    frozen.eval()  # a frozen layer (--freeze-stages, --freeze-bn) keeps its statistics
    for m in (bn, frozen):
        m.running_mean.fill_(100.0)  # stale statistics, replaced rather than averaged in
        m.running_var.fill_(7.0)
    config = TrainConfig(precise_bn=3, batch_size=8, seed=5, workers=0)
    assert precise_bn(model, _Images(images), config, 2, torch.device("cpu")) == 1
    order = [[i for i, _ in b] for b in EpochBatches(24, 8, 5, 2)]
    assert sorted(i for b in order for i in b) == list(range(24))
    # the reference, from the images alone: all 24 read, so the mean is theirs; the variance the mean of the three
    # batches' unbiased variances (BatchNorm's running variance per batch)
    torch.testing.assert_close(bn.running_mean, images.mean((0, 2, 3)))
    batch_vars = torch.stack([images[b].transpose(0, 1).reshape(3, -1).var(1) for b in order])
    torch.testing.assert_close(bn.running_var, batch_vars.mean(0))
    assert bn.momentum == 0.1  # restored after the pass
    assert torch.equal(frozen.running_mean, torch.full((3,), 100.0))
    # off, or no whole batch to read: nothing changes
    before = bn.running_mean.clone()
    assert precise_bn(model, _Images(images), TrainConfig(precise_bn=0), 2, torch.device("cpu")) == 0
    assert precise_bn(model, _Images(images[:5]), config, 2, torch.device("cpu")) == 0
    assert torch.equal(bn.running_mean, before)


def test_precise_bn_runs_resume_exactly_and_conflicts_with_frozen_statistics(tmp_path):
    data = one_folder(tmp_path / "photos")
    fast = dict(precise_bn=2, val_fraction=0.3, test_fraction=0.0)  # no test split: one final evaluation
    whole = train(config(data, tmp_path / "whole", **fast), progress=False, log=lambda m: None)
    cut = config(data, tmp_path / "cut", **fast)
    train(cut, progress=False, log=lambda m: None, stop_after_steps=1)
    resumed = train(cut, resume=True, progress=False, log=lambda m: None)
    a, b = state(bagnet.load(tmp_path / "whole")), state(bagnet.load(tmp_path / "cut"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h.val_top1 for h in whole.history] == [h.val_top1 for h in resumed.history]
    # every BatchNorm's statistics are the average over the epoch's first two batches, not a running average over
    # the initial model's training and this run's steps
    counts = {k: int(v) for k, v in a.items() if k.endswith("num_batches_tracked")}
    assert counts and set(counts.values()) == {2}, counts
    assert "re-estimated over 2 training batches" in (tmp_path / "whole" / "model.md").read_text()
    with pytest.raises(ConfigError, match="precise_bn.*freeze_bn"):
        TrainConfig(precise_bn=4, freeze_bn=True)
    with pytest.raises(ConfigError, match="precise_bn"):
        TrainConfig(precise_bn=-1)
