"""Benchmark: the figures that decide how bagnet uses an accelerator, on any device (``--device cuda`` on a GPU).

1. Inference throughput per MAC: the paper-size BagNet-33 (random weights) against torchvision's ResNet-50, eval
   mode, one batch of ``--batch`` images at ``--size`` px, fp32 and (on CUDA) bf16 autocast, channels-last; with the
   device's own chunking policy (``BagNet._inference_chunk``: one pass on a GPU with room) and, for comparison, the
   CPU policy forced (chunks of ``inference_chunk_pixels``).
2. Heatmaps: one map against ``--maps`` maps computed together (``heatmap(..., images_per_pass=None)``: batched on
   a GPU) and one at a time, per precision (strict, tf32, bf16), with the error of each precision against strict
   fp32 relative to the map's range.
3. Peak memory of each (CUDA: ``torch.cuda.max_memory_allocated``; CPU: not measured here, see memory.py).

Usage:  .venv/bin/python benchmarks/device.py --device cuda [--batch 256] [--size 224] [--maps 16]
        [--json benchmarks/results/device-cuda.json]
        (on a CPU: --device cpu --batch 8 --size 128 --maps 4 runs in a few minutes)
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torchvision
from torch.utils.flop_counter import FlopCounterMode
from runinfo import run_info  # benchmarks/runinfo.py (this folder is on sys.path when the script runs)


import bagnet
from bagnet.heatmaps import heatmap


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int) -> float:
    fn()  # warm-up
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_mib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def macs(model: torch.nn.Module, size: int, device: torch.device) -> float:
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(torch.randn(1, 3, size, size, device=device))
    return counter.get_total_flops() / 2


def inference_rows(device: torch.device, batch: int, size: int, repeats: int) -> list[dict]:
    rows = []
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    models = {"bagnet33": bagnet.bagnet33(), "resnet50": torchvision.models.resnet50(weights=None)}
    dtypes = [None] + ([torch.bfloat16] if device.type == "cuda" else [])
    for name, model in models.items():
        model = model.eval().to(device, memory_format=torch.channels_last)
        mac = macs(model, size, device)
        policies = ["device"] + (["cpu-chunks"] if isinstance(model, bagnet.BagNet) and device.type != "cpu" else [])
        for policy in policies:
            for dtype in dtypes:
                if policy == "cpu-chunks":  # what every GPU batch paid before chunking was decided per device
                    chunk = max(1, model.inference_chunk_pixels // (size * size))
                    run = lambda: [model(part) for part in x.split(chunk)]  # noqa: E731
                else:
                    run = lambda: model(x)  # noqa: E731

                def step():
                    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype or torch.float32,
                                                                enabled=dtype is not None):
                        run()

                reset_peak(device)
                seconds = timed(step, device, repeats)
                rows.append({"model": name, "policy": policy, "dtype": str(dtype or torch.float32).split(".")[-1],
                             "batch": batch, "images_per_s": batch / seconds, "gmac_per_image": mac / 1e9,
                             "tmac_per_s": batch * mac / seconds / 1e12, "peak_mib": peak_mib(device)})
                print(f"{name:<9} {policy:<10} {rows[-1]['dtype']:<9} batch {batch}: {rows[-1]['images_per_s']:9.1f} "
                      f"img/s  {rows[-1]['tmac_per_s']:7.3f} TMAC/s", flush=True)
    ref = {r["dtype"]: r["tmac_per_s"] for r in rows if r["model"] == "resnet50"}
    for r in rows:
        r["time_per_mac_vs_resnet50"] = ref[r["dtype"]] / r["tmac_per_s"]
    return rows


def heatmap_rows(device: torch.device, size: int, maps: int, repeats: int) -> list[dict]:
    torch.manual_seed(0)
    model = bagnet.bagnet33().eval().to(device)
    x = torch.randn(maps, 3, size, size, device=device)
    strict = heatmap(model, x, 0)
    rows = []
    for precision in ("strict", "tf32", "bf16"):
        reset_peak(device)
        one = timed(lambda: heatmap(model, x[:1], 0, precision=precision), device, repeats)
        together = timed(lambda: heatmap(model, x, 0, precision=precision), device, repeats)
        apart = timed(lambda: heatmap(model, x, 0, precision=precision, images_per_pass=1), device, repeats)
        err = float((heatmap(model, x, 0, precision=precision) - strict).abs().max() / strict.abs().max())
        rows.append({"precision": precision, "size": size, "maps": maps, "one_map_s": one, "batched_s": together,
                     "one_at_a_time_s": apart, "batched_vs_singles": together / (maps * one),
                     "max_error_vs_strict_rel": err, "peak_mib": peak_mib(device)})
        print(f"heatmap {precision:<6} {size}²: one {one:.3f} s, {maps} batched {together:.3f} s "
              f"({rows[-1]['batched_vs_singles']:.2f} of {maps} singles), one at a time {apart:.3f} s, "
              f"error {err:.1e} of the range", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--maps", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"torch {torch.__version__}, device {device} ({name})")
    result = {"run": run_info(device), "torch": torch.__version__, "device": name,
              "inference": inference_rows(device, args.batch, args.size, args.repeats),
              "heatmaps": heatmap_rows(device, args.size, args.maps, args.repeats)}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
