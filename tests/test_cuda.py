"""The CUDA code paths, each against the CPU or an fp64 reference: strict / TF32 / bf16 heatmaps, images per pass and
tiles, inference chunks sized by free memory, pinned loaders, fp16 training with loss scaling, ``explain
--precision``, SyncBatchNorm and NCCL.

Marked ``cuda``: they run wherever PyTorch sees a GPU and skip elsewhere with the reason (``scripts/gpu_check.sh``
runs them, then the GPU benchmarks). Each check also shows that it can fail: the same comparison is made against a
deliberately broken version of its code path (TF32 left on, a chunk dropped, the loss unscaled, the statistics of
one device only) and must then report a difference.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import bagnet
from bagnet.heatmaps import heatmap, heatmap_reference

from test_heatmaps import randomised  # random BatchNorm statistics, so folding is exercised

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU that PyTorch can use (CUDA)"),
]

CUDA = torch.device("cuda")


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest difference relative to the range of ``b``."""
    return float((a.double().cpu() - b.double().cpu()).abs().max() / b.double().abs().max())


@pytest.fixture(scope="module")
def paper_bagnet17() -> bagnet.BagNet:
    torch.manual_seed(0)
    return randomised(bagnet.bagnet17(num_classes=10))


# ------------------------------------------------------------------------------------------ heatmaps
def test_strict_heatmap_on_cuda_equals_the_fp64_reference_and_tf32_would_not(paper_bagnet17, monkeypatch):
    """Strict fp32 on the GPU keeps TF32 off: equal to the patch-by-patch reference in fp64 on the CPU to float
    rounding. The same map with the model's guard broken (TF32 on, as a user's global setting would leave it) is
    measurably further off, so the tolerance would catch the guard's failure."""
    from bagnet.models.bagnet import tf32_allowed

    torch.manual_seed(1)
    x = torch.randn(1, 3, 41, 37)
    reference = heatmap_reference(paper_bagnet17.double(), x.double(), [0, 3])
    paper_bagnet17.float()
    model = paper_bagnet17.to(CUDA)
    try:
        strict = heatmap(model, x.to(CUDA), [0, 3])
        assert strict.device.type == CUDA.type
        assert relative(strict, reference) < 5e-5
        monkeypatch.setattr(model, "precision_context", lambda device: tf32_allowed(True))
        broken = heatmap(model, x.to(CUDA), [0, 3])
        assert relative(broken, reference) > 10 * max(relative(strict, reference), 1e-7)
    finally:
        paper_bagnet17.cpu()


def test_tf32_and_bf16_heatmaps_stay_within_their_documented_errors(paper_bagnet17):
    """TF32 is faster and about 1e-4 of the range off; bf16 returns float32 maps about 1e-2 off. Both branches
    really run (their maps differ from strict)."""
    torch.manual_seed(2)
    model = paper_bagnet17.to(CUDA)
    try:
        x = torch.randn(2, 3, 64, 64, device=CUDA)
        strict = heatmap(model, x, [1, 2])
        tf32 = heatmap(model, x, [1, 2], precision="tf32")
        bf16 = heatmap(model, x, [1, 2], precision="bf16")
        assert bf16.dtype == torch.float32 and tf32.dtype == torch.float32
        assert 0 < relative(tf32, strict) < 3e-3
        assert 1e-5 < relative(bf16, strict) < 5e-2
    finally:
        paper_bagnet17.cpu()


def test_tf32_heatmap_restores_the_callers_settings(paper_bagnet17):
    before = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    model = paper_bagnet17.to(CUDA)
    try:
        for setting in (True, False):
            torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = setting
            heatmap(model, torch.randn(1, 3, 24, 24, device=CUDA), 0, precision="tf32")
            heatmap(model, torch.randn(1, 3, 24, 24, device=CUDA), 0)
            assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == (setting, setting)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before
        paper_bagnet17.cpu()


def test_images_per_pass_and_tiles_give_the_cpu_map(paper_bagnet17):
    """Batched tiles (a GPU computes several images per pass by default), one image per pass and small tiles all
    give the CPU's map; a pass that lost its last image would not."""
    torch.manual_seed(3)
    x = torch.randn(5, 3, 48, 40)
    cpu = heatmap(paper_bagnet17, x, [4], stride=2)
    model = paper_bagnet17.to(CUDA)
    try:
        default = heatmap(model, x.to(CUDA), [4], stride=2)  # images_per_pass chosen from max_memory: > 1 here
        singles = heatmap(model, x.to(CUDA), [4], stride=2, images_per_pass=1)
        tiled = heatmap(model, x.to(CUDA), [4], stride=2, tile_size=3, images_per_pass=2)
        for m in (default, singles, tiled):
            assert relative(m, cpu) < 2e-5
        broken = default.clone()
        broken[-1] = 0  # what a pass that dropped its last image would return
        assert relative(broken, cpu) > 1e-2
    finally:
        paper_bagnet17.cpu()


