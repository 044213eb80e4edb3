"""Where users already are (issue 19): the wheel is the whole product, torch.hub, timm, ONNX and the Hugging Face
layout."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import bagnet

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                           "-q", "-w", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    (path,) = out.glob("bagnet-*.whl")
    return path


@pytest.mark.slow
def test_the_wheel_carries_the_weights_and_runs_the_main_job_outside_the_checkout(wheel, tmp_path):
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = sorted(p.name for p in (ROOT / "src" / "bagnet" / "weights").iterdir() if p.is_file())
    for name in shipped:  # weights, cards, metrics and the DEFAULT pointer
        assert f"bagnet/weights/{name}" in names, name
    assert "bagnet/py.typed" in names
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("dist-info/METADATA"))).decode()
    for field in ("Requires-Python: >=3.10", "License-Expression: MIT", "Classifier: ", "Project-URL: ",
                  f"Version: {bagnet.__version__}", "Requires-Dist: torch"):
        assert field in metadata, field
    site = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site),
                           str(wheel)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}
    env.pop("BAGNET_DATA", None)
    probe = subprocess.run([sys.executable, "-c", "import bagnet; m = bagnet.load('default'); "
                            "print(bagnet.__file__); print(m.name, len(m.categories))"],
                           cwd=elsewhere, env=env, capture_output=True, text=True)
    assert probe.returncode == 0, probe.stderr[-2000:]
    file, model = probe.stdout.split("\n")[:2]
    assert Path(file).is_relative_to(site) and model == "bagnet33 10"  # the installed copy, not the checkout
    version = subprocess.run([sys.executable, "-m", "bagnet", "--version"], cwd=elsewhere, env=env,
                             capture_output=True, text=True)
    assert version.stdout.strip().endswith(bagnet.__version__)
    pytest.importorskip("skimage")
    explained = subprocess.run([sys.executable, "-m", "bagnet", "explain", "--samples", "--out", "out"],
                               cwd=elsewhere, env=env, capture_output=True, text=True)
    assert explained.returncode == 0, explained.stderr[-2000:]
    assert (elsewhere / "out" / "report.html").is_file()
    assert len(list((elsewhere / "out" / "images").rglob("*.png"))) >= 4


def test_torch_hub_entry_points_from_a_local_checkout(tmp_path, offline_hub):
    import importlib.util

    spec = importlib.util.spec_from_file_location("hubconf", ROOT / "hubconf.py")
    hub = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hub)
    names = [n for n in dir(hub) if callable(getattr(hub, n)) and not n.startswith("_")]  # what torch.hub.list lists
    assert set(hub.dependencies) >= {"torch", "torchvision", "safetensors"}
    for name in ("bagnet9", "bagnet17", "bagnet33", "bagnet33_imagenette", "resnet18_imagenette"):
        assert name in names, names
    random = torch.hub.load(str(ROOT), "bagnet9", source="local", weights=None, num_classes=7)
    assert isinstance(random, bagnet.BagNet) and random.num_classes == 7 and random.patch_size == 9
    # a weights file by path
    bagnet.save_weights(random, tmp_path / "b9.safetensors")
    again = torch.hub.load(str(ROOT), "bagnet9", source="local", weights=str(tmp_path / "b9.safetensors"),
                           num_classes=7)
    x = torch.randn(1, 3, 40, 40)
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(x), random.eval()(x))
    # the official weights go through the same hash-checked download; offline, the error names the file
    with pytest.raises(bagnet.WeightsError, match="bagnet33|no network|download"):
        torch.hub.load(str(ROOT), "bagnet33", source="local", weights="imagenet")
    shipped = torch.hub.load(str(ROOT), "bagnet33_imagenette", source="local")
    reference = bagnet.load("bagnet33:imagenette")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(shipped(x), reference(x), rtol=0, atol=0)
    assert shipped.meta == reference.meta


def test_timm_builds_bagnets_own_model_with_the_pretrained_config(tmp_path, offline_hub):
    timm = pytest.importorskip("timm")
    assert set(timm.list_models("bagnet*")) >= {"bagnet9", "bagnet17", "bagnet33"}
    # timm lists pretrained weights with their tag, the paper's first (the default), BagNets v2 beside them
    assert timm.list_models("bagnet33*", pretrained=True) == ["bagnet33.imagenet", "bagnet33.imagenet-v2"]
    v2 = timm.create_model("bagnet9.imagenet-v2")
    assert v2.config.stem == "v2" and "bagnetsv2" in v2.pretrained_cfg["url"] and v2.pretrained_cfg["tag"] == "imagenet-v2"
    with pytest.raises(bagnet.WeightsError, match="bagnetsv2-bagnet9_imagenet_pretrained.pt"):
        timm.create_model("bagnet9.imagenet-v2", pretrained=True)
    model = timm.create_model("bagnet33", num_classes=7)
    assert isinstance(model, bagnet.BagNet) and model.num_classes == 7 and model.patch_size == 33
    assert model.evidence(torch.randn(1, 3, 48, 48)).shape == (1, 7, 2, 2)
    cfg = timm.data.resolve_data_config(model=model)
    assert cfg["input_size"] == (3, 224, 224) and cfg["crop_pct"] == 0.875 and cfg["mean"] == bagnet.models.IMAGENET_MEAN
    assert "bagnet32-2ddd53ed" in model.pretrained_cfg["url"]  # the official weights' source
    # pretrained=True goes through bagnet's hash-checked download: offline, the error names the file to place
    with pytest.raises(bagnet.WeightsError, match="bagnet16-105524de.pth.tar"):
        timm.create_model("bagnet17", pretrained=True)
    # a local file through timm's own overlay; another num_classes gets a fresh classifier on the same features
    source = bagnet.bagnet17(num_classes=1000).eval()
    bagnet.save_weights(source, tmp_path / "b17.safetensors")
    same = timm.create_model("bagnet17", pretrained=True,
                             pretrained_cfg_overlay={"file": str(tmp_path / "b17.safetensors")}).eval()
    x = torch.randn(1, 3, 40, 40)
    with torch.no_grad():
        torch.testing.assert_close(same(x), source(x))
    tuned = timm.create_model("bagnet17", pretrained=True, num_classes=4,
                              pretrained_cfg_overlay={"file": str(tmp_path / "b17.safetensors")}).eval()
    assert tuned.num_classes == 4 and tuned.get_classifier().out_features == 4
    with torch.no_grad():
        torch.testing.assert_close(tuned.features(x), source.features(x))
    with pytest.raises(TypeError, match="does not take"):
        timm.create_model("bagnet9", global_pool="max")


@pytest.mark.slow
def test_onnx_graph_gives_logits_and_evidence_at_odd_non_square_sizes(tmp_path):
    pytest.importorskip("onnxscript", reason="ONNX export needs onnxscript (pip install 'bagnet[export]')")
    ort = pytest.importorskip("onnxruntime", reason="the check runs the graph in onnxruntime")
    from bagnet.export import export_onnx

    model = bagnet.load("bagnet17:imagenette")
    path = export_onnx(model, tmp_path / "b17.onnx")
    assert model.inference_chunk_pixels is not None and not model.training  # the model is left as it was
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["logits", "evidence"]
    assert [i.name for i in session.get_inputs()] == ["image"]
    for shape in [(1, 3, 17, 17), (3, 3, 45, 101), (2, 3, 130, 77)]:
        x = torch.randn(*shape)
        logits, evidence = session.run(None, {"image": x.numpy()})
        with torch.no_grad():
            ref_logits, ref_evidence = model(x), model.evidence(x)
        assert evidence.shape == tuple(ref_evidence.shape) and logits.shape == tuple(ref_logits.shape)
        # tolerance: 1e-4 of the evidence's range (fp32 kernels of two runtimes sum in different orders)
        scale = float(ref_evidence.abs().max())
        np.testing.assert_allclose(evidence, ref_evidence.numpy(), rtol=0, atol=1e-4 * scale)
        np.testing.assert_allclose(logits, ref_logits.numpy(), rtol=0, atol=1e-4 * scale)
        np.testing.assert_allclose(evidence.mean(axis=(2, 3)), logits, rtol=0, atol=1e-4 * scale)


def test_hub_layout_export_loads_from_the_folder_and_from_a_prefilled_hub_cache(tmp_path):
    from bagnet.export import export_hf

    model = bagnet.load("bagnet9:imagenette")
    out = export_hf(model, tmp_path / "export")
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = __import__("json").loads((out / "config.json").read_text())
    assert config["patch_size"] == 9 and config["num_classes"] == 10 and config["id2label"]["0"] == "tench"
    assert config["preprocess"]["crop"] == 128 and config["bagnet_config"]["layers"] == [1, 2, 2, 1]
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: bagnet\n") and "Accuracy on the full validation split" in card
    again = bagnet.load(out)
    x = torch.randn(2, 3, 64, 72)
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x), rtol=0, atol=0)
    assert again.categories == model.categories and again.preprocess == model.preprocess
    # hf-hub:ORG/NAME through huggingface_hub's cache, offline: a cache laid out as a download leaves it
    pytest.importorskip("huggingface_hub")
    cache = tmp_path / "hf-cache"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = cache / "models--someone--bagnet9-imagenette" / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for p in out.iterdir():
        (snapshot / p.name).write_bytes(p.read_bytes())
    (cache / "models--someone--bagnet9-imagenette" / "refs").mkdir()
    (cache / "models--someone--bagnet9-imagenette" / "refs" / "main").write_text(commit)
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    code = ("import bagnet, torch; torch.manual_seed(0); x = torch.randn(1, 3, 40, 40); "
            "m = bagnet.load('hf-hub:someone/bagnet9-imagenette'); print(m.patch_size, m(x).argmax().item());"
            "print(m(x).tolist())")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    torch.manual_seed(0)
    x = torch.randn(1, 3, 40, 40)
    with torch.no_grad():
        expected = model(x)
    assert done.stdout.split("\n")[0] == f"9 {expected.argmax().item()}"
    np.testing.assert_allclose(np.array(__import__("json").loads(done.stdout.split("\n")[1])), expected.numpy(), rtol=0, atol=1e-6)
    missing = subprocess.run([sys.executable, "-c", "import bagnet; bagnet.load('hf-hub:someone/absent')"],
                             env=env, capture_output=True, text=True)
    assert missing.returncode != 0 and "someone/absent" in missing.stderr and str(cache) in missing.stderr
