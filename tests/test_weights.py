"""Reading and checking weights: released-format checkpoints, local files, the official download path."""

import hashlib
import urllib.error

import pytest
import torch

import bagnet
from bagnet import BagNet, BagNetConfig, WeightsError
from bagnet.models import pretrained
from bagnet.models import weights as weights_mod
from test_architecture import spec_shapes


def released_style_checkpoint(q, num_classes=1000, drop_counters=False):
    """A random state dict with exactly the released parameter names and shapes (built from the spec)."""
    g = torch.Generator().manual_seed(q)
    sd = {}
    for key, shape in spec_shapes(q, num_classes).items():
        if key.endswith("num_batches_tracked"):
            if not drop_counters:
                sd[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            sd[key] = torch.rand(shape, generator=g) + 0.5
        else:
            sd[key] = torch.randn(shape, generator=g) * 0.05
    return sd


@pytest.mark.parametrize("q", [9, 17, 33])
def test_released_format_loads_strictly(tmp_path, q):
    sd = released_style_checkpoint(q)
    path = tmp_path / f"bagnet{q}.pth.tar"
    torch.save(sd, path)
    model = getattr(bagnet, f"bagnet{q}")(weights=path)
    for key, value in model.state_dict().items():
        assert torch.equal(value, sd[key]), key


def test_legacy_serialization_without_batchnorm_counters_loads(tmp_path):
    """Checkpoints from PyTorch < 1.6 use the legacy (non-zip) format; < 0.4.1 had no num_batches_tracked."""
    sd = released_style_checkpoint(9, drop_counters=True)
    path = tmp_path / "bagnet8-legacy.pth.tar"
    torch.save(sd, path, _use_new_zipfile_serialization=False)
    model = bagnet.bagnet9(weights=path)
    torch.testing.assert_close(model.fc.weight, sd["fc.weight"])


def test_wrapped_and_dataparallel_checkpoints_load(tmp_path):
    sd = released_style_checkpoint(17)
    path = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3}, path)
    model = bagnet.bagnet17(weights=path)
    torch.testing.assert_close(model.conv1.weight, sd["conv1.weight"])


def test_wrong_architecture_names_keys_and_shapes(tmp_path):
    sd = released_style_checkpoint(17)
    path = tmp_path / "bagnet17.pth"
    torch.save(sd, path)
    with pytest.raises(WeightsError) as err:
        bagnet.bagnet33(weights=path)  # BagNet-33 has 3×3 conv2 in layer4.0
    msg = str(err.value)
    assert str(path) in msg
    assert "layer4.0.conv2.weight: checkpoint has shape [512, 512, 1, 1], model expects [512, 512, 3, 3]" in msg


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    sd = released_style_checkpoint(9)
    del sd["layer2.1.bn2.weight"]
    sd["head.extra"] = torch.zeros(3)
    path = tmp_path / "broken.pth"
    torch.save(sd, path)
    with pytest.raises(WeightsError, match=r"missing keys \(1\): layer2\.1\.bn2\.weight") as err:
        bagnet.bagnet9(weights=path)
    assert "unexpected keys (1): head.extra" in str(err.value)


def test_wrong_number_of_classes_says_so(tmp_path):
    path = tmp_path / "ten.pth"
    torch.save(released_style_checkpoint(9, num_classes=10), path)
    with pytest.raises(WeightsError, match=r"fc\.weight: checkpoint has shape \[10, 2048\], model expects \[1000, 2048\]") as err:
        bagnet.bagnet9(weights=path)
    assert "pass num_classes=10" in str(err.value)
    assert bagnet.bagnet9(weights=path, num_classes=10).num_classes == 10


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04garbage"])
@pytest.mark.parametrize("suffix", [".pth.tar", ".safetensors"])
def test_corrupt_file_gives_readable_error(tmp_path, content, suffix):
    path = tmp_path / f"corrupt{suffix}"
    path.write_bytes(content)
    with pytest.raises(WeightsError, match="could not read weights file .*corrupt"):
        bagnet.bagnet9(weights=path)


