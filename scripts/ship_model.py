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
           f"{config['layers']}" if isinstance(model, bagnet.BagNet)
           else f", {config['patch_size']}-px tokens, width {config['width']}, depth {config['layers'][0]}, "
                f"{model.blocks[0].attn.num_heads} heads, global attention in every layer, class-token head"
           if config["arch"] == "vit" else f", base width {config['width']}")
        + f"; {params / 1e6:.2f} M parameters; {meta.num_classes} classes: {', '.join(meta.categories or [])}.",
        f"- Input: RGB, {meta.resolution}×{meta.resolution} px (evaluation: resize the short side to "
        f"{prep.resize}, centre crop {prep.crop}), normalised with mean {list(prep.mean)}, std {list(prep.std)}; "
        f"`model.meta.preprocess` (also `model.preprocess`) does this.",
        f"- Why this size: {why}",
        f"- Recipe: {config['epochs']} epochs, batch {config['batch_size']}, {config['optimizer']} lr {config['lr']} "
        f"(warm-up {config['warmup_epochs']} epochs, cosine), weight decay {config['weight_decay']}, label smoothing "
        f"{config['label_smoothing']}, random resized crops (scale ≥ {config['min_scale']}) and flips, "
        + "".join(f"{text}, " for key, text in (
            ("augment", f"{config.get('augment')} augmentation"), ("random_erasing",
            f"random erasing p={config.get('random_erasing')}"), ("mixup", f"MixUp α={config.get('mixup')}"),
            ("cutmix", f"CutMix α={config.get('cutmix')}"), ("drop_path", f"stochastic depth {config.get('drop_path')}"))
            if config.get(key) not in (None, 0, 0.0, "none"))
        + f"{'bf16 mixed precision, ' if config.get('amp') else ''}seed {config['seed']}; "
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


SAMPLE_PER_CLASS = 20
SAMPLE_KEY = f"imagenette/val first {SAMPLE_PER_CLASS} per class"


def sample_accuracy(model: torch.nn.Module, per_class: int = SAMPLE_PER_CLASS) -> dict:
    """Top-1 on a fixed sample of the validation split: the first ``per_class`` images of each class folder (sorted
    file names); tests/test_vit.py recomputes it from the shipped weights."""
    from bagnet.data import first_per_class, imagenette

    val = imagenette("val", bagnet.model_meta(model).preprocess)
    chosen = first_per_class(val, per_class)
    correct = 0
    with torch.no_grad():
        for start in range(0, len(chosen), 50):
            idx = chosen[start:start + 50]
            images = torch.stack([val[i][0] for i in idx])
            labels = torch.tensor([val[i][1] for i in idx])
            correct += int((model.eval()(images).argmax(1) == labels).sum())
    return {"top1": round(correct / len(chosen), 4), "correct": correct, "images": len(chosen)}


def sidecar(evaluation: dict, sample: dict | None = None) -> dict:
    """The metrics shipped beside the weights (read into ``ModelMeta.metrics``)."""
    metrics = {evaluation.get("dataset", "imagenette/val"): {
        "top1": round(evaluation["top1"], 4), "top5": round(evaluation["top5"], 4), "images": evaluation["images"]}}
    if sample is not None:
        metrics[SAMPLE_KEY] = sample
    return {"metrics": metrics,
            "measured_by": "bagnet evaluate --model NAME --data imagenette (full validation split)"
                           + ("; the fixed sample by scripts/ship_model.py --sample" if sample else "")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("name")
    parser.add_argument("--evaluation", type=Path, required=True)
    parser.add_argument("--default", action="store_true", help="make it the model load('default') gives")
    parser.add_argument("--why", default="", help="why this architecture and input size")
    parser.add_argument("--command", default="", help="the training command, where the run did not record it")
    parser.add_argument("--sample", action="store_true",
                        help=f"also record top-1 on the first {SAMPLE_PER_CLASS} validation images of each class")
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
    sample = sample_accuracy(bagnet.load(args.run)) if args.sample else None
    (WEIGHTS / f"{stem}.json").write_text(json.dumps(sidecar(evaluation, sample), indent=2) + "\n")
    if args.default:
        (WEIGHTS / "DEFAULT").write_text(args.name + "\n")
    print(f"shipped {WEIGHTS / (stem + '.safetensors')} and its model card")


if __name__ == "__main__":
    main()
