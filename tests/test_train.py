"""Training: loss goes down, checkpoints load, kill-and-resume is exact, bad images are skipped, DDP matches."""

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
from bagnet.train import EpochBatches, TrainConfig, train

COLOURS = {"red": (200, 40, 40), "green": (40, 190, 60), "blue": (50, 60, 210)}


def make_folder(root: Path, per_class: int = 12, size: int = 32, corrupt: bool = False) -> Path:
    """A tiny ImageFolder dataset: noisy images whose class is their dominant colour."""
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("val", per_class // 2)):
        for name, colour in COLOURS.items():
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                noise = rng.integers(-60, 60, size=(size, size, 3))
                pixels = np.clip(np.array(colour)[None, None] + noise, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(d / f"{i}.png")
    if corrupt:
        (root / "train" / "red" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    return root


def tiny_config(data: Path, out: Path, **kw) -> TrainConfig:
    base = dict(arch="bagnet", patch_size=9, width=8, layers=(1, 1, 1, 1), data=str(data), image_size=24,
                epochs=3, batch_size=8, lr=3e-3, warmup_epochs=0.5, workers=0, out=str(out), min_scale=0.6)
    base.update(kw)
    return TrainConfig(**base)


def test_short_run_lowers_loss_and_writes_a_loadable_model(tmp_path):
    data = make_folder(tmp_path / "data", corrupt=True)
    result = train(tiny_config(data, tmp_path / "run", epochs=4), progress=False)
    losses = [h.train_loss for h in result.history]
    assert result.completed and len(losses) == 4
    assert losses[-1] < losses[0] * 0.9, losses
    # the corrupt file was skipped, reported once and counted
    assert result.skipped == 1
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["skipped"] == 1
    assert "broken.png" in (tmp_path / "run" / "skipped.txt").read_text()
    for name in ("config.yaml", "metrics.csv", "metrics.json", "checkpoint.pt", "model.safetensors", "curves.png"):
        assert (tmp_path / "run" / name).is_file(), name
    # the result is a Result: its rows are the CSV's, and save() writes it anywhere
    assert isinstance(result, bagnet.plumbing.Result) and len(result.rows()) == 4
    copy = result.save(tmp_path / "copy")
    assert json.loads((copy / "summary.json").read_text())["history"] == summary["history"]
    assert (copy / "metrics.csv").read_text() == (tmp_path / "run" / "metrics.csv").read_text()
    model = bagnet.load(tmp_path / "run")
    assert model.categories == ["blue", "green", "red"] and model.patch_size == 9
    x = torch.randn(2, 3, 24, 24)
    assert model(x).shape == (2, 3)


def test_kill_and_resume_gives_the_same_weights(tmp_path):
    data = make_folder(tmp_path / "data")
    straight = train(tiny_config(data, tmp_path / "a"), progress=False)
    # interrupted mid-epoch (as Ctrl-C does), then again exactly at an epoch boundary
    cfg = tiny_config(data, tmp_path / "b")
    first = train(cfg, progress=False, stop_after_steps=2)
    assert not first.completed and (tmp_path / "b" / "checkpoint.pt").is_file()
    second = train(cfg, resume=True, progress=False, stop_after_steps=2)  # 4 steps per epoch: stops at the boundary
    assert not second.completed
    resumed = train(cfg, resume=True, progress=False)
    assert resumed.completed
    a = bagnet.load(straight.weights).state_dict()
    b = bagnet.load(resumed.weights).state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [h.train_loss for h in straight.history] == pytest.approx([h.train_loss for h in resumed.history], rel=1e-6)


def test_resume_refuses_a_different_config_and_a_fresh_run_refuses_to_overwrite(tmp_path):
    data = make_folder(tmp_path / "data", per_class=4)
    cfg = tiny_config(data, tmp_path / "run", epochs=1, batch_size=4)
    train(cfg, progress=False, stop_after_steps=1)
    with pytest.raises(FileExistsError, match="--resume"):
        train(cfg, progress=False)
    with pytest.raises(ValueError, match="lr"):
        train(cfg.replace(lr=0.5), resume=True, progress=False)


def test_epoch_batches_split_global_batches_across_ranks():
    single = list(EpochBatches(20, 4, seed=1, epoch=3))
    ranks = [list(EpochBatches(20, 4, seed=1, epoch=3, rank=r, world=2)) for r in range(2)]
    for b, (r0, r1) in enumerate(zip(*ranks)):
        assert sorted(r0 + r1) == sorted(single[b])
    assert list(EpochBatches(20, 4, seed=1, epoch=3, skip=2)) == single[2:]
    assert list(EpochBatches(20, 4, seed=1, epoch=4)) != single


def test_config_file_and_cli_overrides(tmp_path):
    from bagnet.cli import build_parser

    path = tmp_path / "cfg.yaml"
    TrainConfig(lr=0.01, layers=(1, 2, 1, 1)).save(path)
    assert TrainConfig.load(path).layers == (1, 2, 1, 1)
    toml = tmp_path / "cfg.toml"
    toml.write_text('arch = "resnet18"\nwidth = 16\n')
    assert TrainConfig.load(toml).arch == "resnet18"
    (tmp_path / "bad.yaml").write_text("learning_rate: 3\n")
    with pytest.raises(ValueError, match="unknown config keys \\['learning_rate'\\]"):
        TrainConfig.load(tmp_path / "bad.yaml")
    args = build_parser().parse_args(["train", "--lr", "0.5", "--layers", "1", "1", "1", "1", "--no-amp"])
    from bagnet.cli.flags import config_from_args

    flags = {k: v for k, v in vars(args).items() if k.startswith("TrainConfig.") and v is not None}
    assert flags == {"TrainConfig.lr": 0.5, "TrainConfig.layers": [1, 1, 1, 1], "TrainConfig.amp": False}
    built = config_from_args(args, TrainConfig, **{k: v for k, v in TrainConfig().to_dict().items()
                                                   if vars(args)[f"TrainConfig.{k}"] is None})
    assert built == TrainConfig(lr=0.5, layers=(1, 1, 1, 1), amp=False)
    with pytest.raises(ValueError, match="arch .--arch. must be one of bagnet"):
        TrainConfig(arch="alexnet")


@pytest.mark.parametrize("arch", ["resnet18", "vgg11_bn"])
def test_standard_cnns_train_and_reload(tmp_path, arch):
    data = make_folder(tmp_path / "data", per_class=6)
    result = train(tiny_config(data, tmp_path / arch, arch=arch, width=8, image_size=32, epochs=1, batch_size=6),
                   progress=False)
    model = bagnet.load(result.weights)
    assert type(model).__name__ in ("ScaledResNet", "ScaledVGG") and model.categories == ["blue", "green", "red"]
    assert model.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 3)


def test_vit_with_strong_augmentation_trains_resumes_exactly_and_reloads(tmp_path):
    data = make_folder(tmp_path / "data", per_class=6)
    cfg = tiny_config(data, tmp_path / "a", arch="vit", patch_size=8, width=32, layers=(2,), image_size=32,
                      epochs=2, batch_size=6, augment="trivialaugment", random_erasing=0.5, mixup=0.8, cutmix=1.0,
                      drop_path=0.1)
    straight = train(cfg, progress=False)
    cut = cfg.replace(out=str(tmp_path / "b"))
    assert not train(cut, progress=False, stop_after_steps=3).completed  # mid-epoch (3 steps per epoch: boundary+)
    resumed = train(cut, resume=True, progress=False)
    a, b = bagnet.load(straight.weights), bagnet.load(resumed.weights)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    assert type(a).__name__ == "VisionTransformer" and a.categories == ["blue", "green", "red"]
    assert a.patch_embed.patch_size == (8, 8) and len(a.blocks) == 2
    # position embeddings are resampled for other input sizes
    assert a(torch.randn(1, 3, 32, 32)).shape == (1, 3) and a(torch.randn(1, 3, 48, 40)).shape == (1, 3)


def test_mix_batch_mixup_and_cutmix():
    from bagnet.train import mix_batch

    images = torch.arange(4.0)[:, None, None, None].expand(4, 3, 10, 10).contiguous()
    same, perm, lam = mix_batch(images, 0.0, 0.0, np.random.default_rng(0))
    assert same is images and perm is None and lam == 1.0
    for seed in range(20):
        mixed, perm, lam = mix_batch(images, 0.0, 1.0, np.random.default_rng(seed))  # CutMix only
        # lam is exactly the share of each image's own pixels, and the pasted box is the partner's
        own = mixed == images
        for i in range(4):
            if perm[i] != i:
                assert float(own[i].float().mean()) == pytest.approx(lam)
            assert torch.equal(mixed[i][~own[i]], images[perm[i]][~own[i]])
        mixed, perm, lam = mix_batch(images, 0.8, 0.0, np.random.default_rng(seed))  # MixUp only
        assert torch.allclose(mixed, lam * images + (1 - lam) * images[perm])
    assert 0 < lam < 1
    with pytest.raises(ValueError, match="augment"):
        TrainConfig(augment="autoaugment-v9")


@pytest.mark.slow
def test_two_process_ddp_matches_single_process(tmp_path):
    """torchrun with 2 CPU processes (Gloo), global batch 8, against one process with batch 8, in fp32.

    Tolerance: the two final parameter vectors differ by < 1 % of the distance training moved them (measured:
    0.05 % with global-batch BatchNorm; 97 % with per-process BatchNorm statistics, --no-sync-bn).
    """
    from bagnet.train import build_model

    data = make_folder(tmp_path / "data")
    common = ["--arch", "bagnet", "--patch-size", "9", "--width", "8", "--layers", "1", "1", "1", "1",
              "--data", str(data), "--image-size", "24", "--epochs", "2", "--batch-size", "8", "--lr", "0.003",
              "--warmup-epochs", "0.5", "--workers", "0", "--no-progress", "--min-scale", "0.6", "--no-amp"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ddp = subprocess.Popen(  # beside the one-process run (each writes its own folder)
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "bagnet",
         "train", *common, "--out", str(tmp_path / "ddp")], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    try:
        subprocess.run([sys.executable, "-m", "bagnet", "train", *common, "--out", str(tmp_path / "single")],
                       check=True, env=env, capture_output=True)
        _, stderr = ddp.communicate(timeout=600)
    finally:
        if ddp.poll() is None:
            ddp.kill()
            ddp.communicate()
    assert ddp.returncode == 0, stderr[-3000:]
    assert not (tmp_path / "ddp" / "checkpoint.pt.tmp").exists()

    def flat(model):
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    single, multi = bagnet.load(tmp_path / "single"), bagnet.load(tmp_path / "ddp")
    torch.manual_seed(0)
    init = build_model(TrainConfig.load(tmp_path / "single" / "config.yaml"), 3)
    moved = (flat(single) - flat(init)).norm()
    assert moved > 0.1  # training did move the weights
    assert (flat(single) - flat(multi)).norm() / moved < 0.01
    for (name, a), b in zip(single.named_buffers(), multi.buffers()):
        if a.is_floating_point():
            torch.testing.assert_close(a, b, rtol=0.02, atol=0.02, msg=name)
    h_single = json.loads((tmp_path / "single" / "metrics.json").read_text())
    h_multi = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert [h["train_loss"] for h in h_multi] == pytest.approx([h["train_loss"] for h in h_single], rel=1e-3)


def test_evaluate_cli_writes_json_csv_and_png(tmp_path, capsys):
    import csv

    from bagnet.cli import main

    data = make_folder(tmp_path / "data", per_class=8)
    (data / "val" / "green" / "empty.jpg").write_bytes(b"")  # unreadable: named on stderr, exit code 1
    train(tiny_config(data, tmp_path / "run", epochs=3), progress=False)
    code = main(["evaluate", "--model", str(tmp_path / "run"), "--data", str(data), "--out", str(tmp_path / "ev"),
                 "--workers", "0", "--no-progress"])
    assert code == 1
    assert "empty.jpg" in capsys.readouterr().err
    result = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    with open(tmp_path / "ev" / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == result["images"] == 12
    assert result["top1"] == pytest.approx(sum(r["correct"] == "True" for r in rows) / 12)
    assert sum(map(sum, result["confusion"])) == 12 and result["top5"] == 1.0  # 3 classes: top-5 is everything
    png = (tmp_path / "ev" / "confusion.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000


def test_activation_checkpointing_trains_the_same_numbers():
    """One training step with stages recomputed in the backward pass: the same loss, gradients and BatchNorm running
    statistics as keeping every activation (fp32, bit for bit up to summation order)."""
    import copy

    from bagnet.train import TrainConfig, build_model

    config = TrainConfig(arch="bagnet", patch_size=17, width=8, layers=(1, 2, 1, 1), image_size=48)
    torch.manual_seed(0)
    plain = build_model(config, 5).train()
    saved = build_model(config.replace(activation_checkpointing=True), 5).train()
    saved.load_state_dict(plain.state_dict())
    assert saved.checkpoint_stages and not plain.checkpoint_stages
    x, y = torch.randn(6, 3, 48, 48), torch.randint(0, 5, (6,))
    losses = []
    for net in (plain, saved):
        loss = torch.nn.functional.cross_entropy(net(x), y)
        loss.backward()
        losses.append(loss.detach())
    torch.testing.assert_close(losses[0], losses[1], rtol=0, atol=1e-6)
    for (name, p), q in zip(plain.named_parameters(), saved.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-7, msg=name)
    for (name, b), c in zip(plain.named_buffers(), saved.buffers()):
        assert torch.equal(b, c), name  # running statistics updated once, not again by the recomputation
    # eval mode and no-grad use no checkpointing at all (nothing to recompute)
    with torch.no_grad():
        torch.testing.assert_close(copy.deepcopy(saved).eval()(x), plain.eval()(x))


def test_compiled_training_step_computes_the_same_numbers():
    """``compile: true`` trains the same model: one ``train_step`` through torch.compile gives the loss, gradients and
    BatchNorm statistics of the eager fp32 step. Tolerance, stated relative to fp32's own rounding: each gradient's
    distance from the float64 step is at most 10× the eager fp32 step's distance plus 1e-6 of its norm (fused kernels
    sum in another order; they must not compute anything else)."""
    import copy

    from bagnet.data import Batch
    from bagnet.train import TrainConfig, build_model, compiled, train_step

    config = TrainConfig(arch="bagnet", patch_size=9, width=8, layers=(1, 1, 1, 1), image_size=40, compile=True)
    torch.manual_seed(0)
    reference = build_model(config, 5).train()
    x, y = torch.randn(4, 3, 40, 40), torch.randint(0, 5, (4,))
    nets = {"eager": copy.deepcopy(reference), "compiled": copy.deepcopy(reference),
            "fp64": copy.deepcopy(reference).double()}
    losses = {}
    for kind, model in nets.items():
        net = compiled(model, config) if kind == "compiled" else model
        assert (net is model) == (kind != "compiled")
        opt = torch.optim.SGD(model.parameters(), lr=0.0)  # grads stay after the step; weights stay put
        images = x.double() if kind == "fp64" else x
        losses[kind], _, _ = train_step(net, Batch(images, y, torch.arange(4), []), torch.nn.CrossEntropyLoss(),
                                        opt, torch.amp.GradScaler("cpu", enabled=False), torch.device("cpu"), None,
                                        False)
    assert abs(losses["compiled"] - losses["fp64"]) <= 10 * abs(losses["eager"] - losses["fp64"]) + 1e-6
    named = {kind: dict(model.named_parameters()) for kind, model in nets.items()}
    for name, p64 in named["fp64"].items():
        exact = p64.grad
        eager_err = (named["eager"][name].grad.double() - exact).norm()
        compiled_err = (named["compiled"][name].grad.double() - exact).norm()
        assert compiled_err <= 10 * eager_err + 1e-6 * exact.norm(), (name, float(compiled_err), float(eager_err))
    for (name, b), c in zip(nets["eager"].named_buffers(), nets["compiled"].buffers()):
        torch.testing.assert_close(b, c, rtol=1e-5, atol=1e-6, msg=name)
    # the checkpoint is written from the model itself: the same keys as without compiling
    assert list(nets["compiled"].state_dict()) == list(reference.state_dict())