def test_truncated_checkpoint(tmp_path):
    path = tmp_path / "cut.pth"
    torch.save(released_style_checkpoint(9), path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(WeightsError, match="could not read weights file"):
        bagnet.load(path)


def test_missing_file():
    with pytest.raises(WeightsError, match="does not exist"):
        bagnet.bagnet9(weights="/nonexistent/weights.pth")


def test_safetensors_round_trip_keeps_config_and_metadata(tmp_path):
    config = BagNetConfig(layers=(1, 2, 1, 1), kernel3=(1, 1, 0, 0), width=8, num_classes=3)
    model = BagNet(config).eval()
    path = bagnet.save_weights(model, tmp_path / "small.safetensors", {"categories": ["a", "b", "c"], "name": "tiny"})
    loaded = bagnet.load(path)
    assert loaded.config == config and loaded.categories == ["a", "b", "c"] and loaded.name == "tiny"
    assert not loaded.training
    x = torch.randn(2, 3, 30, 40)
    torch.testing.assert_close(loaded(x), model(x))
    assert not list(tmp_path.glob("*.tmp"))


def test_load_infers_architecture_from_plain_state_dict(tmp_path):
    path = tmp_path / "q17.pth"
    torch.save(released_style_checkpoint(17), path)
    model = bagnet.load(path)
    assert model.patch_size == 17 and model.config.kernel3 == (1, 1, 1, 0)
    assert model.categories is not None and len(model.categories) == 1000 and model.categories[0] == "tench"
    assert bagnet.load(f"bagnet17:{path}").patch_size == 17


def test_registry_names_and_errors():
    names = bagnet.list_models()
    assert {"bagnet9", "bagnet17", "bagnet33", "bagnet33:imagenet"} <= set(names)
    pretrained = set(bagnet.list_models(pretrained=True))
    assert {"bagnet9:imagenet", "bagnet17:imagenet", "bagnet33:imagenet"} <= pretrained
    assert not {"bagnet9", "bagnet17", "bagnet33"} & pretrained
    assert bagnet.load("bagnet9").patch_size == 9
    with pytest.raises(KeyError, match="unknown model 'resnet9000'.*bagnet33:imagenet"):
        bagnet.load("resnet9000")


def test_preprocess_gives_normalised_224_crop():
    from PIL import Image

    model = bagnet.bagnet33()
    image = Image.new("L", (300, 500), color=124)  # grayscale, portrait
    x = model.preprocess(image)
    assert x.shape == (3, 224, 224)
    expected = (124 / 255 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(x[:, 100, 100], expected, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------ official weights, offline
def test_official_weights_offline_error_says_where_to_put_the_file(offline_hub):
    with pytest.raises(weights_mod.WeightsUnavailableError) as err:
        bagnet.bagnet33(weights="imagenet")
    msg = str(err.value)
    assert "bagnet32-2ddd53ed.pth.tar" in msg
    assert str(offline_hub / "checkpoints" / "bagnet32-2ddd53ed.pth.tar") in msg


def test_official_download_uses_the_hub_cache_and_hash_prefix(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    calls = []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        calls.append((url, dst, hash_prefix))
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    with pytest.raises(weights_mod.WeightsUnavailableError):
        bagnet.bagnet9(weights="imagenet")
    url, dst, prefix = calls[0]
    assert url == pretrained.PAPER_BASE_URL + "bagnet8-34f4ccd2.pth.tar"
    assert url.startswith("https://bitbucket.org/wielandbrendel/bag-of-feature-pretrained-models/raw/249e8fa8")
    assert dst.endswith("checkpoints/bagnet8-34f4ccd2.pth.tar") and prefix == "34f4ccd2"


def test_cached_file_with_wrong_hash_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    path = pretrained.official_cache_path(17)
    path.parent.mkdir(parents=True)
    torch.save(released_style_checkpoint(17), path)
    with pytest.raises(WeightsError, match="expected a hash starting with 105524de"):
        bagnet.bagnet17(weights="imagenet")


def test_hash_check_accepts_the_matching_prefix_only(tmp_path):
    path = tmp_path / "w.pth"
    torch.save(released_style_checkpoint(9), path)
    prefix = hashlib.sha256(path.read_bytes()).hexdigest()[:8]
    weights_mod._check_hash(path, prefix)  # the released file's prefix: accepted
    with pytest.raises(WeightsError, match="expected a hash starting with"):
        weights_mod._check_hash(path, "0" * 8 if not prefix.startswith("0") else "1" * 8)


def test_imagenet_weights_with_other_num_classes_is_refused():
    with pytest.raises(ValueError, match="1000 classes"):
        bagnet.bagnet9(weights="imagenet", num_classes=10)


def test_shipped_weights_are_found_by_name_with_their_card_and_default(tmp_path):
    from bagnet.models.registry import shipped_entries

    model = BagNet(BagNetConfig(layers=(1, 1, 1, 1), kernel3=(1, 1, 0, 0), width=8, num_classes=3))
    bagnet.save_weights(model, tmp_path / "bagnet9.toy.safetensors", {"categories": ["a", "b", "c"]})
    (tmp_path / "bagnet9.toy.md").write_text("# BagNet-9 on a toy set\n\nmore\n")
    (tmp_path / "DEFAULT").write_text("bagnet9:toy\n")
    entries = shipped_entries(tmp_path)
    assert set(entries) == {"bagnet9:toy", "default"}
    assert "BagNet-9 on a toy set" in entries["default"].description
    loaded = entries["default"].build()
    assert loaded.categories == ["a", "b", "c"]
    x = torch.randn(1, 3, 20, 20)
    torch.testing.assert_close(loaded.eval()(x), model.eval()(x))
    (tmp_path / "DEFAULT").write_text("bagnet33:missing\n")
    with pytest.raises(WeightsError, match="not among the shipped models"):
        shipped_entries(tmp_path)


def test_preprocess_is_a_typed_callable_with_normalize_and_denormalize():
    from PIL import Image

    from bagnet.models.preprocess import Preprocess, preprocess_normalisation, preprocess_size

    p = bagnet.load("default").preprocess
    assert isinstance(p, Preprocess) and (p.resize, p.crop) == (128, 128)
    assert preprocess_size(p) == 128 and preprocess_normalisation(p) == (p.mean, p.std)
    x = p(Image.new("RGB", (200, 150), (255, 0, 0)))
    assert x.shape == (3, 128, 128)
    pixels = p.denormalize(x)
    assert torch.allclose(pixels[:, 0, 0], torch.tensor([1.0, 0.0, 0.0]), atol=1e-6)
    assert torch.allclose(p.normalize(pixels), x, atol=1e-6)
    with pytest.raises(ValueError, match="std"):
        Preprocess(std=(0.2, 0.0, 0.2))


# ------------------------------------------------------------------------------------ weights as data
def test_builders_are_keyword_only_with_a_warning_shim_for_one_release(tmp_path):
    path = tmp_path / "b9.safetensors"
    bagnet.save_weights(bagnet.bagnet9(num_classes=3), path)
    with pytest.warns(DeprecationWarning, match=r"positionally .* bagnet 0\.3"):
        model = bagnet.bagnet9(path, num_classes=3)  # the old call still loads the file
    assert model.num_classes == 3 and model.meta.source == str(path)
    with pytest.raises(TypeError, match="keyword arguments only"):
        bagnet.bagnet9(None, 3)
    import inspect

    assert all(p.kind is p.KEYWORD_ONLY for p in inspect.signature(bagnet.bagnet33).parameters.values())


def test_every_named_weight_is_one_description_read_by_load_timm_and_the_listing(monkeypatch):
    import dataclasses

    timm = pytest.importorskip("timm")
    from bagnet.models import model_entry
    from bagnet.models.timm_registry import pretrained_cfg

    for name, entry in pretrained.WEIGHTS.items():
        assert name in bagnet.list_models(pretrained=True)
        assert model_entry(name).meta == entry.meta  # the registry's metadata is the description's
        cfg = pretrained_cfg(entry)
        assert cfg["url"] == entry.url and cfg["mean"] == entry.meta.preprocess.mean
        assert f"bagnet{entry.patch_size}.{entry.tag}" in timm.list_models(pretrained=True)
    # one change to the description reaches every reader
    entry = pretrained.WEIGHTS["bagnet17:imagenet"]
    changed = dataclasses.replace(entry, metrics={"elsewhere": {"top1": 0.5, "top5": 0.75}})
    monkeypatch.setitem(pretrained.WEIGHTS, entry.name, changed)
    assert "top-1 50.0 % on elsewhere" in model_entry("bagnet17:imagenet").description
    assert changed.top1 == 50.0 and changed.top5 == 75.0
    assert pretrained.OFFICIAL_WEIGHTS[33] is pretrained.WEIGHTS["bagnet33:imagenet"]  # views, not copies
    assert pretrained.V2_WEIGHTS[9].blob_sha1 == "627294f0b710355de8cfee3c1c2db35910b95396"


def test_a_description_of_the_wrong_patch_size_is_refused():
    with pytest.raises(ValueError, match="BagNet-33 weights, not BagNet-9"):
        bagnet.bagnet9(weights=pretrained.WEIGHTS["bagnet33:imagenet"])
    with pytest.raises(WeightsError, match="no 'imagenet-v3' weights"):
        pretrained.get_weights(9, "imagenet-v3")
