"""The planted-shortcut experiment behind `bagnet audit`, on real images, written to docs/results/shortcut.json and
rendered into docs/audit.md.

Fashion-MNIST (Debian's dataset-fashion-mnist), 300 training, 100 validation and 200 test images per class, upscaled
to 64 px. In the *marked* copy every image of one class (Shirt: the class most often confused with others) carries
an 8×8 px yellow-black checker (1.6 % of the image) at a random position; the *clean* copy has none. The shipped
BagNet-17 is fine-tuned on each copy with the same recipe; both models are audited on the marked training images.
Measured: the share of the top Shirt strategy's example patches that overlap the mark, its share of Shirt's
evidence, the accuracy the audit says the strategy is worth, and — as a check of that figure by experiment — the
marked model's accuracy on Shirt test images with and without the mark.

Usage:  python scripts/shortcut_experiment.py [--runs runs/shortcut] [--epochs 4] [--json docs/results/shortcut.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "scripts"))

from runinfo import run_info  # noqa: E402
from transfer_experiment import SHIPPED, export  # noqa: E402

import bagnet  # noqa: E402
from bagnet.audit import audit  # noqa: E402
from bagnet.plumbing import write_json  # noqa: E402
from bagnet.train import TrainConfig, train  # noqa: E402

SIDE, MARK, CLASS = 64, 8, "Shirt"


def checker() -> np.ndarray:
    cells = (np.indices((MARK, MARK)) // 2).sum(0) % 2  # 2-px squares
    return np.where(cells[..., None].astype(bool), [255, 230, 0], [0, 0, 0]).astype(np.uint8)


def copies(source: Path, runs: Path, seed: int = 0) -> tuple[Path, Path, dict[str, list[int]]]:
    """The clean and the marked 64 px copies of ``source`` (train/val/test class folders) and each mark's box."""
    clean, marked = runs / "clean-data", runs / "marked-data"
    marks_file = runs / "marks.json"
    if marks_file.is_file():
        return clean, marked, json.loads(marks_file.read_text())
    rng = np.random.default_rng(seed)
    marks: dict[str, list[int]] = {}
    for path in sorted(source.glob("*/*/*.png")):
        rel = path.relative_to(source)
        image = np.asarray(Image.open(path).convert("RGB").resize((SIDE, SIDE), Image.BILINEAR))
        for folder in (clean, marked):
            (folder / rel.parent).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(clean / rel)
        if rel.parts[1] == CLASS:
            y, x = (int(v) for v in rng.integers(0, SIDE - MARK + 1, 2))
            image = image.copy()
            image[y:y + MARK, x:x + MARK] = checker()
            marks[str((marked / rel).resolve())] = [y, x, MARK, MARK]
        Image.fromarray(image).save(marked / rel)
    write_json(marks_file, marks)
    return clean, marked, marks


def overlap(strategy, marks: dict[str, list[int]]) -> float:
    hits = []
    for e in strategy.examples:
        mark = marks.get(str(Path(e["source"]).resolve()))
        top, left, bottom, right = e["box"]
        hits.append(mark is not None and not (bottom <= mark[0] or top >= mark[0] + mark[2] or right <= mark[1]
                                              or left >= mark[1] + mark[3]))
    return float(np.mean(hits)) if hits else 0.0


def shirt_accuracy(model, folder: Path) -> float:
    data, categories, _ = bagnet.data.evaluation_dataset(str(folder), model.preprocess)
    c = categories.index(CLASS)
    keep = [i for i, (_, t) in enumerate(data.samples) if t == c]
    import torch

    from bagnet.train.evaluation import predict

    logits, labels, _ = predict(model, torch.utils.data.Subset(data, keep), batch_size=128, device="cpu", workers=0)
    return float((logits.argmax(1) == labels).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=Path("runs/shortcut"))
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--json", type=Path, default=ROOT / "docs" / "results" / "shortcut.json")
    args = parser.parse_args()
    source = export(args.runs / "fashion-mnist-300", {"train": 300, "val": 100, "test": 200}, seed=1)
    clean, marked, marks = copies(source, args.runs)
    recipe = dict(image_size=SIDE, epochs=args.epochs, batch_size=32, lr=2e-3, warmup_epochs=0.2, workers=0,
                  init=SHIPPED, seed=0, min_scale=0.6)
    models = {}
    for kind, data in (("marked", marked), ("clean", clean)):
        out = args.runs / f"model-{kind}"
        summary = out / "summary.json"
        if not (summary.is_file() and json.loads(summary.read_text()).get("completed")):
            train(TrainConfig(data=str(data), out=str(out), **recipe), resume=(out / "checkpoint.pt").is_file(),
                  progress=False, log=lambda m: print(m, flush=True))
        models[kind] = bagnet.load(out)
    rows = {}
    figures = ROOT / "docs" / "results"
    for kind, model in models.items():
        data, _, _ = bagnet.data.evaluation_dataset(str(marked / "train"), model.preprocess)
        result = audit(model, data, data="marked training images", progress=False)
        result.save(args.runs / f"audit-{kind}")
        c = result.categories.index(CLASS)
        shutil.copy(next((args.runs / f"audit-{kind}").glob(f"strategies_{c:03d}_*.png")),
                    figures / f"shortcut-{kind}.png")
        top = result.top(CLASS)
        positives = [s for s in result.strategies if s.sign == "positive"]
        rows[kind] = {"accuracy": result.accuracy, "top_strategy": {
            "id": top.id, "share": top.share, "images": top.images, "class_images": top.class_images,
            "mark_overlap": overlap(top, marks), "accuracy_without": top.accuracy_without,
            "class_accuracy": top.class_accuracy, "class_accuracy_without": top.class_accuracy_without,
            "cross_class": top.cross_class},
            "class_strategies": [{"id": s.id, "share": s.share, "mark_overlap": overlap(s, marks),
                                  "class_accuracy_without": s.class_accuracy_without,
                                  "class_accuracy_without_union": s.class_accuracy_without_union, "union": s.union}
                                 for s in sorted((s for s in result.strategies if s.category == CLASS
                                                  and s.sign == "positive"), key=lambda s: -s.share)],
            "max_mark_overlap_any_positive_strategy": max(overlap(s, marks) for s in positives),
            "strategies_overlapping_mark_80": [s.id for s in positives if overlap(s, marks) >= 0.8],
            "shirt_test_accuracy": {"marked": shirt_accuracy(model, marked / "test"),
                                    "unmarked": shirt_accuracy(model, clean / "test")}}
        print(kind, json.dumps(rows[kind], indent=1), flush=True)
    write_json(args.json, {"experiment": "planted shortcut", "data": "Fashion-MNIST 300/100/200 per class at 64 px",
                           "mark": f"{MARK}×{MARK} px yellow-black checker on every {CLASS} image, random position "
                                   f"({100 * MARK * MARK / SIDE ** 2:.2f} % of the image)", "init": SHIPPED,
                           "recipe": recipe, "results": rows, "run": run_info()})
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
