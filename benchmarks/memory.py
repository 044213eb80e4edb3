"""Benchmark: peak memory of one BagNet training step per image, at several input sizes, with and without
activation checkpointing (``TrainConfig.activation_checkpointing`` / ``BagNet.checkpoint_stages``).

Each measurement runs in a fresh process (CPU: the growth of the peak resident set size over the process's
size before the step, so the model, the optimiser state and the Python runtime are not counted; CUDA:
``torch.cuda.max_memory_allocated``); a step on one tiny image first creates the optimiser state. The step is the one ``bagnet train`` runs (``bagnet.train.train_step``), with
the shipped config's settings (bf16 autocast where the CPU has it, channels-last).

Usage:  .venv/bin/python benchmarks/memory.py [--sizes 128 224 512] [--batch 4] [--device cpu] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
import torch
from runinfo import run_info  # benchmarks/runinfo.py (this folder is on sys.path when the script runs)


ROOT = Path(__file__).resolve().parents[1]
MODELS = {
    "bagnet33 (shipped: width 24, blocks 1-2-2-1)": {"layers": [1, 2, 2, 1], "width": 24},
    "bagnet33 (paper: width 64, blocks 3-4-6-3)": {"layers": [3, 4, 6, 3], "width": 64},
}

CHILD = r"""
import json, resource, sys, time, torch
from bagnet.train import TrainConfig, build_model, train_step, autocast_dtype
from bagnet.data import Batch
spec = json.loads(sys.argv[1])
device = torch.device(spec["device"])
config = TrainConfig(arch="bagnet", patch_size=33, layers=tuple(spec["layers"]), width=spec["width"],
                     image_size=spec["size"], activation_checkpointing=spec["checkpointing"])
torch.manual_seed(0)
model = build_model(config, 1000).to(device).to(memory_format=torch.channels_last).train()
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
scaler = torch.amp.GradScaler(device.type, enabled=False)
n = spec["batch"]
batch = Batch(torch.randn(n, 3, spec["size"], spec["size"]), torch.randint(0, 1000, (n,)), torch.arange(n), [])
amp = autocast_dtype(device)
loss_fn = torch.nn.CrossEntropyLoss()
# a step on one tiny image creates the optimiser state and warms the allocator without raising the high-water mark
tiny = Batch(torch.randn(1, 3, 56, 56), torch.zeros(1, dtype=torch.long), torch.arange(1), [])
train_step(model, tiny, loss_fn, optimizer, scaler, device, amp, True)
if device.type == "cuda":
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
else:
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
start = time.perf_counter()
train_step(model, batch, loss_fn, optimizer, scaler, device, amp, True)
seconds = time.perf_counter() - start
peak = (torch.cuda.max_memory_allocated() if device.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
print(json.dumps({"peak_bytes_per_image": max(0, peak - base) / n, "step_s": seconds}))
"""


def measure(spec: dict) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)], capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", type=int, default=[128, 224, 512])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = []
    print(f"peak training memory per image, batch {args.batch}, {args.device}; step time of that one step")
    for name, arch in MODELS.items():
        for size in args.sizes:
            cells = {}
            for checkpointing in (False, True):
                spec = {**arch, "size": size, "batch": args.batch, "device": args.device,
                        "checkpointing": checkpointing}
                start = time.perf_counter()
                result = measure(spec)
                rows.append({"model": name, "size": size, "batch": args.batch, "checkpointing": checkpointing,
                             **result, "wall_s": time.perf_counter() - start})
                cells[checkpointing] = result
            plain, saved = cells[False], cells[True]
            text = " | ".join(
                "error: " + r["error"] if "error" in r else
                f"{r['peak_bytes_per_image'] / 2**20:8.1f} MiB/img, step {r['step_s']:.2f} s" for r in (plain, saved))
            print(f"{name:<46} {size:>4} px: plain {text.split(' | ')[0]} | checkpointed {text.split(' | ')[1]}",
                  flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        from bagnet.train import autocast_dtype

        amp = autocast_dtype(torch.device(args.device))
        args.json.write_text(json.dumps({"run": run_info(args.device), "device": args.device,
                                         "precision": str(amp).replace("torch.", "") + " autocast" if amp else "fp32",
                                         "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