# ------------------------------------------------------------------------------------------ inference chunks
def test_inference_chunks_sized_by_free_memory_equal_one_pass(paper_bagnet17, monkeypatch):
    """With little free memory reported, ``model(x)`` on the GPU runs in several chunks and gives the one-pass
    logits; the chunk count follows the reported free memory."""
    model = paper_bagnet17.to(CUDA)
    try:
        x = torch.randn(6, 3, 64, 64, device=CUDA)
        with torch.no_grad():
            model.inference_chunk_pixels, saved = None, model.inference_chunk_pixels
            whole = model(x)  # no chunking at all
            model.inference_chunk_pixels = saved
            calls = []
            real = model._features
            monkeypatch.setattr(model, "_features", lambda part: calls.append(part.shape[0]) or real(part))
            per_image = 64 * 64 * model.peak_floats_per_pixel() * 4
            monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (int(2.5 * per_image * 2), 2**40))
            chunked = model(x)
        assert calls == [2, 2, 2], calls  # half of the "free" memory: two images per chunk
        assert relative(chunked, whole) < 1e-5
        assert relative(torch.cat([chunked[:4], torch.zeros_like(chunked[4:])]), whole) > 1e-3  # a dropped chunk shows
    finally:
        paper_bagnet17.cpu()


# ------------------------------------------------------------------------------------------ loaders and training
def _folder(root: Path, per_class: int = 8, size: int = 32) -> Path:
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("val", per_class // 2)):
        for c, colour in enumerate(((230, 30, 30), (30, 230, 30), (30, 30, 230))):
            d = root / split / f"c{c}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                noise = rng.integers(-60, 60, size=(size, size, 3))
                Image.fromarray(np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)).save(d / f"{i}.png")
    return root


def test_pinned_loader_on_cuda_predicts_what_the_cpu_predicts(tmp_path):
    from bagnet.data import ImageFolderDataset, collate, pin_for
    from bagnet.models.preprocess import make_preprocess
    from bagnet.train.evaluation import predict

    assert pin_for("cuda") and not pin_for("cpu")
    torch.manual_seed(0)
    model = randomised(bagnet.BagNet(bagnet.BagNetConfig.for_patch_size(9, layers=(1, 1, 1, 1), width=16,
                                                                        num_classes=3)))
    data = ImageFolderDataset(_folder(tmp_path) / "val", make_preprocess(resize=32, crop=32))
    batch = collate([data[0], data[1]]).pin_memory()
    assert batch.images.is_pinned() and batch.labels.is_pinned()
    cpu_logits, cpu_labels, _ = predict(model, data, batch_size=4, workers=0)
    gpu_logits, gpu_labels, _ = predict(model.to(CUDA), data, batch_size=4, workers=2)
    assert torch.equal(cpu_labels, gpu_labels) and relative(gpu_logits, cpu_logits) < 1e-4


