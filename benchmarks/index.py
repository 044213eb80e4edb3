"""Benchmark: building and querying a patch index (`bagnet index`) of a dataset on this machine's CPU.

Side by side, in separate processes (so that each one's peak memory is its own): the forward passes alone over the
dataset (the same model, loader and batches the build uses: the cost the index adds to), then the index build. It
reports images and patches per second of both and their ratio (target ≤ 1.2: the vector store adds ≤ 20 %, its
quantizer's training included), bytes per patch on disk, each process's peak resident memory, the recall@10 the build
measured against brute force over the same vectors, and the median milliseconds of one query (one patch, k = 10)
over the whole index.

Usage:  .venv/bin/python benchmarks/index.py [--model bagnet33:imagenette] [--data imagenette-train] [--limit N]
        [--json benchmarks/results/index.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from runinfo import run_info  # benchmarks/runinfo.py (this folder is on sys.path when the script runs)


def dataset(spec: str, model, limit):
    import torch

    import bagnet

    if spec == "imagenette-train":
        data = bagnet.data.imagenette("train", model.preprocess)
    else:
        data = bagnet.data.evaluation_dataset(spec, model.preprocess)[0]
    return torch.utils.data.Subset(data, range(min(limit, len(data)))) if limit else data


def part_forward(args) -> dict:
    """The forward passes alone: features and evidence of every batch, as the build computes them."""
    import torch

    import bagnet
    from bagnet.data import SkipLog
    from bagnet.data.sampling import ordered_batches

    model = bagnet.load(args.model).eval()
    data = dataset(args.data, model, args.limit)
    start, patches = time.perf_counter(), 0
    with torch.no_grad():
        for batch in ordered_batches(data, range(len(data)), args.batch_size, SkipLog(), args.workers):
            f = model.forward_features(batch.images)
            torch.nn.functional.conv2d(f, model.fc.weight[:, :, None, None], model.fc.bias)
            patches += f.shape[0] * f.shape[2] * f.shape[3]
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "images": len(data), "patches": patches, "peak_rss_bytes": _peak()}


def part_build(args) -> dict:
    import bagnet
    from bagnet.patches import build_index

    model = bagnet.load(args.model).eval()
    data = dataset(args.data, model, args.limit)
    start = time.perf_counter()
    index = build_index(model, data, args.out, data=args.data, batch_size=args.batch_size, workers=args.workers,
                        progress=False, log=lambda m: None)
    seconds = time.perf_counter() - start
    m = index.manifest
    return {"seconds": seconds, "images": m.images, "patches": m.patches, "factory": m.factory, "nprobe": m.nprobe,
            "recall_at_10": m.recall_at_10, "bytes": m.build["bytes"], "bytes_per_patch": m.build["bytes_per_patch"],
            "peak_rss_bytes": _peak()}


def part_query(args) -> dict:
    import numpy as np

    from bagnet.patches import PatchIndex

    start = time.perf_counter()
    index = PatchIndex.load(args.out)
    load = time.perf_counter() - start
    rng = np.random.default_rng(0)
    ids = rng.choice(len(index), args.queries, replace=False)
    import faiss

    ivf = faiss.try_extract_index_ivf(index.index)
    if ivf is not None:
        ivf.make_direct_map()  # reconstruct() of an inverted file needs its id → list map
    queries = np.stack([index.index.reconstruct(int(i)) for i in ids])  # stored (quantized) vectors as queries
    times = []
    for q in queries:
        t = time.perf_counter()
        index.search(q[None], 10)
        times.append(time.perf_counter() - t)
    return {"load_seconds": load, "query_ms_median": 1000 * statistics.median(times),
            "query_ms_p90": 1000 * float(np.quantile(times, 0.9)), "queries": args.queries, "patches": len(index),
            "peak_rss_bytes": _peak()}


def _peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child(part: str, args, out: Path) -> dict:
    command = [sys.executable, __file__, "--part", part, "--model", args.model, "--data", args.data,
               "--batch-size", str(args.batch_size), "--workers", str(args.workers), "--out", str(out),
               "--queries", str(args.queries)] + (["--limit", str(args.limit)] if args.limit else [])
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"benchmark part {part} failed:\n{result.stderr[-3000:]}")
    print(f"{part}: {result.stdout.strip().splitlines()[-1]}", file=sys.stderr, flush=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="bagnet33:imagenette")
    parser.add_argument("--data", default="imagenette-train")
    parser.add_argument("--limit", type=int, default=None, help="only the first N images")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--part", choices=["forward", "build", "query"], help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.part:
        print(json.dumps({"forward": part_forward, "build": part_build, "query": part_query}[args.part](args)))
        return
    folder = Path(tempfile.mkdtemp(prefix="bagnet-index-bench-"))
    try:
        forward = child("forward", args, folder / "index")
        build = child("build", args, folder / "index")
        query = child("query", args, folder / "index")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    result = {"model": args.model, "data": args.data, "forward": forward, "build": build, "query": query,
              "build_over_forward": build["seconds"] / forward["seconds"],
              "patches_per_second": build["patches"] / build["seconds"],
              "forward_patches_per_second": forward["patches"] / forward["seconds"], "run": run_info()}
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
