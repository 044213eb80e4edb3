"""Measure the inputs of docs/imagenet.md's run-time estimate and write them to docs/results/imagenet-estimate.json.

What is measured here (on the CPU): the forward cost per 224-px image of every model of scripts/imagenet_results.sh
(``torch.utils.flop_counter``, random weights, nothing downloaded) and the time to decode one ImageNet-sized JPEG
(500×375: decode, resize 256, centre crop 224, normalise) on one core. The GPU's rates are read from the GPU result
file the README shows (``benchmarks/results/gpu-h200-before.json``). scripts/figures_results.py turns these into the
page's table; the arithmetic is written out there.

Usage:  python scripts/imagenet_estimate.py [--json docs/results/imagenet-estimate.json]
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torchvision
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from runinfo import run_info  # noqa: E402

import bagnet  # noqa: E402

MODELS = {
    "bagnet9": lambda: bagnet.bagnet9(), "bagnet17": lambda: bagnet.bagnet17(), "bagnet33": lambda: bagnet.bagnet33(),
    "vgg16": lambda: torchvision.models.vgg16(), "resnet50": lambda: torchvision.models.resnet50(),
    "resnet152": lambda: torchvision.models.resnet152(), "densenet169": lambda: torchvision.models.densenet169(),
    "vit_b_16": lambda: torchvision.models.vit_b_16(),
}


def gmac(model: torch.nn.Module) -> float:
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model.eval()(torch.randn(1, 3, 224, 224))
    return counter.get_total_flops() / 2 / 1e9


def decode_seconds(repeats: int = 30) -> float:
    """Median seconds to read one 500×375 JPEG into a normalised 224² tensor, as the evaluation loaders do."""
    from bagnet.data import sample_image
    from bagnet.models.preprocess import make_preprocess

    buffer = io.BytesIO()
    sample_image("chelsea").resize((500, 375)).save(buffer, "JPEG", quality=90)
    data = buffer.getvalue()
    prep = make_preprocess(resize=256, crop=224)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        prep(Image.open(io.BytesIO(data)).convert("RGB"))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, default=ROOT / "docs" / "results" / "imagenet-estimate.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    costs = {}
    for name, build in MODELS.items():
        costs[name] = gmac(build())
        print(f"{name}: {costs[name]:.2f} GMAC at 224 px", flush=True)
    seconds = decode_seconds()
    print(f"decode + preprocess one 500×375 JPEG: {1000 * seconds:.1f} ms on one core")
    result = {"run": run_info(torch.device("cpu")), "gmac_224": costs, "decode_images_per_s_per_core": 1 / seconds,
              "gpu_source": "benchmarks/results/gpu-h200-before.json"}
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
