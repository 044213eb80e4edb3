"""The model card a finished run writes beside its weights (``model.md``): what the model is, what it started from,
the data and its split, the classes in order, every metric with its interval, the sparsity of its evidence and the
learning curve."""

from __future__ import annotations

from typing import Any

from .metrics import HEADLINE
from .result import TrainResult


def _split_lines(config: Any) -> list[str]:
    """The groups of a grouped split and the intensity window, when the run has them."""
    from pathlib import Path

    from ..data.split import DataSplit
    from .splits import SPLIT_FILE

    lines = []
    path = Path(config.out) / SPLIT_FILE
    split = DataSplit.load(path) if path.is_file() else None
    if split is not None and split.groups:
        lines.append("- Groups (the table's `group` column; no group in two splits): "
                     + ", ".join(f"{name} {n}" for name, n in split.groups.items()) + " groups.")
    if config.intensity_window is not None:
        low, high = config.intensity_window
        lines.append(f"- 16-bit and float images read through the intensity window {low:g}–{high:g} (→ 0–255).")
    return lines


def model_card(result: TrainResult, splits: Any) -> str:
    """The card's Markdown."""
    config = result.config
    lines = [f"# {config.arch} trained on {config.data}", ""]
    arch = (f"`{config.arch}`, patch size {config.patch_size}, width {config.width}, blocks per stage "
            f"{list(config.layers)}" if config.arch == "bagnet" else f"`{config.arch}`")
    lines += [f"- Architecture: {arch}; input {config.image_size}×{config.image_size} px "
              f"(evaluation: resize {config.resize or config.image_size}, centre crop {config.image_size})."]
    if config.init:
        frozen = {0: "nothing frozen", -1: "everything but the classifier frozen (a linear probe)"}.get(
            config.freeze_stages, f"the stem and the first {config.freeze_stages} stages frozen")
        lines.append(f"- Started from `{config.init}`: {result.init or ''}; {frozen}"
                     + (f"; pretrained layers at {config.pretrained_lr_mult:g}× the learning rate"
                        if config.pretrained_lr_mult != 1 else "") + ".")
    sizes = result.evaluation.get("sizes", {})
    split = (f"one folder split by bagnet (seed {config.seed}; val {config.val_fraction:g}, test "
             f"{config.test_fraction:g} of each class; `split.json` lists every file)"
             if config.val_fraction or config.test_fraction else "its own train/val split")
    lines.append(f"- Data: `{config.data}`, {split}; images: "
                 + ", ".join(f"{name} {n}" for name, n in sizes.items()) + ".")
    lines += _split_lines(config)
    lines.append(f"- Classes, in output order: {', '.join(splits.categories)}.")
    lines.append(f"- Recipe: {config.epochs} epochs, batch {config.batch_size}, {config.optimizer} lr {config.lr:g} "
                 f"(warm-up {config.warmup_epochs:g} epochs, cosine), weight decay {config.weight_decay:g}, label "
                 f"smoothing {config.label_smoothing:g}"
                 + (f", evidence L1 λ = {config.evidence_l1:g}" if config.evidence_l1 else "")
                 + (", BatchNorm statistics fixed" if config.freeze_bn else "")
                 + (f", BatchNorm statistics re-estimated over {config.precise_bn} training batches after every epoch"
                    if config.precise_bn else "") + f", seed {config.seed}.")
    for name in ("val", "test"):
        block = result.evaluation.get(name)
        if not block:
            continue
        metrics = block["metrics"]
        level = int(100 * metrics.get("level", 0.95))
        lines += ["", f"## {name} ({metrics['images']} images; {level} % bootstrap intervals, "
                      f"{metrics['bootstrap']} resamples)", "", "| metric | value | interval |", "| --- | --- | --- |"]
        for key in HEADLINE:
            m = metrics.get(key)
            if m:
                lines.append(f"| {key.replace('_', ' ')} | {m['value']:.3f} | [{m['low']:.3f}, {m['high']:.3f}] |")
        if block.get("sparsity"):
            s = block["sparsity"]
            lines.append(f"| evidence top-5 % share | {s['top5_share']:.3f} | |")
            lines.append(f"| evidence Gini | {s['gini']:.3f} | |")
        lines += ["", "| class | precision | recall | images |", "| --- | --- | --- | --- |"]
        for cls, m in metrics["per_class"].items():
            lines.append(f"| {cls} | {m['precision']:.3f} | {m['recall']:.3f} | {m['support']} |")
    lines += ["", "## Learning curve (`curves.png`, `metrics.csv`)", "",
              "| epoch | train loss | train top-1 | val top-1 |" + (" mean \\|evidence\\| |" if config.evidence_l1 else ""),
              "| --- | --- | --- | --- |" + (" --- |" if config.evidence_l1 else "")]
    for h in result.history:
        lines.append(f"| {h.epoch} | {h.train_loss:.3f} | {h.train_top1:.3f} | {h.val_top1:.3f} |"
                     + (f" {h.evidence_l1:.4f} |" if config.evidence_l1 and h.evidence_l1 is not None else ""))
    lines += ["", "Sparsity (bagnet.sparsity): on the predicted class's evidence map (classifier bias excluded), the "
                  "share of Σ|evidence| carried by the top 5 % of cells, and the Gini coefficient of |evidence|.", ""]
    return "\n".join(lines)
