"""Benchmark: training throughput (images/s) of each architecture in configs/ on this machine.

Times ``bagnet.train.train_step`` — the function ``bagnet train`` runs for every batch, not a copy of it — on random
3×S×S batches of the config's batch size and image size, with the config's channels-last, mixed-precision
(bf16 autocast on CPUs that have it) and activation-checkpointing settings, after two warm-up steps; reports the
median over ``--steps``, the forward GMAC per image (counted with torch's FlopCounter), the elements normalised per
MAC (the memory-bound BatchNorm/ReLU/add work) and the time per MAC relative to ResNet-18's in the same run.
``--compile both`` times each config eagerly and through torch.compile (``compile: true``); the first step's time is
the compile time (run with ``TORCHINDUCTOR_CACHE_DIR`` set to an empty folder for a cold compile). Data loading is
not included (see the per-epoch images/s in a run's metrics.csv).

Usage:  .venv/bin/python benchmarks/train.py [configs/imagenette/*.yaml] [--steps 5] [--compile both]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from runinfo import run_info  # benchmarks/runinfo.py (this folder is on sys.path when the script runs)

from bagnet.data import Batch
from bagnet.train import TrainConfig, autocast_dtype, build_model, compiled, train_step

ROOT = Path(__file__).resolve().parents[1]


def forward_counts(model: nn.Module, size: int) -> tuple[float, float]:
    """(multiply-accumulates, elements that pass through a normalisation layer) of one forward pass of one
    size×size image, both in billions: the second is the work of the memory-bound BatchNorm/ReLU/add sweeps."""
    from torch.utils.flop_counter import FlopCounterMode

    norms = (nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)
    elements = [0]
    hooks = [m.register_forward_hook(lambda _m, _i, out: elements.__setitem__(0, elements[0] + out.numel()))
             for m in model.modules() if isinstance(m, norms)]
    was = model.training
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model.eval()(torch.randn(1, 3, size, size))
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    return counter.get_total_flops() / 2e9, elements[0] / 1e9


def make_step(model: nn.Module, config: TrainConfig, batch_size: int, num_classes: int,
              device: torch.device) -> Callable[[], None]:
    """One call = one ``train_step`` of ``model`` (moved to ``device``, in the config's memory format, through
    ``compiled`` as ``bagnet train`` wraps it) on a fixed random batch, with AdamW and the config's mixed precision."""
    model = model.to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    size = config.image_size
    batch = Batch(torch.randn(batch_size, 3, size, size), torch.randint(0, num_classes, (batch_size,)),
                  torch.arange(batch_size), [])
    amp = autocast_dtype(device) if config.amp else None
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    loss_fn = nn.CrossEntropyLoss()
    net = compiled(model, config)
    return lambda: train_step(net, batch, loss_fn, opt, scaler, device, amp, config.channels_last)


def images_per_s(config: TrainConfig, steps: int, num_classes: int = 10,
                 device: torch.device = torch.device("cpu")) -> tuple[float, int, float, float, float, float]:
    """(images/s, parameters, median seconds per step, forward GMAC per image, seconds of the first step, normalised
    activations per MAC) of
    ``train_step`` for ``config`` (the network wrapped by ``compiled`` as ``bagnet train`` wraps it)."""
    torch.manual_seed(0)
    model = build_model(config.replace(init=None), num_classes)
    gmac, normalised = forward_counts(model, config.image_size)
    n = config.batch_size
    step = make_step(model, config, n, num_classes, device)
    times, first = [], 0.0
    for i in range(steps + 2):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i == 0:
            first = time.perf_counter() - start
        if i >= 2:
            times.append(time.perf_counter() - start)
    params = sum(p.numel() for p in model.parameters())
    median = statistics.median(times)
    return n / median, params, median, gmac, first, normalised / gmac


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="*", type=Path)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]; name the --json per device")
    parser.add_argument("--compile", choices=["config", "on", "off", "both"], default="config",
                        help="torch.compile as the config says (default), always, never, or each config both ways")
    args = parser.parse_args()
    configs = args.configs or sorted((ROOT / "configs" / "imagenette").glob("*.yaml"))
    rows = []
    device = torch.device(args.device)
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"torch {torch.__version__}, device {device} ({card}), {torch.get_num_threads()} threads")
    settings = {"config": [None], "on": [True], "off": [False], "both": [False, True]}[args.compile]
    for path in configs:
        for compile_ in settings:
            config = TrainConfig.load(path)
            if compile_ is not None:
                config = config.replace(compile=compile_)
            ips, params, step_s, gmac, first, per_mac = images_per_s(config, args.steps, device=device)
            name = path.name + (" compiled" if config.compile else "")
            rows.append({"config": name, "arch": config.arch, "params": params, "image_size": config.image_size,
                         "batch_size": config.batch_size, "compile": config.compile, "images_per_s": ips,
                         "step_s": step_s, "first_step_s": first, "gmac": gmac,
                         "normalised_per_mac": per_mac,
                         "ns_per_mac": 1e9 / (ips * gmac * 1e9) if gmac else None})  # per forward MAC
            print(f"{name:<24} {params / 1e6:6.2f} M params  {config.image_size} px  batch {config.batch_size}: "
                  f"{ips:7.1f} img/s ({step_s:.2f} s/step, first step {first:.1f} s), {gmac:.3f} GMAC/img, "
                  f"{per_mac * 1e3:.1f} normalised activations per 1000 MAC",
                  flush=True)
    reference = next((r for r in rows if r["arch"] == "resnet18" and not r["compile"]), None)
    if reference:
        print("time per MAC relative to ResNet-18 (same run):")
        for r in rows:
            r["time_per_mac_vs_resnet18"] = r["ns_per_mac"] / reference["ns_per_mac"]
            print(f"  {r['config']:<33} {r['time_per_mac_vs_resnet18']:.2f}×")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"run": run_info(device), "torch": torch.__version__,
                                         "threads": torch.get_num_threads(), "device": str(device), "device_name": card,
                                         "cpu_bf16": autocast_dtype(torch.device("cpu")) is not None,
                                         "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
