"""Benchmark: training throughput (images/s) of each architecture in configs/ on this machine.

Times full optimiser steps (forward, backward, AdamW) on random 3×S×S batches of the config's batch size and image
size, with the config's channels-last and mixed-precision settings (bf16 autocast on CPUs that have it), after two warm-up steps; reports the median over ``--steps``.
Data loading is not included (see the per-epoch images/s in a run's metrics.csv for the end-to-end figure).

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

from bagnet.train import TrainConfig, autocast_dtype, build_model

ROOT = Path(__file__).resolve().parents[1]


def images_per_s(config: TrainConfig, steps: int, num_classes: int = 10) -> tuple[float, int, float]:
    torch.manual_seed(0)
    model = build_model(config.replace(init=None), num_classes)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(config.batch_size, 3, config.image_size, config.image_size)
    if config.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, num_classes, (config.batch_size,))
    loss_fn = nn.CrossEntropyLoss()
    times = []
    amp = autocast_dtype(torch.device("cpu")) if config.amp else None
    for i in range(steps + 2):
        start = time.perf_counter()
        opt.zero_grad()
        with torch.autocast("cpu", dtype=amp or torch.float32, enabled=amp is not None):
            loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - start)
    params = sum(p.numel() for p in model.parameters())
    median = statistics.median(times)
    return config.batch_size / median, params, median


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
        ips, params, step_s = images_per_s(config, args.steps)
        rows.append({"config": path.name, "arch": config.arch, "params": params, "image_size": config.image_size,
                     "batch_size": config.batch_size, "images_per_s": ips, "step_s": step_s})
        print(f"{path.name:<24} {params / 1e6:6.2f} M params  {config.image_size} px  batch {config.batch_size}: "
              f"{ips:7.1f} img/s ({step_s:.2f} s/step)", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"torch": torch.__version__, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
