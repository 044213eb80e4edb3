"""Benchmark: forward-pass throughput of BagNet-9/-17/-33 and torchvision's ResNet-50 on this machine's CPU.

For each model and batch size (224×224 inputs, random weights, eval mode, inference_mode) it reports the median
images/s, the model's multiply-accumulate count per image (torch.utils.flop_counter, FLOPs / 2) and the time per
GMAC, relative to ResNet-50 in the same variant. Variants: ``eager`` (NCHW; BagNets split big
batches into chunks of 2×224² pixels in eval mode, ``eager-unchunked`` turns that off), ``channels_last``, ``channels_last+fused``
(BatchNorm folded into the convolutions: bagnet.models.fuse_batchnorm / torch.fx fusion for ResNet-50) and, with
``--compile``, ``torch.compile`` of the channels-last fused model.

Usage:  .venv/bin/python benchmarks/forward.py [--batches 1 32] [--repeats 5] [--compile]
        [--json benchmarks/results/forward.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch
import torchvision
from torch.utils.flop_counter import FlopCounterMode
from runinfo import run_info  # benchmarks/runinfo.py (this folder is on sys.path when the script runs)


import bagnet
from bagnet.models import fuse_batchnorm


def build(name: str) -> torch.nn.Module:
    if name == "resnet50":
        return torchvision.models.resnet50(weights=None).eval()
    return bagnet.load(name)


def fused(model: torch.nn.Module) -> torch.nn.Module:
    if isinstance(model, bagnet.BagNet):
        return fuse_batchnorm(model)
    from torch.fx.experimental.optimization import fuse

    return fuse(copy.deepcopy(model))


def macs_per_image(model: torch.nn.Module, size: int) -> float:
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(torch.randn(1, 3, size, size, device=next(model.parameters()).device))
    return counter.get_total_flops() / 2


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def images_per_s(model: torch.nn.Module, batch: int, size: int, repeats: int,
                 channels_last: bool) -> tuple[float, float]:
    """(median images/s, seconds of the first call — for a compiled model, its compile time for this shape)."""
    device = next(model.parameters()).device
    x = torch.randn(batch, 3, size, size, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        for i in range(2):  # warm-up (and compilation)
            _sync(device)
            start = time.perf_counter()
            model(x)
            _sync(device)
            if i == 0:
                first = time.perf_counter() - start
        times = []
        for _ in range(repeats):
            _sync(device)
            start = time.perf_counter()
            model(x)
            _sync(device)
            times.append(time.perf_counter() - start)
    return batch / statistics.median(times), first


def variants(name: str, use_compile: bool):
    base = build(name)
    if isinstance(base, bagnet.BagNet):
        unchunked = copy.deepcopy(base)
        unchunked.inference_chunk_pixels = None
        yield "eager-unchunked", unchunked, False
    yield "eager", base, False
    cl = copy.deepcopy(base).to(memory_format=torch.channels_last)
    yield "channels_last", cl, True
    fcl = fused(base).to(memory_format=torch.channels_last)
    yield "channels_last+fused", fcl, True
    if use_compile:
        yield "compiled", torch.compile(fcl), True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["bagnet9", "bagnet17", "bagnet33", "resnet50"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 32])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]; name the --json per device")
    args = parser.parse_args()
    torch.manual_seed(0)
    device = torch.device(args.device)
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"torch {torch.__version__}, device {device} ({card})")

    rows = []
    for name in args.models:
        macs = macs_per_image(build(name).to(device), args.size)
        for variant, model, channels_last in variants(name, args.compile):
            model = model.to(device)
            for batch in args.batches:
                ips, first = images_per_s(model, batch, args.size, args.repeats if batch > 1 else 3 * args.repeats,
                                          channels_last)
                rows.append({"model": name, "variant": variant, "batch": batch, "images_per_s": ips,
                             "first_call_s": first,
                             "gmacs_per_image": macs / 1e9, "ms_per_gmac": 1e3 / (ips * macs / 1e9)})
                print(f"{name:<9} {variant:<20} batch {batch:>3}: {ips:8.2f} img/s  {macs / 1e9:5.2f} GMAC/img  "
                      f"{rows[-1]['ms_per_gmac']:6.2f} ms/GMAC", flush=True)

    ref = {(r["variant"], r["batch"]): r["ms_per_gmac"] for r in rows if r["model"] == "resnet50"}
    ref.update({("eager-unchunked", b): t for (v, b), t in list(ref.items()) if v == "eager"})
    print("\ntime per multiply-accumulate relative to ResNet-50 in the same variant and batch (≤ 1.2 is the target):")
    for r in rows:
        if r["model"] != "resnet50" and (r["variant"], r["batch"]) in ref:
            r["ms_per_gmac_vs_resnet50"] = r["ms_per_gmac"] / ref[(r["variant"], r["batch"])]
            print(f"  {r['model']:<9} {r['variant']:<20} batch {r['batch']:>3}: {r['ms_per_gmac_vs_resnet50']:.2f}×")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"run": run_info(device), "torch": torch.__version__,
                                         "threads": torch.get_num_threads(),
                                         "size": args.size, "device": str(device), "device_name": card, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
