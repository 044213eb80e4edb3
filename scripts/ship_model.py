"""Copy a finished training run's weights into the package, with a model card written from the run's own files.

Usage:  .venv/bin/python scripts/ship_model.py RUN_DIR NAME --evaluation EVAL_DIR [--default] [--why TEXT]

NAME is the registry name (``bagnet33:imagenette`` → src/bagnet/weights/bagnet33.imagenette.safetensors);
EVAL_DIR is the output of ``bagnet evaluate --model RUN_DIR --data imagenette`` (full validation split).
The card records the architecture, input size, recipe, the exact commands, wall time, accuracies and data source;
``ARCH.DATA.json`` beside it holds the measured metrics that ``bagnet.load(NAME).meta`` and ``bagnet models`` read.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
from pathlib import Path

import torch
import yaml

import bagnet
from bagnet.data import default_data_root

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "src" / "bagnet" / "weights"
MAX_BYTES = 15 * 2**20


def card(name: str, run: Path, evaluation: dict, why: str, command: str = "") -> str:
    summary = json.loads((run / "summary.json").read_text())
    config = yaml.safe_load((run / "config.yaml").read_text())
    model = bagnet.load(run)
    meta = bagnet.model_meta(model)
    prep = meta.preprocess
    params = sum(p.numel() for p in model.parameters())
    history = summary["history"]
    last = history[-1]
    source = (default_data_root() / "imagenette2-160" / "SOURCE.txt")
    source_text = source.read_text().strip().splitlines()[:2] if source.is_file() else [config["data"]]
    lines = [
        f"# {name}: {type(model).__name__} ({meta.name}) trained on {config['data']}",
        "",
        f"- Architecture: `{config['arch']}`"
        + (f", patch size {model.patch_size}, stride {model.stride}, width {config['width']}, blocks per stage "
           f"{config['layers']}" if isinstance(model, bagnet.BagNet) else f", base width {config['width']}")
        + f"; {params / 1e6:.2f} M parameters; {meta.num_classes} classes: {', '.join(meta.categories or [])}.",
        f"- Input: RGB, {meta.resolution}×{meta.resolution} px (evaluation: resize the short side to "
        f"{prep.resize}, centre crop {prep.crop}), normalised with mean {list(prep.mean)}, std {list(prep.std)}; "
        f"`model.meta.preprocess` (also `model.preprocess`) does this.",
        f"- Why this size: {why}",
        f"- Recipe: {config['epochs']} epochs, batch {config['batch_size']}, {config['optimizer']} lr {config['lr']} "
        f"(warm-up {config['warmup_epochs']} epochs, cosine), weight decay {config['weight_decay']}, label smoothing "
        f"{config['label_smoothing']}, random resized crops (scale ≥ {config['min_scale']}) and flips, "
        f"{'bf16 mixed precision, ' if config.get('amp') else ''}seed {config['seed']}; "
        f"{config.get('holdout_per_class', 0)} training images per class held out for choices.",
        "- Commands: " + "; ".join(f"`{c}`" for c in summary.get("commands") or ["(not recorded)"]),
        f"- Wall time: {summary['wall_seconds'] / 3600:.2f} h on {platform.machine()} "
        f"({torch.get_num_threads()} threads, PyTorch {torch.__version__}); last epoch trained at "
        f"{last['images_per_s']:.0f} images/s.",
        f"- Accuracy on the full validation split ({evaluation['images']} images, `bagnet evaluate`): top-1 "
        f"{100 * evaluation['top1']:.2f} %, top-5 {100 * evaluation['top5']:.2f} %"
        + (f"; held-out training images: {100 * last['holdout_top1']:.2f} %" if last.get("holdout_top1") else "")
        + ".",
        "- Per class (top-1): " + ", ".join(f"{c} {100 * a:.1f} %" for c, a in
                                             zip(evaluation["categories"], evaluation["per_class_top1"])) + ".",
        f"- Data: {' '.join(source_text)}",
        "",
        "| epoch | train loss | train top-1 | val top-1 | val top-5 |",
        "| --- | --- | --- | --- | --- |",
    ] + [f"| {h['epoch']} | {h['train_loss']:.3f} | {h['train_top1']:.3f} | {h['val_top1']:.3f} | {h['val_top5']:.3f} |"
         for h in history]
    return "\n".join(lines) + "\n"


def sidecar(evaluation: dict) -> dict:
    """The metrics shipped beside the weights (read into ``ModelMeta.metrics``)."""
    return {"metrics": {evaluation.get("dataset", "imagenette/val"): {
                "top1": round(evaluation["top1"], 4), "top5": round(evaluation["top5"], 4),
                "images": evaluation["images"]}},
            "measured_by": "bagnet evaluate --model NAME --data imagenette (full validation split)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("name")
    parser.add_argument("--evaluation", type=Path, required=True)
    parser.add_argument("--default", action="store_true", help="make it the model load('default') gives")
    parser.add_argument("--why", default="", help="why this architecture and input size")
    parser.add_argument("--command", default="", help="the training command, where the run did not record it")
    args = parser.parse_args()
    weights = args.run / "model.safetensors"
    if not weights.is_file():
        raise SystemExit(f"{weights} does not exist: the run has not finished")
    if weights.stat().st_size > MAX_BYTES:
        raise SystemExit(f"{weights} is {weights.stat().st_size / 2**20:.1f} MiB, over the 15 MiB limit")
    evaluation = json.loads((args.evaluation / "evaluation.json").read_text())
    stem = args.name.replace(":", ".")
    WEIGHTS.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(weights, WEIGHTS / f"{stem}.safetensors")
    (WEIGHTS / f"{stem}.md").write_text(card(args.name, args.run, evaluation, args.why, args.command))
    (WEIGHTS / f"{stem}.json").write_text(json.dumps(sidecar(evaluation), indent=2) + "\n")
    if args.default:
        (WEIGHTS / "DEFAULT").write_text(args.name + "\n")
    print(f"shipped {WEIGHTS / (stem + '.safetensors')} and its model card")


if __name__ == "__main__":
    main()
