"""BagNets v2 (berenslab/bagnetsv2) as a configuration of bagnet's BagNet: same-padded 3×3 convolutions and one 3×3
stem. Checked against an independent functional forward written here from the v2 architecture's description."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import bagnet
from bagnet.heatmaps import heatmap, heatmap_reference
from bagnet.models import BagNetConfig, BagNet


def v2_state_dict(width=8, layers=(1, 2, 1, 1), kernel3=(1, 1, 1, 0), classes=6, seed=0):
    """A state dict laid out as berenslab's bagnetsv2 saves it (random values, BatchNorm statistics included)."""
    torch.manual_seed(seed)
    sd = {"conv1.weight": torch.randn(width, 3, 3, 3) * 0.3}

    def bn(prefix, c):
        sd[f"{prefix}.weight"] = 1 + 0.2 * torch.randn(c)
        sd[f"{prefix}.bias"] = 0.1 * torch.randn(c)
        sd[f"{prefix}.running_mean"] = 0.1 * torch.randn(c)
        sd[f"{prefix}.running_var"] = 0.5 + torch.rand(c)
        sd[f"{prefix}.num_batches_tracked"] = torch.tensor(7)

    bn("bn1", width)
    inplanes = width
    for s, (blocks, k3) in enumerate(zip(layers, kernel3)):
        planes = width * 2 ** s
        for b in range(blocks):
            pre = f"layer{s + 1}.{b}"
            k = 3 if b < k3 else 1
            sd[f"{pre}.conv1.weight"] = torch.randn(planes, inplanes, 1, 1) / inplanes ** 0.5
            bn(f"{pre}.bn1", planes)
            sd[f"{pre}.conv2.weight"] = torch.randn(planes, planes, k, k) / (planes * k * k) ** 0.5
            bn(f"{pre}.bn2", planes)
            sd[f"{pre}.conv3.weight"] = torch.randn(planes * 4, planes, 1, 1) / planes ** 0.5
            bn(f"{pre}.bn3", planes * 4)
            if b == 0:
                sd[f"{pre}.downsample.0.weight"] = torch.randn(planes * 4, inplanes, 1, 1) / inplanes ** 0.5
                bn(f"{pre}.downsample.1", planes * 4)
            inplanes = planes * 4
    sd["fc.weight"] = torch.randn(classes, inplanes) / inplanes ** 0.5
    sd["fc.bias"] = 0.1 * torch.randn(classes)
    return sd


