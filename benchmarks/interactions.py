"""Benchmark: the interaction experiment for a BagNet with single effects from forward passes or from one
evidence map plus the crops a region reaches (``InteractionConfig.local_effects``).

Times ``bagnet.experiments.interactions`` on the same random images both ways, interleaved, ``--repeats`` times;
prints the median seconds per image of each, their ratio, and the largest difference of the results (they must
agree up to float rounding). Random weights and images: the speed does not depend on them.

Usage:  .venv/bin/python benchmarks/interactions.py [--models bagnet33 bagnet17] [--size 128] [--images 4]
        [--repeats 3] [--json benchmarks/results/interactions.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

import bagnet
from bagnet.experiments import InteractionConfig, interactions
from runinfo import run_info  # benchmarks/runinfo.py (this folder is on sys.path when the script runs)


class RandomImages(torch.utils.data.Dataset):
    def __init__(self, count: int, size: int) -> None:
        self.images = torch.randn(count, 3, size, size, generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i], 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["bagnet33", "bagnet17"])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    data = RandomImages(args.images, args.size)
    rows = []
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.size}×{args.size}, "
          f"{args.images} images, default gaps and 4 pairs per gap")
    for name in args.models:
        model = getattr(bagnet, name)(num_classes=10).eval()
        times: dict[bool, list[float]] = {True: [], False: []}
        results = {}
        for _ in range(args.repeats):
            for local in (False, True):
                config = InteractionConfig(local_effects=local)
                start = time.perf_counter()
                results[local] = interactions({name: model}, data, 10, config, progress=False, limit=args.images)
                times[local].append((time.perf_counter() - start) / args.images)
        slow, fast = statistics.median(times[False]), statistics.median(times[True])
        diff = max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(results[True].mean_abs_effect[name],
                                                                 results[False].mean_abs_effect[name]))
        rows.append({"model": name, "forward_s_per_image": slow, "local_s_per_image": fast,
                     "speedup": slow / fast, "max_rel_diff_mean_effect": diff})
        print(f"{name:<10} forward passes {slow:6.2f} s/img   evidence map + crops {fast:6.2f} s/img   "
              f"{slow / fast:4.2f}×   max rel. diff of mean |effect| {diff:.1e}", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"run": run_info(), "torch": torch.__version__, "size": args.size,
                                         "images": args.images,
                                         "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
