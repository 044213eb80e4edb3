"""Benchmark: where one training step of a config spends its time, and what BatchNorm alone costs.

Profiles ``bagnet.train.train_step`` (eager, the config's channels-last and mixed-precision settings, random batch)
with torch.profiler after two warm-up steps and groups the operators' own (self) CPU time into a few kinds of work
(BatchNorm forward/backward, convolution forward/backward, adds, copies, ReLU, optimiser, other). Then times one
BatchNorm2d forward+backward on a single activation of ``--bn-shape`` in the three layouts a CPU can use: bf16
input (what autocast hands it), fp32 channels-last and fp32 NCHW.

Usage:  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/profile_train.py [configs/imagenette/bagnet33.yaml]
        [--batch 32] [--bn-shape 32 96 120 120] [--json benchmarks/results/profile-train.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from runinfo import run_info  # benchmarks/runinfo.py (this folder is on sys.path when the script runs)
from train import make_step  # benchmarks/train.py: the step benchmarks/train.py times

from bagnet.train import TrainConfig, autocast_dtype, build_model

ROOT = Path(__file__).resolve().parents[1]

# (kind of work, operator-name fragments), first match wins; names are aten's on CPU and CUDA.
KINDS: list[tuple[str, tuple[str, ...]]] = [
    ("BatchNorm backward", ("batch_norm_backward",)),
    ("BatchNorm forward", ("batch_norm",)),
    ("convolution backward", ("convolution_backward",)),
    ("convolution forward", ("convolution", "conv2d", "mkldnn_conv")),
    ("ReLU backward", ("threshold_backward",)),
    ("ReLU forward", ("relu",)),
    ("optimiser", ("_foreach", "adam")),
    ("adds (residuals, gradient accumulation)", ("aten::add",)),
    ("copies and layout changes", ("copy", "_to_copy", "clone", "contiguous")),
]


def kind_of(name: str) -> str:
    low = name.lower()
    return next((kind for kind, parts in KINDS if any(p in low for p in parts)), "other")


def step_profile(config: TrainConfig, batch_size: int, num_classes: int = 10) -> dict[str, float]:
    """Share of one eager training step's self CPU time per kind of work (shares sum to 1)."""
    torch.manual_seed(0)
    eager = config.replace(init=None, compile=False)
    step = make_step(build_model(eager, num_classes), eager, batch_size, num_classes, torch.device("cpu"))
    for _ in range(2):
        step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step()
    totals: dict[str, float] = {}
    for event in prof.key_averages():
        totals[kind_of(event.key)] = totals.get(kind_of(event.key), 0.0) + event.self_cpu_time_total
    whole = sum(totals.values()) or 1.0
    return dict(sorted(((k, v / whole) for k, v in totals.items()), key=lambda kv: -kv[1]))


def batchnorm_ms(shape: tuple[int, int, int, int], repeats: int) -> dict[str, float]:
    """Median milliseconds of one BatchNorm2d forward+backward (training mode) on an activation of ``shape``."""
    out = {}
    settings = {"bf16 input, channels-last": (torch.bfloat16, torch.channels_last),
                "fp32 channels-last": (torch.float32, torch.channels_last),
                "fp32 NCHW": (torch.float32, torch.contiguous_format)}
    for label, (dtype, layout) in settings.items():
        bn = nn.BatchNorm2d(shape[1]).train()
        x = torch.randn(shape).to(dtype=dtype, memory_format=layout).requires_grad_()
        grad = torch.randn(shape).to(dtype=dtype, memory_format=layout)
        times = []
        for i in range(repeats + 1):
            start = time.perf_counter()
            bn(x).backward(grad)
            if i:
                times.append(time.perf_counter() - start)
            x.grad = None
        out[label] = 1e3 * statistics.median(times)
    return out


def precision(config: TrainConfig) -> str:
    """'bfloat16 autocast' or 'fp32': what the config's step computes in on this CPU."""
    amp = autocast_dtype(torch.device("cpu")) if config.amp else None
    return f"{str(amp).replace('torch.', '')} autocast" if amp else "fp32"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", nargs="?", type=Path, default=ROOT / "configs" / "imagenette" / "bagnet33.yaml")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--bn-shape", type=int, nargs=4, default=[32, 96, 120, 120], metavar=("N", "C", "H", "W"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    config = TrainConfig.load(args.config)
    shares = step_profile(config, args.batch)
    print(f"{args.config.name}, batch {args.batch}, {config.image_size} px, {precision(config)}, "
          f"{torch.get_num_threads()} thread(s):")
    for kind, share in shares.items():
        print(f"  {kind:<42} {100 * share:5.1f} %")
    bn = batchnorm_ms(tuple(args.bn_shape), args.repeats)
    print(f"BatchNorm2d forward+backward on {tuple(args.bn_shape)}:")
    for label, ms in bn.items():
        print(f"  {label:<28} {ms:7.1f} ms")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "run": run_info(), "config": args.config.name, "batch": args.batch, "image_size": config.image_size,
            "precision": precision(config),
            "channels_last": config.channels_last, "step_shares": shares,
            "batchnorm_shape": args.bn_shape, "batchnorm_ms": bn}, indent=2))


if __name__ == "__main__":
    main()