def v2_forward(sd, x, layers=(1, 2, 1, 1), strides=(2, 2, 2, 1)):
    """The v2 network written out from its description: padded 3×3 stem, bottlenecks whose conv2 is same-padded and
    carries the stride, 1×1 strided downsample, global average pool, linear classifier."""
    def bn(t, p):
        return F.batch_norm(t, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"], sd[f"{p}.bias"],
                            False, 0.0, 1e-5)

    x = F.relu(bn(F.conv2d(x, sd["conv1.weight"], padding=1), "bn1"))
    for s, blocks in enumerate(layers):
        for b in range(blocks):
            pre, stride = f"layer{s + 1}.{b}", strides[s] if b == 0 else 1
            w2 = sd[f"{pre}.conv2.weight"]
            out = F.relu(bn(F.conv2d(x, sd[f"{pre}.conv1.weight"]), f"{pre}.bn1"))
            out = F.relu(bn(F.conv2d(out, w2, stride=stride, padding=(w2.shape[-1] - 1) // 2), f"{pre}.bn2"))
            out = bn(F.conv2d(out, sd[f"{pre}.conv3.weight"]), f"{pre}.bn3")
            short = x if f"{pre}.downsample.0.weight" not in sd else bn(
                F.conv2d(x, sd[f"{pre}.downsample.0.weight"], stride=stride), f"{pre}.downsample.1")
            x = F.relu(out + short)
    return F.linear(x.mean(dim=(2, 3)), sd["fc.weight"], sd["fc.bias"])


def test_a_v2_state_dict_loads_by_path_as_a_configuration_of_bagnets_own_network(tmp_path):
    sd = v2_state_dict()
    torch.save(sd, tmp_path / "bagnet_v2.pt")
    model = bagnet.load(tmp_path / "bagnet_v2.pt")
    assert type(model) is BagNet and model.config.stem == "v2" and model.config.padding
    assert model.patch_size == 17 and model.stride == 8
    for size in [(1, 3, 64, 64), (2, 3, 45, 70), (1, 3, 9, 11)]:  # padded: any size, even below the patch size
        x = torch.randn(*size)
        with torch.no_grad():
            torch.testing.assert_close(model(x), v2_forward(sd, x), rtol=1e-4, atol=1e-5)
            assert model.evidence(x).shape[-2:] == tuple(-(-n // 8) for n in size[-2:])
    assert model.patch_box(0, 0) == (-8, -8, 9, 9)  # centred on pixel (0, 0); the rest is padding
    # BatchNorm folding and a safetensors round trip keep the v2 configuration and the function
    x = torch.randn(2, 3, 45, 70)
    with torch.no_grad():
        torch.testing.assert_close(bagnet.models.fuse_batchnorm(model)(x), model(x), rtol=1e-4, atol=1e-5)
    bagnet.save_weights(model, tmp_path / "v2.safetensors")
    again = bagnet.load(tmp_path / "v2.safetensors")
    assert again.config == model.config
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x), rtol=0, atol=0)
    # the paper-size builders take a released-layout v2 file with variant="v2"
    full = v2_state_dict(width=64, layers=(3, 4, 6, 3), kernel3=(1, 1, 1, 0), classes=6, seed=1)
    torch.save(full, tmp_path / "bagnet17_v2.pt")
    built = bagnet.bagnet17(weights=tmp_path / "bagnet17_v2.pt", num_classes=6, variant="v2").eval()
    x = torch.randn(1, 3, 50, 50)
    with torch.no_grad():
        torch.testing.assert_close(built(x), v2_forward(full, x, layers=(3, 4, 6, 3)), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="variant"):
        bagnet.bagnet17(variant="v3")


def test_v2_heatmap_is_the_patch_by_patch_definition_and_matches_the_evidence_away_from_the_border():
    model = BagNet(BagNetConfig(layers=(1, 2, 1, 1), kernel3=(1, 1, 1, 0), width=8, num_classes=6, stem="v2",
                                padding=True, align="centre"))
    model.load_state_dict(v2_state_dict())
    model.eval()
    x = torch.randn(1, 3, 41, 50)
    dense = heatmap(model, x, target=[2, 4])
    slow = heatmap_reference(model, x, target=[2, 4])  # every 17×17 patch through the unpadded twin
    torch.testing.assert_close(dense, slow, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        evidence = model.evidence(x)[:, [2, 4]]
    inside, border = [], []
    for i in range(evidence.shape[-2]):
        for j in range(evidence.shape[-1]):
            top, left, bottom, right = model.patch_box(i, j)
            diff = float((dense[0, :, 8 * i, 8 * j] - evidence[0, :, i, j]).abs().max())
            (inside if top >= 0 and left >= 0 and bottom <= 41 and right <= 50 else border).append(diff)
    assert inside and max(inside) < 1e-5  # interior cells: the network's own evidence, exactly
    assert border and max(border) > 1e-3  # border cells see the layers' padding, not the image's zeros


def test_imagenet_v2_by_name_is_fetched_from_the_pinned_commit_and_checked_by_its_git_blob_id(tmp_path, offline_hub,
                                                                                            monkeypatch):
    import dataclasses

    from bagnet.models import pretrained
    from bagnet.models import weights as weights_mod

    assert "bagnet33:imagenet-v2" in bagnet.list_models()
    meta = bagnet.models.model_entry("bagnet33:imagenet-v2").meta
    assert meta.metrics and "berenslab/bagnetsv2" in meta.source and pretrained.V2_COMMIT in meta.source
    with pytest.raises(bagnet.WeightsError, match="bagnetsv2-bagnet33_imagenet_pretrained.pt") as err:
        bagnet.load("bagnet33:imagenet-v2")
    assert str(offline_hub / "checkpoints") in str(err.value)
    # a download (simulated) is accepted only when its git blob id is the published one
    sd = bagnet.bagnet9(variant="v2").state_dict()
    torch.save(sd, tmp_path / "published.pt")
    published = weights_mod.git_blob_sha1(tmp_path / "published.pt")
    import subprocess

    git = subprocess.run(["git", "hash-object", str(tmp_path / "published.pt")], capture_output=True, text=True)
    if git.returncode == 0:  # the same id git itself computes
        assert git.stdout.strip() == published

    def download(url, dst, hash_prefix=None, progress=True):
        assert url == f"https://github.com/berenslab/bagnetsv2/raw/{pretrained.V2_COMMIT}/models/bagnet9_imagenet_pretrained.pt"
        Path(dst).write_bytes((tmp_path / "published.pt").read_bytes())

    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    with pytest.raises(bagnet.WeightsError, match="git blob id"):  # not the file the repository publishes
        bagnet.load("bagnet9:imagenet-v2")
    assert not (offline_hub / "checkpoints" / "bagnetsv2-bagnet9_imagenet_pretrained.pt").exists()  # not kept
    entry = pretrained.WEIGHTS["bagnet9:imagenet-v2"]
    monkeypatch.setitem(pretrained.WEIGHTS, entry.name, dataclasses.replace(entry, blob_sha1=published))
    model = bagnet.load("bagnet9:imagenet-v2")
    assert model.config.padding and model.categories is not None and len(model.categories) == 1000
    (offline_hub / "checkpoints" / "bagnetsv2-bagnet9_imagenet_pretrained.pt").write_bytes(b"not the file")
    with pytest.raises(bagnet.WeightsError, match=published):
        bagnet.load("bagnet9:imagenet-v2")
