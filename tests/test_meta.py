"""The one metadata object every model carries (``model.meta``): what loaders attach, what listings read without
loading tensors, what survives a save and load, and what is read from models that come from elsewhere."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import torchvision
from torchvision import transforms

import bagnet
from bagnet.models import ModelMeta, Preprocess, attach_meta, list_models, model_entry, model_meta


def _shipped() -> list[str]:
    return [n for n in list_models(pretrained=True) if n.split(":")[-1] not in ("imagenet", "imagenet-v2") and n != "default"]


@pytest.mark.parametrize("name", _shipped())
def test_shipped_meta_read_from_the_header_equals_the_loaded_models(name):
    model = bagnet.load(name)
    listed = model_entry(name).meta
    assert model.meta == listed
    assert model.meta.name == model.name and name.startswith(model.name.split("_")[0])
    assert len(model.meta.categories) == model(torch.zeros(1, 3, 64, 64)).shape[1] == 10
    assert model.meta.resolution == model.meta.preprocess.crop == 128
    top1 = model.meta.metrics["imagenette/val"]["top1"]
    assert 0.5 < top1 < 1 and model.meta.metrics["imagenette/val"]["images"] == 3925
    if isinstance(model, bagnet.BagNet):
        assert model.meta.patch_size == model.patch_size
    else:
        assert model.meta.patch_size is None
    # the mirrors of the metadata agree with it
    assert model.categories == list(model.meta.categories) and model.preprocess is model.meta.preprocess


def test_default_is_the_model_it_names():
    assert model_entry("default").meta == bagnet.load("default").meta
    assert model_entry("default").alias_of in _shipped()


def test_paper_entries_need_no_download_to_describe():
    meta = model_entry("bagnet33:imagenet").meta
    assert meta.patch_size == 33 and meta.resolution == 224 and meta.num_classes == 1000
    assert "bitbucket" in meta.source and meta.metrics["imagenet/val (reported, 224 px fp32)"]["top1"] == pytest.approx(0.667)
    random = bagnet.load("bagnet9").meta
    assert random.patch_size == 9 and random.categories is None and "random" in random.describe()


def test_user_changes_on_the_model_win_over_the_attached_meta():
    model = bagnet.load("bagnet9:imagenette")
    model.categories = [f"c{i}" for i in range(10)]
    model.preprocess = Preprocess(160, 144, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    meta = model_meta(model)
    assert meta.categories[0] == "c0" and meta.preprocess.crop == 144 and meta.preprocess.mean == (0.5, 0.5, 0.5)
    assert meta.patch_size == 9  # what the user did not touch stays


def test_meta_of_a_torchvision_model_reads_its_compose():
    net = torchvision.models.resnet18(num_classes=4)
    net.preprocess = transforms.Compose([transforms.Resize(72), transforms.CenterCrop(64), transforms.ToTensor(),
                                         transforms.Normalize([0.1, 0.2, 0.3], [0.4, 0.5, 0.6])])
    meta = model_meta(net)
    assert meta.preprocess == Preprocess(72, 64, (0.1, 0.2, 0.3), (0.4, 0.5, 0.6))
    assert meta.patch_size is None and meta.categories is None
    bare = model_meta(torchvision.models.resnet18(num_classes=4))
    assert bare.preprocess == Preprocess()  # ImageNet's 256/224 and mean/std when nothing says otherwise


def test_save_and_load_keep_the_meta(tmp_path):
    model = bagnet.BagNet(layers=(1, 1, 1, 1), width=8, num_classes=3)
    attach_meta(model, ModelMeta(name="tiny", arch="bagnet", categories=("a", "b", "c"), patch_size=model.patch_size,
                                 preprocess=Preprocess(40, 32, (0.4, 0.4, 0.4), (0.2, 0.3, 0.4))))
    loaded = bagnet.load(bagnet.save_weights(model, tmp_path / "tiny.safetensors"))
    assert loaded.meta.name == "tiny" and loaded.meta.categories == ("a", "b", "c")
    assert loaded.meta.preprocess == model.meta.preprocess and loaded.meta.resolution == 32
    assert loaded.meta.source == str(tmp_path / "tiny.safetensors")


def test_metrics_beside_a_file_are_read_and_a_broken_one_is_named(tmp_path):
    model = bagnet.BagNet(layers=(1, 1, 1, 1), width=8, num_classes=3)
    path = bagnet.save_weights(model, tmp_path / "m.safetensors")
    (tmp_path / "m.json").write_text(json.dumps({"metrics": {"mine/val": {"top1": 0.5}}}))
    assert bagnet.load(path).meta.metrics == {"mine/val": {"top1": 0.5}}
    (tmp_path / "m.json").write_text("{not json")
    with pytest.raises(bagnet.WeightsError, match="m.json"):
        bagnet.load(path)


def test_explain_uses_the_models_own_normalisation():
    from bagnet.explanation import ExplainConfig, explain_image
    from PIL import Image

    model = bagnet.load("bagnet9:imagenette")
    image = Image.new("RGB", (64, 64), (120, 60, 200))
    before = explain_image(model, image, config=ExplainConfig(size=64))
    model.preprocess = Preprocess(64, 64, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    after = explain_image(model, image, config=ExplainConfig(size=64))
    x = torch.tensor([120, 60, 200], dtype=torch.float32)[:, None, None].expand(3, 64, 64)[None] / 255
    with torch.no_grad():
        expected = model(x)[0]
    assert torch.allclose(torch.tensor(after.logits, dtype=torch.float64), expected[after.classes].double(), atol=1e-4)
    assert not torch.allclose(torch.tensor(before.logits, dtype=torch.float64), expected[before.classes].double(), atol=1e-2)


def test_cli_models_lists_metadata_and_json():
    out = subprocess.run([sys.executable, "-m", "bagnet", "models"], capture_output=True, text=True, check=True).stdout
    line = next(l for l in out.splitlines() if l.startswith("bagnet33:imagenette"))
    assert "patch 33" in line and "128 px" in line and "top-1 80.2 %" in line
    assert next(l for l in out.splitlines() if l.startswith("default")).split()[1:3] == ["=", "bagnet33:imagenette:"]
    data = json.loads(subprocess.run([sys.executable, "-m", "bagnet", "models", "--json", "--pretrained"],
                                     capture_output=True, text=True, check=True).stdout)
    assert data["vgg11:imagenette"]["preprocess"]["crop"] == 128 and data["vgg11:imagenette"]["patch_size"] is None
    assert "bagnet9" not in data
