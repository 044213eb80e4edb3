"""The paper's setting by name: ImageNet validation data in its three common layouts, torchvision and timm models by
spec (weights from local files: no network), and every command on them."""

from __future__ import annotations

import csv
import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import bagnet
from bagnet.data import default_data_root, evaluation_dataset, subset_indices
from bagnet.data.imagenet import ImageNetVal, detect_layout, imagenet_wnids
from bagnet.models import model_label

# (WordNet id, standard ImageNet index) of the classes used; file i belongs to CLASSES[i % 3]
CLASSES = [("n01440764", 0), ("n02102040", 217), ("n03000684", 491)]
N = 9


def _image(i: int) -> Image.Image:
    rng = np.random.default_rng(i)
    return Image.fromarray(rng.integers(0, 256, (40 + i, 48, 3), dtype=np.uint8))


def _name(i: int) -> str:
    return f"ILSVRC2012_val_{i + 1:08d}.JPEG"


def _write(path: Path, i: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _image(i).save(path, format="JPEG")


def make_layout(root: Path, kind: str) -> Path:
    """A tiny ImageNet validation folder of ``kind``: folders | kaggle | torchvision (meta.bin, class folders) |
    torchvision-flat (meta.bin, flat val/) | devkit (the devkit archive, flat val/)."""
    wnid = lambda i: CLASSES[i % 3][0]  # noqa: E731
    if kind == "folders":
        for i in range(N):
            _write(root / "val" / wnid(i) / _name(i), i)
    elif kind == "kaggle":
        for i in range(N):
            _write(root / "ILSVRC" / "Data" / "CLS-LOC" / "val" / _name(i), i)
        with open(root / "LOC_val_solution.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["ImageId", "PredictionString"])
            for i in reversed(range(N)):  # the Kaggle file is not in file-name order
                w.writerow([_name(i)[:-5], f"{wnid(i)} 1 2 30 40 {wnid(i)} 3 4 20 20"])
    elif kind in ("torchvision", "torchvision-flat"):
        for i in range(N):
            _write(root / "val" / (wnid(i) + "/" if kind == "torchvision" else "") / _name(i), i)
        torch.save(({w: ("name",) for w, _ in CLASSES}, [wnid(i) for i in range(N)]), root / "meta.bin")
    elif kind == "devkit":
        from scipy.io import savemat

        for i in range(N):
            _write(root / "val" / _name(i), i)
        fields = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children", "wordnet_height",
                  "num_train_images"]
        synsets = np.zeros((4,), dtype=[(f, "O") for f in fields])
        for k, (w, _) in enumerate(CLASSES):
            synsets[k] = (k + 1, w, "words", "gloss", 0, np.zeros(0), 0, 1300)
        synsets[3] = (4, "n00001740", "entity", "gloss", 3, np.zeros(0), 18, 0)  # an inner node: not a class
        meta = io.BytesIO()
        savemat(meta, {"synsets": synsets})
        truth = "\n".join(str(i % 3 + 1) for i in range(N)).encode()
        with tarfile.open(root / "ILSVRC2012_devkit_t12.tar.gz", "w:gz") as tar:
            for name, data in (("meta.mat", meta.getvalue()), ("ILSVRC2012_validation_ground_truth.txt", truth)):
                info = tarfile.TarInfo(f"ILSVRC2012_devkit_t12/data/{name}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    else:
        raise ValueError(kind)
    return root


KINDS = ("folders", "kaggle", "torchvision", "torchvision-flat", "devkit")


def _expected() -> list[tuple[str, int]]:
    return [(_name(i), CLASSES[i % 3][1]) for i in range(N)]


@pytest.mark.parametrize("kind", KINDS)
def test_every_layout_gives_the_standard_labels_in_file_name_order(tmp_path, kind):
    root = make_layout(tmp_path / kind, kind)
    before = sorted(str(p) for p in root.rglob("*"))
    ds = ImageNetVal(root)
    assert ds.layout == {"torchvision-flat": "torchvision", "devkit": "torchvision"}.get(kind, kind)
    assert [(os.path.basename(p), t) for p, t in ds.samples] == _expected()
    assert len(ds.categories) == 1000 and ds.categories[0] == "tench" and ds.categories[217] == "English springer"
    image, label, index = ds[4]
    assert label == CLASSES[4 % 3][1] and index == 4 and image.size == (48, 44)
    assert sorted(str(p) for p in root.rglob("*")) == before  # nothing extracted or written
    # --limit/--seed pick the same files in every layout
    picked = [os.path.basename(ds.samples[i][0]) for i in subset_indices(len(ds), 4, seed=3)]
    assert picked == [_name(i) for i in subset_indices(N, 4, seed=3)]
    dataset, categories, name = evaluation_dataset(f"imagenet:{root}")
    assert len(dataset) == N and categories == ds.categories and "imagenet/val" in name


def test_wnids_are_the_1000_sorted_ids_and_agree_with_the_class_names():
    wnids = imagenet_wnids()
    assert len(wnids) == 1000 and wnids[0] == "n01440764" and wnids[217] == "n02102040"
    assert len(bagnet.models.imagenet_categories()) == 1000


def test_unknown_layouts_and_bad_labels_are_named(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no ImageNet validation split"):
        detect_layout(tmp_path / "empty")
    root = make_layout(tmp_path / "k", "kaggle")
    (root / "ILSVRC" / "Data" / "CLS-LOC" / "val" / "ILSVRC2012_val_00000099.JPEG").write_bytes(b"x")
    with pytest.raises(ValueError, match="no label for 1 images"):
        ImageNetVal(root)
    bad = make_layout(tmp_path / "f", "folders")
    (bad / "val" / "n99999999").mkdir()
    _write(bad / "val" / "n99999999" / "x.JPEG", 0)
    with pytest.raises(ValueError, match="not ImageNet-1k WordNet ids"):
        ImageNetVal(bad)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageNetVal(tmp_path / "missing")


def test_imagenette_in_the_folder_layout_carries_its_imagenet_indices(tmp_path):
    source = default_data_root() / "imagenette2-160"
    if not (source / "classes.csv").is_file():
        pytest.skip(f"Imagenette not found under {default_data_root()} (set BAGNET_DATA to the folder holding "
                    f"imagenette2-160)")
    rows = list(csv.DictReader(open(source / "classes.csv")))
    for row in rows:  # two images per class, linked into a WordNet-id folder layout
        for image in sorted((source / "val" / row["wnid"]).iterdir())[:2]:
            (tmp_path / "val" / row["wnid"]).mkdir(parents=True, exist_ok=True)
            os.symlink(image, tmp_path / "val" / row["wnid"] / image.name)
    ds = ImageNetVal(tmp_path)
    by_wnid = {r["wnid"]: int(r["imagenet_index"]) for r in rows}
    assert sorted(set(ds.targets)) == sorted(by_wnid.values())
    for path, label in ds.samples:
        assert label == by_wnid[Path(path).parent.name]


# ---------------------------------------------------------------------------------------------------- models by name
@pytest.fixture(scope="module")
def local_models(tmp_path_factory):
    """Random-weight state dicts of a torchvision and a timm architecture, saved as users keep them."""
    import timm
    import torchvision

    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    tv = torchvision.models.resnet18()
    torch.save(tv.state_dict(), folder / "resnet18.pth")
    tm = timm.create_model("vit_tiny_patch16_224", pretrained=False)
    from safetensors.torch import save_file

    save_file(tm.state_dict(), folder / "vit_tiny.safetensors")
    return {"tv": f"torchvision:resnet18:{folder / 'resnet18.pth'}",
            "timm": f"timm:vit_tiny_patch16_224:{folder / 'vit_tiny.safetensors'}", "tv_model": tv, "timm_model": tm}


def test_torchvision_and_timm_specs_load_local_files_with_their_own_preprocessing(local_models):
    tv = bagnet.load(local_models["tv"])
    assert tv.meta.name == "torchvision:resnet18" and tv.meta.num_classes == 1000
    assert tv.meta.preprocess == bagnet.Preprocess(256, 224) and tv.categories[0] == "tench"
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(tv(x), local_models["tv_model"].eval()(x))
    vit = bagnet.load(local_models["timm"])
    p = vit.meta.preprocess
    assert (p.crop, p.mean, p.interpolation) == (224, (0.5, 0.5, 0.5), "bicubic") and p.resize == int(224 / 0.9)
    assert model_label(local_models["timm"]) == "timm:vit_tiny_patch16_224"


def test_model_spec_errors_name_the_problem(tmp_path):
    with pytest.raises(bagnet.WeightsError, match="no classification model 'nonet'"):
        bagnet.load("torchvision:nonet")
    with pytest.raises(bagnet.WeightsError, match="has no weights 'NOPE'.*IMAGENET1K_V1"):
        bagnet.load("torchvision:vgg16:NOPE")
    with pytest.raises(bagnet.WeightsError, match="timm has no model"):
        bagnet.load("timm:not_a_model_xyz")
    torch.save({"fc.weight": torch.zeros(3, 7)}, tmp_path / "wrong.pth")
    with pytest.raises(bagnet.WeightsError, match="wrong.pth does not fit ResNet"):
        bagnet.load(f"torchvision:resnet18:{tmp_path / 'wrong.pth'}")


def test_torchvision_weights_offline_name_the_cache_file_and_a_wrong_file_is_refused(offline_hub):
    from bagnet.models import weights as weights_mod

    with pytest.raises(weights_mod.WeightsUnavailableError) as err:
        bagnet.load("torchvision:resnet18")
    cached = offline_hub / "checkpoints" / "resnet18-f37072fd.pth"
    assert str(cached) in str(err.value) and "by hand" in str(err.value)
    cached.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"x": torch.zeros(1)}, cached)  # a file of that name whose hash is not torchvision's
    with pytest.raises(bagnet.WeightsError, match="expected a hash starting with f37072fd"):
        bagnet.load("torchvision:resnet18")


def test_fetch_verified_downloads_once_and_checks_the_hash(tmp_path, monkeypatch):
    import hashlib

    from bagnet.models.weights import fetch_verified

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    source = tmp_path / "src" / "w.pth"
    source.parent.mkdir()
    torch.save({"a": torch.arange(3.0)}, source)
    prefix = hashlib.sha256(source.read_bytes()).hexdigest()[:8]
    named = source.with_name(f"w-{prefix}.pth")
    source.rename(named)
    path = fetch_verified(named.as_uri(), progress=False)
    assert path == tmp_path / "hub" / "checkpoints" / named.name and path.read_bytes() == named.read_bytes()
    path.write_bytes(b"tampered")
    with pytest.raises(bagnet.WeightsError, match="SHA-256"):
        fetch_verified(named.as_uri(), progress=False)


def test_torchvision_named_weights_carry_torchvisions_metadata(tmp_path, monkeypatch):
    import torchvision

    from bagnet.models import external

    net = torchvision.models.resnet18()
    torch.save(net.state_dict(), tmp_path / "cached.pth")
    monkeypatch.setattr(external, "fetch_verified", lambda url, progress=True, what="": tmp_path / "cached.pth")
    model = bagnet.load("torchvision:resnet18:IMAGENET1K_V1")
    meta = model.meta
    assert meta.categories[0] == "tench" and meta.resolution == 224 and "resnet18-f37072fd.pth" in meta.source
    assert meta.metrics["imagenet/val (reported by torchvision, IMAGENET1K_V1)"]["top1"] == pytest.approx(0.69758)


def _cli(*args: str) -> int:
    from bagnet.cli import main

    return main(list(args))


def test_evaluate_runs_torchvision_and_timm_models(tmp_path, local_models, capsys):
    root = make_layout(tmp_path / "inet", "devkit")
    for key in ("tv", "timm"):
        out = tmp_path / f"eval-{key}"
        code = _cli("evaluate", "--model", local_models[key], "--data", f"imagenet:{root}", "--out", str(out),
                    "--workers", "0", "--no-progress")
        assert code == 0, capsys.readouterr().err
        result = json.loads((out / "evaluation.json").read_text())
        assert result["images"] == N and "imagenet/val" in result["dataset"]


def test_experiments_and_attribution_run_on_torchvision_and_timm_models(tmp_path, local_models, capsys):
    root = make_layout(tmp_path / "inet", "kaggle")
    models = [local_models["tv"], local_models["timm"]]
    data = ["--data", f"imagenet:{root}", "--no-progress", "--limit", "3"]
    runs = {
        "scrambling": ["experiment", "scrambling", "--models", *models, "--grids", "1", "2", *data],
        "similarity": ["experiment", "similarity", "--models", *models, *data],
        "masking": ["experiment", "masking", "--models", *models, "--ks", "0", "1", "--block", "112", *data],
        "interactions": ["experiment", "interactions", "--models", *models, "--gaps", "0", "64", "--region", "32",
                         *data],
        "attribution": ["attribution", "--models", local_models["tv"], "--methods", "saliency", "gradcam",
                        "--steps", "2", *data],
    }
    for name, args in runs.items():
        code = _cli(*args, "--out", str(tmp_path / name))
        assert code == 0, f"{name}: {capsys.readouterr().err[-2000:]}"
        assert any((tmp_path / name).glob("*.json")), name
    scrambling = json.loads((tmp_path / "scrambling" / "scrambling.json").read_text())
    assert scrambling["models"] == ["torchvision:resnet18", "timm:vit_tiny_patch16_224"] and scrambling["images"] == 3
    # commands that need a BagNet say so
    capsys.readouterr()
    assert _cli("certify", "--model", local_models["tv"], *data, "--out", str(tmp_path / "c")) == 2
    err = capsys.readouterr().err
    assert "BagNet" in err and "Traceback" not in err


def test_timm_pretrained_offline_names_the_source_and_the_way_out(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # never reach the network from tests
    with pytest.raises(bagnet.models.WeightsUnavailableError) as err:
        bagnet.load("timm:resnet18")
    message = str(err.value)
    assert "timm/resnet18" in message and "timm:resnet18:/path/to/file" in message
