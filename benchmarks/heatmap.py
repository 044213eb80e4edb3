"""Benchmark: dense per-pixel heatmaps against the patch-by-patch reference, on this machine's CPU.

For each model, on one random 224×224 image (random weights; speed does not depend on them):
- median wall time of the dense method (``bagnet.heatmaps.heatmap``, stride 1, default memory limit);
- median time of the reference on a fixed random sample of patches (batches of 1000, as in the paper's code),
  scaled up to all H·W patches; the ratio of the two;
- peak memory of the dense method (peak RSS of a fresh process, and its increase over the process before the call);
- achieved GFLOP/s of the dense method (FLOPs counted by torch.utils.flop_counter) next to the GFLOP/s of a large
  fp32 torch.matmul measured in the same run.

Usage:  .venv/bin/python benchmarks/heatmap.py [--models bagnet33 bagnet9] [--size 224] [--repeats 3]
        [--ref-patches 2000] [--json benchmarks/results/heatmap.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode
from runinfo import run_info  # benchmarks/runinfo.py (this folder is on sys.path when the script runs)


import bagnet
from bagnet.heatmaps import heatmap, heatmap_reference


DEVICE = torch.device("cpu")  # set from --device in main()


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        _sync()
        start = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_gflops(n: int = 4096, repeats: int = 5) -> float:
    a, b = torch.randn(n, n, device=DEVICE), torch.randn(n, n, device=DEVICE)
    a @ b  # warm-up
    return 2 * n**3 / median_time(lambda: a @ b, repeats) / 1e9


def dense_flops(model, x) -> int:
    with FlopCounterMode(display=False) as counter:
        heatmap(model, x, 0)
    return counter.get_total_flops()


def _proc_status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def memory_probe(name: str, size: int) -> dict:
    """Run in a fresh process: resident memory before and at the peak of one dense heatmap (Linux /proc)."""
    model = bagnet.load(name)
    x = torch.randn(1, 3, size, size)
    heatmap(model, torch.randn(1, 3, 40, 40), 0)  # load the kernels before measuring the baseline
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS counter (VmHWM) to the current RSS
    before = _proc_status_bytes("VmRSS")
    heatmap(model, x, 0)
    peak = _proc_status_bytes("VmHWM")
    return {"peak_rss_bytes": peak, "baseline_rss_bytes": before, "increase_bytes": peak - before}


def run(name: str, size: int, repeats: int, ref_patches: int) -> dict:
    torch.manual_seed(0)
    model = bagnet.load(name).to(DEVICE)
    x = torch.randn(1, 3, size, size, device=DEVICE)
    heatmap(model, x[..., :64, :64], 0)  # warm-up
    dense_s = median_time(lambda: heatmap(model, x, 0), repeats)
    flops = dense_flops(model, x)

    g = torch.Generator().manual_seed(0)
    order = torch.randperm(size * size, generator=g)[:ref_patches].tolist()
    positions = [(p // size, p % size) for p in order]
    heatmap_reference(model, x, 0, positions=positions[:100], batch_size=1000)  # warm-up
    sample_s = median_time(lambda: heatmap_reference(model, x, 0, positions=positions, batch_size=1000), repeats)
    ref_s = sample_s * size * size / len(positions)

    # the sample is also a correctness check of this run
    dense = heatmap(model, x, 0)[0, 0]
    ref = heatmap_reference(model, x, 0, positions=positions[:200], batch_size=1000)[0, 0]
    ys, xs = zip(*positions[:200])
    rel = ((dense[list(ys), list(xs)] - ref).abs().max() / ref.abs().max()).item()

    if DEVICE.type == "cuda":  # GPU memory of one map, measured in this process
        torch.cuda.reset_peak_memory_stats(DEVICE)
        before = torch.cuda.memory_allocated(DEVICE)
        heatmap(model, x, 0)
        peak = torch.cuda.max_memory_allocated(DEVICE)
        memory = {"peak_rss_bytes": peak, "baseline_rss_bytes": before, "increase_bytes": peak - before}
    else:
        probe = subprocess.run(
            [sys.executable, __file__, "--memory-probe", name, "--size", str(size)],
            capture_output=True, text=True, check=True,
        )
        memory = json.loads(probe.stdout)
    return {
        "model": name,
        "image": f"{size}x{size}",
        "dense_median_s": dense_s,
        "reference_sample_patches": len(positions),
        "reference_sample_median_s": sample_s,
        "reference_extrapolated_s": ref_s,
        "speedup": ref_s / dense_s,
        "dense_gflop": flops / 1e9,
        "dense_gflops_per_s": flops / dense_s / 1e9,
        "max_rel_diff_vs_reference_on_200_patches": rel,
        **memory,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["bagnet33", "bagnet17", "bagnet9"])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ref-patches", type=int, default=2000)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--memory-probe", metavar="MODEL", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]; name the --json per device "
                        "(benchmarks/results/heatmap-cuda.json); on CUDA the memory columns are GPU memory")
    args = parser.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    if args.memory_probe:
        print(json.dumps(memory_probe(args.memory_probe, args.size)))
        return

    mm = matmul_gflops()
    rows = [run(name, args.size, args.repeats, args.ref_patches) for name in args.models]
    mm_after = matmul_gflops()
    result = {
        "run": run_info(DEVICE),
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                    "torch": torch.__version__, "device": str(DEVICE),
                    "device_name": torch.cuda.get_device_name(DEVICE) if DEVICE.type == "cuda" else "cpu"},
        "matmul_gflops_per_s": {"before": mm, "after": mm_after},
        "rows": rows,
    }
    print(f"torch {torch.__version__}, device {result['machine']['device_name']}, {torch.get_num_threads()} threads; "
          f"fp32 matmul 4096²: {mm:.0f} GFLOP/s before, {mm_after:.0f} after the runs")
    print(f"{'model':<9} {'dense':>8} {'reference*':>11} {'ratio':>6} {'GFLOP':>7} {'GFLOP/s':>8} "
          f"{'% matmul':>8} {'peak RSS':>9} {'increase':>9} {'rel.diff':>9}")
    for r in rows:
        print(f"{r['model']:<9} {r['dense_median_s']:>7.2f}s {r['reference_extrapolated_s']:>10.1f}s "
              f"{r['speedup']:>6.1f} {r['dense_gflop']:>7.0f} {r['dense_gflops_per_s']:>8.1f} "
              f"{100 * r['dense_gflops_per_s'] / max(mm, mm_after):>7.0f}% "
              f"{r['peak_rss_bytes'] / 2**30:>8.2f}G {r['increase_bytes'] / 2**30:>8.2f}G "
              f"{r['max_rel_diff_vs_reference_on_200_patches']:>9.1e}")
    print(f"* reference timed on {args.ref_patches} random patches (batches of 1000) and scaled to all "
          f"{args.size}² patches")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
