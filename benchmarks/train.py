"""Benchmark: training throughput (images/s) of each architecture in configs/ on this machine.

Times ``bagnet.train.train_step`` — the function ``bagnet train`` runs for every batch, not a copy of it — on random
3×S×S batches of the config's batch size and image size, with the config's channels-last, mixed-precision
(bf16 autocast on CPUs that have it) and activation-checkpointing settings, after two warm-up steps; reports the
median over ``--steps``, the forward GMAC per image (counted with torch's FlopCounter) and the time per MAC relative
to ResNet-18's in the same run. Data loading is not included (see the per-epoch images/s in a run's metrics.csv).

Usage:  .venv/bin/python benchmarks/train.py [configs/imagenette/*.yaml] [--steps 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from bagnet.data import Batch
from bagnet.train import TrainConfig, autocast_dtype, build_model, train_step

ROOT = Path(__file__).resolve().parents[1]


def forward_gmac(model: nn.Module, size: int) -> float:
    """Multiply-accumulates of one forward pass of one size×size image, in billions."""
    from torch.utils.flop_counter import FlopCounterMode

    was = model.training
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(torch.randn(1, 3, size, size))
    model.train(was)
    return counter.get_total_flops() / 2e9


def images_per_s(config: TrainConfig, steps: int, num_classes: int = 10) -> tuple[float, int, float, float]:
    """(images/s, parameters, median seconds per step, forward GMAC per image) of ``train_step`` for ``config``."""
    torch.manual_seed(0)
    device = torch.device("cpu")
    model = build_model(config.replace(init=None), num_classes)
    gmac = forward_gmac(model, config.image_size)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    n = config.batch_size
    batch = Batch(torch.randn(n, 3, config.image_size, config.image_size), torch.randint(0, num_classes, (n,)),
                  torch.arange(n), [])
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    amp = autocast_dtype(device) if config.amp else None
    loss_fn = nn.CrossEntropyLoss()
    times = []
    for i in range(steps + 2):
        start = time.perf_counter()
        train_step(model, batch, loss_fn, opt, scaler, device, amp, config.channels_last)
        if i >= 2:
            times.append(time.perf_counter() - start)
    params = sum(p.numel() for p in model.parameters())
    median = statistics.median(times)
    return n / median, params, median, gmac


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="*", type=Path)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    configs = args.configs or sorted((ROOT / "configs" / "imagenette").glob("*.yaml"))
    rows = []
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for path in configs:
        config = TrainConfig.load(path)
        ips, params, step_s, gmac = images_per_s(config, args.steps)
        rows.append({"config": path.name, "arch": config.arch, "params": params, "image_size": config.image_size,
                     "batch_size": config.batch_size, "images_per_s": ips, "step_s": step_s, "gmac": gmac,
                     "ns_per_mac": 1e9 / (ips * gmac * 1e9) if gmac else None})  # per forward MAC
        print(f"{path.name:<24} {params / 1e6:6.2f} M params  {config.image_size} px  batch {config.batch_size}: "
              f"{ips:7.1f} img/s ({step_s:.2f} s/step), {gmac:.3f} GMAC/img", flush=True)
    reference = next((r for r in rows if r["arch"] == "resnet18"), None)
    if reference:
        print("time per MAC relative to ResNet-18 (same run):")
        for r in rows:
            r["time_per_mac_vs_resnet18"] = r["ns_per_mac"] / reference["ns_per_mac"]
            print(f"  {r['config']:<24} {r['time_per_mac_vs_resnet18']:.2f}×")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"torch": torch.__version__, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
