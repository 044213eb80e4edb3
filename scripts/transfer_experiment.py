"""Two pinned experiments of fine-tuning on data that is not Imagenette (Fashion-MNIST, from Debian's
dataset-fashion-mnist or $BAGNET_DATA), written to docs/results/ and rendered into docs/finetuning.md.

- ``transfer``: at most 100 training images per class, 2 epochs, seeds 0, 1, 2: a BagNet-17 fine-tuned from the
  shipped ``bagnet17:imagenette`` against the same architecture from random weights, same recipe; validation top-1
  per epoch (the curves) and test top-1 at the end.
- ``sparsity``: the shipped BagNet-17 fine-tuned with the evidence L1 penalty at several λ, side by side: validation
  top-1 (where λ is chosen), then test top-1 and the top-5 %-cell share and Gini of the test images' evidence.

Every run is a normal ``bagnet train`` run folder under --runs (resumed when interrupted, skipped when finished).

Usage:  python scripts/transfer_experiment.py transfer [--runs runs/transfer] [--json docs/results/transfer.json]
        python scripts/transfer_experiment.py transfer   # lr (and fine-tuning option) chosen on val per start
        python scripts/transfer_experiment.py sparsity [--lambdas 0 0.1 0.2 0.4] [--epochs 6] [--json …]
            [--dataset fashion-mnist|fashion-mnist-canvas|fashion-mnist-photo|imagenette]
            [--canvas PX] [--init SPEC] [--lr LR] [--freeze-bn | --precise-bn N]
        python scripts/transfer_experiment.py figures      # docs/results/transfer.png and the sparsity charts
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from runinfo import run_info  # noqa: E402

import bagnet  # noqa: E402
from bagnet.data import fashion_mnist  # noqa: E402
from bagnet.data.catalog import IMAGENETTE_DIR, default_data_root, imagenette_classes  # noqa: E402
from bagnet.plumbing import write_json  # noqa: E402
from bagnet.train import TrainConfig, evaluate, train  # noqa: E402

SHIPPED = "bagnet17:imagenette"
CANVAS = 84  # px: translated Fashion-MNIST, the 28 px item a third of the frame's side
ARCH = dict(arch="bagnet", patch_size=17, width=24, layers=(1, 2, 2, 1))


#: skimage.data's photographs (shipped in its wheel) that --dataset fashion-mnist-photo crops its backgrounds from
PHOTOS = ("astronaut", "brick", "camera", "cell", "chelsea", "clock", "coffee", "coins", "grass", "gravel",
          "hubble_deep_field", "immunohistochemistry", "moon", "retina", "rocket")
PHOTO_MIN_SIDE = 300  # px: the shortest side among them (chelsea's), the largest --canvas they can frame


def _photos() -> list[Image.Image]:
    import skimage.data

    return [Image.fromarray(getattr(skimage.data, name)()).convert("L") for name in PHOTOS]


def _on_photo(item: Image.Image, photo: Image.Image, canvas: int, rng: np.random.Generator) -> Image.Image:
    """``item`` (grey, black surround) pasted at a random place on a random ``canvas`` px crop of ``photo`` (a
    square of 1–2 canvases' side, resized): only the item's own pixels (its closed mask of grey levels > 16)
    replace the photo's."""
    from PIL import ImageFilter

    side = int(rng.integers(canvas, min(2 * canvas, *photo.size) + 1))
    x, y = (int(rng.integers(0, photo.size[i] - side + 1)) for i in (0, 1))
    frame = photo.crop((x, y, x + side, y + side)).resize((canvas, canvas), Image.BILINEAR)
    item = item.convert("L")
    mask = item.point(lambda v: 255 if v > 16 else 0).filter(ImageFilter.MaxFilter(3)).filter(ImageFilter.MinFilter(3))
    frame.paste(item, tuple(int(v) for v in rng.integers(0, canvas - item.width + 1, 2)), mask)
    return frame


def export(folder: Path, per_class: dict[str, int], seed: int = 0, canvas: int = 0, photos: bool = False) -> Path:
    """Fashion-MNIST as PNG class folders: ``train``/``val`` drawn (disjoint, seeded) from its training set,
    ``test`` from its test set, ``per_class[split]`` images of each class. ``canvas`` > 28: each 28 px item pasted
    at a random (seeded) place on a black ``canvas`` × ``canvas`` image (translated Fashion-MNIST: the object a
    part of the frame, as a lesion is of a scan); with ``photos``, on a random crop of a random one of
    skimage.data's photographs (:data:`PHOTOS`) instead of black: a background that varies and says nothing of
    the class."""
    if (folder / "done").is_file():
        return folder
    rng = np.random.default_rng(seed)
    backgrounds = _photos() if photos else []
    sources = {"train": fashion_mnist("train"), "val": fashion_mnist("train"), "test": fashion_mnist("test")}
    used: set[int] = set()
    for split, n in per_class.items():
        ds = sources[split]
        labels = np.asarray(ds.targets)
        for c, name in enumerate(ds.categories):
            pool = [i for i in np.flatnonzero(labels == c) if split == "test" or i not in used]
            chosen = rng.choice(pool, size=n, replace=False)
            if split != "test":
                used.update(int(i) for i in chosen)
            out = folder / split / name.replace("/", "_").replace(" ", "_")
            out.mkdir(parents=True, exist_ok=True)
            for i in chosen:
                image = ds[int(i)][0]
                image = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
                if backgrounds:
                    image = _on_photo(image, backgrounds[int(rng.integers(len(backgrounds)))], canvas, rng)
                elif canvas > image.width:
                    frame = Image.new(image.mode, (canvas, canvas))
                    frame.paste(image, tuple(int(v) for v in rng.integers(0, canvas - image.width + 1, 2)))
                    image = frame
                image.save(out / f"{i}.png")
    (folder / "done").write_text("ok\n")
    return folder


def export_imagenette(folder: Path, per_class: dict[str, int], seed: int = 0) -> Path:
    """Imagenette's photos as class folders named like the shipped model's classes (copies): ``train`` drawn from its
    training split, ``val`` and ``test`` (disjoint, seeded) from its validation split, ``per_class[split]`` images of
    each class."""
    import shutil

    if (folder / "done").is_file():
        return folder
    source = default_data_root() / IMAGENETTE_DIR
    names = {c.wnid: c.name for c in imagenette_classes(source)}
    rng = np.random.default_rng(seed)
    used: set[Path] = set()
    for split, n in per_class.items():
        for classdir in sorted((source / ("train" if split == "train" else "val")).iterdir()):
            pool = [f for f in sorted(classdir.iterdir()) if f not in used]
            chosen = [pool[i] for i in rng.choice(len(pool), size=n, replace=False)]
            used.update(chosen)
            out = folder / split / names[classdir.name]
            out.mkdir(parents=True, exist_ok=True)
            for f in chosen:
                shutil.copyfile(f, out / f.name)
    (folder / "done").write_text("ok\n")
    return folder


def run(config: TrainConfig) -> dict:
    """Train (or resume, or reuse) one run; its per-epoch validation top-1 and its test-split evaluation."""
    out = Path(config.out)
    summary = out / "summary.json"
    if not (summary.is_file() and json.loads(summary.read_text()).get("completed")):
        train(config, resume=(out / "checkpoint.pt").is_file(), progress=False, log=lambda m: print(m, flush=True))
    history = json.loads(summary.read_text())["history"]
    tested = out / "test" / "evaluation.json"  # evaluated once, when the run is finished; reused by later sweeps
    if not tested.is_file():
        model = bagnet.load(out)
        data, categories, _ = bagnet.data.evaluation_dataset(str(Path(config.data) / "test"), model.preprocess)
        evaluate(model, data, categories, str(out), "test", batch_size=128, workers=0, progress=False).save(
            out / "test")
    result = json.loads(tested.read_text())
    return {"val_top1": [h["val_top1"] for h in history], "test_top1": result["top1"],
            "test_metrics": {k: result["metrics"][k] for k in ("balanced_accuracy", "macro_f1")},
            "test_sparsity": result["sparsity"], "seconds": sum(h["seconds"] for h in history)}


#: The fine-tuning options tried beside the plain recipe (chosen, with the learning rate, on validation).
VARIANTS = {"plain": {}, "freeze-bn": {"freeze_bn": True}, "lr-mult-0.1": {"pretrained_lr_mult": 0.1},
            "freeze-2": {"freeze_stages": 2}, "probe": {"freeze_stages": -1}}


def transfer(args: argparse.Namespace) -> dict:
    """Every start at every learning rate of ``--lrs`` (fine-tuning also with each of ``--variants``) and every seed;
    each start's setting chosen by its mean final validation top-1 (never by test), its test top-1 reported."""
    n = args.train_per_class
    data = export(args.runs / f"fashion-mnist-{n}", {"train": n, "val": 100, "test": 200})
    recipe = dict(data=str(data), image_size=args.image_size, epochs=2, batch_size=32, warmup_epochs=0.2, workers=0,
                  **ARCH)
    settings = {"from scratch": {f"lr {lr:g}": ("scratch", lr, {}) for lr in args.lrs}}
    settings["fine-tuned"] = {f"lr {lr:g}" + ("" if v == "plain" else f", {v}"): ("finetuned", lr,
                                                                               {"init": SHIPPED, **VARIANTS[v]})
                              for v in args.variants for lr in (args.lrs if v == "plain" else args.variant_lrs)}
    sweep: dict[str, dict[str, list[dict]]] = {kind: {} for kind in settings}
    for kind, named in settings.items():
        for label, (name, lr, extra) in named.items():
            suffix = ("" if lr == 2e-3 else f"-lr{lr:g}") + "".join(f"-{v}" for v in args.variants
                                                                     if v != "plain" and label.endswith(v))
            sweep[kind][label] = [run(TrainConfig(**recipe, **extra, lr=lr, seed=seed,
                                                  out=str(args.runs / f"{name}-{seed}{suffix}")))
                                  for seed in args.seeds]
    val = {kind: {label: statistics.mean(r["val_top1"][-1] for r in rs) for label, rs in by.items()}
           for kind, by in sweep.items()}
    chosen = {kind: max(v, key=v.get) for kind, v in val.items()}
    runs = {kind: sweep[kind][chosen[kind]] for kind in ("fine-tuned", "from scratch")}
    mean = {k: statistics.mean(r["test_top1"] for r in v) for k, v in runs.items()}
    return {"experiment": "transfer", "train_per_class": n,
            "data": f"Fashion-MNIST, {n} train / 100 val per class (from its training set), "
            f"200 test per class (its test set), 28 px grey images at {args.image_size} px", "init": SHIPPED,
            "seeds": args.seeds,
            "recipe": {k: v for k, v in recipe.items() if k != "data"}, "settings_tried": {k: list(v) for k, v in
                                                                                        settings.items()},
            "mean_val_top1_by_setting": val, "chosen": chosen, "runs": runs, "mean_test_top1": mean,
            "mean_test_top1_by_setting": {kind: {label: statistics.mean(r["test_top1"] for r in rs)
                                                 for label, rs in by.items()} for kind, by in sweep.items()},
            "gain_points": 100 * (mean["fine-tuned"] - mean["from scratch"]), "run": run_info()}


def sparsity(args: argparse.Namespace) -> dict:
    per_class = {"train": 300, "val": 100, "test": 200}
    extra: dict = {}
    size = "" if args.canvas == CANVAS else f"-{args.canvas}"  # the folder of the default canvas keeps its name
    fashion = "Fashion-MNIST, 300 train / 100 val per class (its training set), 200 test per class (its test set)"
    if args.dataset == "imagenette":
        data = export_imagenette(args.runs / "imagenette-300", per_class, seed=1)
        source = ("Imagenette, 300 train per class (its training split), 100 val / 200 test per class (disjoint, "
                  "from its validation split)")
    elif args.dataset == "fashion-mnist-canvas":
        data = export(args.runs / f"fashion-mnist-300-canvas{size}", per_class, seed=1, canvas=args.canvas)
        source = f"{fashion}, each item at a random place on a black {args.canvas} px canvas"
        # no random crop (at ≥ 35 % of the area one could cut the item out); BatchNorm statistics frozen: with
        # mostly black frames the batch statistics vary so much that the running ones fail (eval at chance)
        extra = {"min_scale": 1.0, "freeze_bn": True}
    elif args.dataset == "fashion-mnist-photo":
        data = export(args.runs / f"fashion-mnist-300-photo{size}", per_class, seed=1, canvas=args.canvas,
                      photos=True)
        source = (f"{fashion}, each item at a random place on a random {args.canvas} px crop of one of "
                  f"{len(PHOTOS)} photographs (skimage.data)")
        extra = {"min_scale": 1.0}
    else:
        data, source = export(args.runs / "fashion-mnist-300", per_class, seed=1), fashion
    if args.freeze_bn:
        extra["freeze_bn"] = True
    if args.precise_bn:  # instead of frozen statistics (the canvas data's default)
        extra.pop("freeze_bn", None)
        extra["precise_bn"] = args.precise_bn
    recipe = dict(data=str(data), image_size=args.image_size, epochs=args.epochs, batch_size=32, lr=args.lr,
                  warmup_epochs=0.2, workers=0, init=args.init, seed=0, **extra)
    rows = []
    for lam in args.lambdas:
        r = run(TrainConfig(**recipe, evidence_l1=lam, out=str(args.runs / f"lambda-{lam:g}")))
        rows.append({"lambda": lam, "val_top1": r["val_top1"][-1], "test_top1": r["test_top1"],
                     "test_top5_share": r["test_sparsity"]["top5_share"], "test_gini": r["test_sparsity"]["gini"]})
    base = rows[0]
    # λ chosen on val: the largest λ whose validation top-1 is within 2 points of λ = 0
    chosen = max((r for r in rows if r["val_top1"] >= base["val_top1"] - 0.02), key=lambda r: r["lambda"])
    return {"experiment": "sparsity", "data": f"{source}, at {args.image_size} px", "init": args.init,
            "recipe": {k: v for k, v in recipe.items() if k != "data"},
            "rows": rows, "chosen_lambda": chosen["lambda"],
            "chosen": {"share_ratio": chosen["test_top5_share"] / base["test_top5_share"],
                       "test_top1_cost_points": 100 * (base["test_top1"] - chosen["test_top1"])},
            "run": run_info()}


#: The sparsity sweeps drawn by ``figures`` (results file name without .json: the chart's title).
SPARSITY_FIGURES = {"sparsity": "Fashion-MNIST", "sparsity-photo-56-32epochs": "items on photographs, 32 epochs"}


def figures(results: Path) -> list[Path]:
    """transfer.png (validation top-1 per epoch, every seed, both starts) and, for each of :data:`SPARSITY_FIGURES`,
    a chart of validation and test top-1, top-5 % share and Gini against λ, drawn from the results files."""
    from bagnet.plumbing import figure_png, write_bytes
    from bagnet.viz import line_figure

    written = []
    if (results / "transfer.json").is_file():
        data = json.loads((results / "transfer.json").read_text())
        series = {f"{kind}, seed {seed}": (list(range(1, len(r["val_top1"]) + 1)), r["val_top1"])
                  for kind, runs in data["runs"].items() for seed, r in zip(data["seeds"], runs)}
        fig = line_figure(series, "epoch", "validation top-1",
                          title=f"Fashion-MNIST, {data.get('train_per_class', 100)} images per class")
        written.append(write_bytes(results / "transfer.png", figure_png(fig)))
    for name, title in SPARSITY_FIGURES.items():
        if not (results / f"{name}.json").is_file():
            continue
        rows = json.loads((results / f"{name}.json").read_text())["rows"]
        lams = [r["lambda"] for r in rows]
        fig = line_figure({key: (lams, [r[field] for r in rows]) for key, field in (
            ("validation top-1", "val_top1"), ("test top-1", "test_top1"),
            ("test top-5 % share of |evidence|", "test_top5_share"), ("test Gini of |evidence|", "test_gini"))},
            "λ (evidence L1 weight)", "", title=f"Sparse evidence against accuracy ({title})")
        written.append(write_bytes(results / f"{name}.png", figure_png(fig)))
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment", choices=["transfer", "sparsity", "figures"])
    parser.add_argument("--runs", type=Path, default=None, help="folder of the run folders (default runs/EXPERIMENT)")
    parser.add_argument("--json", type=Path, default=None, help="results file (default docs/results/EXPERIMENT.json)")
    parser.add_argument("--image-size", type=int, default=64,
                        help="training and evaluation size (default 64: Fashion-MNIST's 28 px enlarged 2.3×; 0: the "
                             "shipped model's own, 128)")
    parser.add_argument("--train-per-class", type=int, default=100,
                        help="transfer: training images per class (at most 100, the issue's setting; fewer shows how "
                             "the gain grows as data shrink)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--lrs", type=float, nargs="+", default=[5e-4, 1e-3, 2e-3, 5e-3],
                        help="transfer: learning rates tried for each start, chosen on validation")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS),
                        help="transfer: fine-tuning options tried (with --variant-lrs), chosen on validation")
    parser.add_argument("--variant-lrs", type=float, nargs="+", default=[1e-3, 2e-3])
    parser.add_argument("--lambdas", type=float, nargs="+", default=[0.0, 0.1, 0.2, 0.4])
    parser.add_argument("--epochs", type=int, default=6, help="sparsity: epochs of every run (default 6)")
    parser.add_argument("--init", default=SHIPPED,
                        help=f"sparsity: the model every run starts from (default {SHIPPED}; a run folder of this "
                             "experiment's λ = 0 sparsifies a model already fitted to the task)")
    parser.add_argument("--dataset", choices=["fashion-mnist", "fashion-mnist-canvas", "fashion-mnist-photo",
                                              "imagenette"],
                        default="fashion-mnist",
                        help="sparsity: the data (canvas: each item at a random place on a black 84 px canvas; "
                             "photo: on a random crop of a photograph; "
                             "Imagenette: the shipped model's own task)")
    parser.add_argument("--canvas", type=int, default=CANVAS,
                        help=f"sparsity: side in px of the frame of the canvas and photo data (default {CANVAS}; the "
                             "item is 28 px)")
    parser.add_argument("--freeze-bn", action="store_true",
                        help="sparsity: BatchNorm statistics frozen at the initial model's in every run")
    parser.add_argument("--precise-bn", type=int, default=0, metavar="N",
                        help="sparsity: BatchNorm statistics re-estimated over N training batches after every epoch "
                             "(instead of frozen ones)")
    parser.add_argument("--lr", type=float, default=2e-3, help="sparsity: learning rate of every run (default 0.002)")
    args = parser.parse_args()
    if args.experiment == "figures":
        for path in figures(ROOT / "docs" / "results"):
            print(f"wrote {path}")
        return
    args.runs = args.runs or Path("runs") / args.experiment
    args.image_size = args.image_size or bagnet.load(SHIPPED).preprocess.crop
    if args.freeze_bn and args.precise_bn:
        parser.error("--freeze-bn keeps the BatchNorm statistics that --precise-bn re-estimates; use one of them")
    if not 28 <= args.canvas <= PHOTO_MIN_SIDE:
        parser.error(f"--canvas must lie in [28, {PHOTO_MIN_SIDE}] px (the item's side; the smallest photograph's), "
                     f"got {args.canvas}")
    if not 1 <= args.train_per_class <= 100:
        parser.error(f"--train-per-class must lie in [1, 100] (the issue's setting allows at most 100), got "
                     f"{args.train_per_class}")
    out = args.json or ROOT / "docs" / "results" / f"{args.experiment}.json"
    result = transfer(args) if args.experiment == "transfer" else sparsity(args)
    write_json(out, result)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