def test_fp16_training_with_loss_scaling_learns_and_checkpoints_the_scaler(tmp_path, monkeypatch):
    """Where the GPU trains in fp16 the GradScaler runs: the run learns, and its checkpoint holds the scale (so a
    resume continues with it). Without the scaler's unscaling the optimiser would see gradients 65536× too big."""
    from bagnet.train import TrainConfig, train
    from bagnet.train import loop

    monkeypatch.setattr(loop, "autocast_dtype", lambda device: torch.float16 if device.type == "cuda" else None)
    data = _folder(tmp_path / "data", per_class=16)
    config = TrainConfig(arch="bagnet", patch_size=9, width=8, layers=(1, 1, 1, 1), data=str(data), image_size=24,
                         epochs=3, batch_size=8, lr=3e-3, warmup_epochs=0.5, workers=0, out=str(tmp_path / "run"),
                         min_scale=0.6, device="cuda", amp=True)
    result = train(config, progress=False)
    losses = [h.train_loss for h in result.history]
    assert result.completed and all(np.isfinite(losses)) and losses[-1] < losses[0], losses
    state = torch.load(tmp_path / "run" / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert state["scaler"] and state["scaler"]["scale"] > 1  # fp16 with a live loss scale, not a disabled scaler
    scaler = torch.amp.GradScaler("cuda")
    p = torch.nn.Parameter(torch.ones(3, device=CUDA))
    opt = torch.optim.SGD([p], lr=1.0)
    scaler.scale((p * 2).sum()).backward()
    assert float(p.grad[0]) == pytest.approx(2 * scaler.get_scale())  # the broken path: gradients left scaled
    scaler.step(opt)  # the library's path unscales first: one SGD step of exactly the true gradient
    assert torch.allclose(p.detach(), torch.full((3,), -1.0, device=CUDA))


# ------------------------------------------------------------------------------------------ the CLI
def test_explain_on_cuda_each_precision_against_the_cpu(tmp_path):
    image = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(image)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    maps = {}
    for device, precision in (("cpu", "strict"), ("cuda", "strict"), ("cuda", "tf32"), ("cuda", "bf16")):
        out = tmp_path / f"{device}-{precision}"
        done = subprocess.run([sys.executable, "-m", "bagnet", "explain", str(image), "--device", device,
                               "--precision", precision, "--top", "1", "--stride", "4", "--out", str(out),
                               "--no-progress"], capture_output=True, text=True, env=env, timeout=600)
        assert done.returncode == 0, done.stderr
        assert f"device {device}" in done.stderr
        entry = json.loads((out / "explanations.json").read_text())["images"][0]
        maps[device, precision] = entry
    cpu = maps["cpu", "strict"]
    for key, tolerance in ((("cuda", "strict"), 1e-4), (("cuda", "tf32"), 3e-3), (("cuda", "bf16"), 5e-2)):
        other = maps[key]
        assert other["predictions"][0]["class"] == cpu["predictions"][0]["class"], key
        p, q = other["predictions"][0]["logit"], cpu["predictions"][0]["logit"]
        assert abs(p - q) <= tolerance * max(1.0, abs(q)), (key, p, q)


# ------------------------------------------------------------------------------------------ SyncBatchNorm, NCCL
def test_syncbatchnorm_over_nccl_in_one_process_equals_batchnorm(monkeypatch):
    """One NCCL rank: SyncBatchNorm's global statistics are this device's, so training-mode outputs and running
    statistics equal plain BatchNorm's; a BatchNorm fed half the batch (what a rank's local statistics are when the
    synchronisation fails) does not."""
    import torch.distributed as dist

    from bagnet.train.distributed import use_global_batchnorm

    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29541")
    dist.init_process_group("nccl", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        plain = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8)).to(CUDA).train()
        synced = use_global_batchnorm(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8)),
                                      CUDA).to(CUDA).train()
        assert isinstance(synced[1], torch.nn.SyncBatchNorm)
        synced.load_state_dict(plain.state_dict())
        x = torch.randn(8, 3, 12, 12, device=CUDA) * 3 + 1
        torch.testing.assert_close(synced(x), plain(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(synced[1].running_mean, plain[1].running_mean)
        half = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8)).to(CUDA).train()
        half.load_state_dict(synced.state_dict())
        assert relative(half(x[:4]), plain(x)[:4]) > 1e-3
        t = torch.arange(4.0, device=CUDA)
        dist.all_reduce(t)
        assert torch.equal(t, torch.arange(4.0, device=CUDA))  # NCCL itself works here
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(900)
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs for 2 NCCL ranks")
def test_two_nccl_ranks_evaluate_what_one_gpu_evaluates(tmp_path):
    data = _folder(tmp_path / "data")
    torch.manual_seed(0)
    model = randomised(bagnet.BagNet(bagnet.BagNetConfig.for_patch_size(9, layers=(1, 1, 1, 1), width=16,
                                                                        num_classes=3)))
    weights = bagnet.save_weights(model, tmp_path / "m.safetensors")
    common = ["evaluate", "--model", str(weights), "--data", str(data), "--device", "cuda", "--workers", "0",
              "--no-progress"]
    one = subprocess.run([sys.executable, "-m", "bagnet", *common, "--out", str(tmp_path / "one")],
                         capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    two = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", "-m", "bagnet", *common, "--out",
                          str(tmp_path / "two")], capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr
    a = json.loads((tmp_path / "one" / "evaluation.json").read_text())
    b = json.loads((tmp_path / "two" / "evaluation.json").read_text())
    assert a["top1"] == b["top1"] and a["images"] == b["images"]
