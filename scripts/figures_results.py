"""The README's results — the shipped models, the experiments, robustness — rendered from the files that hold them:
``src/bagnet/weights/*.json`` and the model cards beside them, ``docs/results/**.json``.

Each function takes its source (a file or a folder) and returns Markdown; none holds a measured number of its own.
Used by scripts/readme_figures.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from figures_benchmarks import table, wrap

ROOT = Path(__file__).resolve().parents[1]
PATCH_SIZES = {"bagnet9": 9, "bagnet17": 17, "bagnet33": 33}


def input_side(weights: Path) -> int | None:
    """The crop size in a shipped safetensors file's preprocessing metadata (its header only, no tensor read)."""
    from bagnet.models.weights import read_header

    prep = read_header(weights).get("preprocess")
    return prep.get("crop") if isinstance(prep, dict) else None


def shipped_table(folder: Path) -> str:
    rows = []
    default = (folder / "DEFAULT").read_text().strip() if (folder / "DEFAULT").is_file() else None
    for js in sorted(folder.glob("*.json"), key=lambda p: (not p.name.startswith("bagnet"), p.name)):
        stem = js.name[: -len(".json")]
        name = stem.replace(".", ":", 1)
        metrics = json.loads(js.read_text())["metrics"]
        key = next(iter(metrics))
        m = metrics[key]
        card = folder / f"{stem}.md"
        title = stem
        if card.is_file():  # "- Architecture: `bagnet`, patch size 17, …; 0.95 M parameters; 10 classes: …"
            arch = next((line for line in card.read_text().splitlines() if line.startswith("- Architecture:")), "")
            title = "; ".join(arch[len("- Architecture:"):].strip().split("; ")[:2]) or stem
        size = input_side(folder / f"{stem}.safetensors")
        label = f"`{name}`" + (" (= `default`)" if name == default else "")
        rows.append([label, f"{title}{f', {size} px' if size else ''}",
                     f"{100 * m['top1']:.2f} % / {100 * m['top5']:.2f} %", str(m.get("images", "—")),
                     f"[card](src/bagnet/weights/{stem}.md)"])
    header = ["name", "what", "Imagenette val top-1 / top-5", "images", "card"]
    return table(header, rows) + "\n\n*From each model's `ARCH.DATA.json`, written by `scripts/ship_model.py` from " \
                              "`bagnet evaluate --model NAME --data imagenette` (the full validation split).*\n"


def _pct(v: float) -> str:
    return f"{100 * v:.1f}"


def _label(name: str) -> str:
    base = name.split(":")[0]
    return {"bagnet9": "BagNet-9", "bagnet17": "BagNet-17", "bagnet33": "BagNet-33", "resnet18": "ResNet-18",
            "vgg11": "VGG-11", "vit": "the ViT"}.get(base, name)


def results_brief(folder: Path) -> str:
    """The README's paragraph of Imagenette results, written from docs/results/experiments (and docs/results/vit
    when the ViT's runs are there)."""
    load = lambda rel: json.loads((folder / rel).read_text())  # noqa: E731
    sc, it, sim = load("experiments/scrambling/scrambling.json"), load("experiments/interactions/interactions.json"), \
        load("experiments/similarity/similarity.json")
    mk, sm = load("experiments/masking/masking.json"), load("experiments/summary/summary.json")
    dg, df = load("experiments/diagnostic-imagenette/diagnostic.json"), \
        load("experiments/diagnostic-fashion-mnist/diagnostic.json")
    g4 = sc["grids"].index(4)
    r18, vgg, b33 = "resnet18:imagenette", "vgg11:imagenette", "bagnet33:imagenette"
    cnns = [m for m in it["models"] if not m.startswith("bagnet")]
    far = [v for m in cnns for g, v in zip(it["gaps"], it["normalised_interaction"][m]) if g >= 32]
    kappa = {m: sim["error_consistency"][sim["models"].index(m)][sim["models"].index(b33)] for m in (r18, vgg)}
    last = -1
    cost = {m: mk["accuracy"][m]["random"][last] - mk["accuracy"][m][b33][last] for m in (r18, vgg)}
    order = sorted(sm["score"], key=lambda m: -sm["score"][m])
    scores = ", ".join(f"{_label(m)} {sm['score'][m]:.2f}" for m in order if m != sm["reference"])
    text = (
        f"On Imagenette with the five shipped models ([docs/experiments.md](docs/experiments.md), next to the "
        f"paper's findings; scrambling and the diagnostic's accuracies are on a seeded sample of {sc['images']} "
        f"validation images, so they differ from the full-split accuracies in the model table): under 4×4 scrambling "
        f"({sc['tile_sizes'][g4]}-px tiles) ResNet-18 falls from {_pct(sc['top1'][r18][0])} to "
        f"{_pct(sc['top1'][r18][g4])} % and VGG-11 from {_pct(sc['top1'][vgg][0])} to {_pct(sc['top1'][vgg][g4])} %; "
        f"every BagNet's interaction is exactly zero beyond its patch size, the CNNs' is "
        f"{100 * min(far):.0f}–{100 * max(far):.0f} % of the single effects beyond 32 px; error consistency with "
        f"BagNet-33: VGG-11 κ {kappa[vgg]:.2f}, ResNet-18 {kappa[r18]:.2f}; BagNet-33's {mk['ks'][last]} most "
        f"informative {mk['block']}-px blocks, masked, cost VGG-11 {_pct(cost[vgg])} and ResNet-18 {_pct(cost[r18])} "
        f"points more than random masking. Likeness score (reference {_label(sm['reference'])}): {scores}. "
        f"Dataset diagnostic: BagNets of q = {', '.join(map(str, dg['patch_sizes']))} reach "
        f"{', '.join(_pct(v) for v in dg['bagnet_top1'])} % on Imagenette against ResNet-18's {_pct(dg['cnn_top1'])} "
        f"%, and {', '.join(_pct(v) for v in df['bagnet_top1'])} % on Fashion-MNIST against {_pct(df['cnn_top1'])} % "
        f"(short runs), where 4×4 scrambling sends every model to "
        f"{100 * min(df['scrambled_top1'].values()):.0f}–{100 * max(df['scrambled_top1'].values()):.0f} %.")
    vit = folder / "vit"
    if (vit / "scrambling" / "scrambling.json").is_file():
        text += "\n\n" + vit_brief(folder)
    return wrap(text) + "\n"


def vit_brief(folder: Path) -> str:
    """The ViT's results, from docs/results/vit."""
    load = lambda rel: json.loads((folder / rel).read_text())  # noqa: E731
    weights = json.loads((ROOT / "src" / "bagnet" / "weights" / "vit.imagenette.json").read_text())["metrics"]
    sc, off = load("vit/scrambling/scrambling.json"), load("vit/scrambling-offset8/scrambling.json")
    it, sm = load("vit/interactions/interactions.json"), load("vit/summary/summary.json")
    v = "vit:imagenette"
    tiles = {t: a for t, a in zip(sc["tile_sizes"], sc["top1"][v])}
    otiles = {t: a for t, a in zip(off["tile_sizes"], off["top1"][v])}
    gaps = dict(zip(it["gaps"], it["normalised_interaction"][v]))
    r18 = dict(zip(it["gaps"], it["normalised_interaction"]["resnet18:imagenette"]))
    far = max(it["gaps"])
    return (
        f"A ViT beside them (`vit:imagenette`: 16-px tokens, global attention in every layer, "
        f"{100 * weights['imagenette/val']['top1']:.2f} % on the full validation split): with whole 16-px tokens shuffled "
        f"it keeps {_pct(tiles[16])} % (from {_pct(tiles[max(tiles)])} %), with the same tiles shifted by half a token "
        f"{_pct(otiles[16])} %, with 32-px tiles {_pct(tiles[32])} % (shifted {_pct(otiles[32])} %); its normalised "
        f"interaction at a {far}-px gap is {100 * gaps[far]:.1f} % of the single effects (ResNet-18 "
        f"{100 * r18[far]:.1f} %); likeness score {sm['score'][v]:.2f}.")


def card_curve(card: Path) -> list[tuple[int, float]]:
    """(epoch, val top-1) rows of a model card's learning-curve table (written by scripts/ship_model.py)."""
    rows = []
    for line in card.read_text().splitlines():
        m = re.match(r"\|\s*(\d+)\s*\|\s*[\d.]+\s*\|\s*[\d.]+\s*\|\s*([\d.]+)\s*\|", line)
        if m:
            rows.append((int(m.group(1)), float(m.group(2))))
    return rows


def shipped_notes(folder: Path) -> str:
    """The paragraph under the shipped-model table: accuracy by patch size, the CNNs, the ViT's curve."""
    top1 = {js.name.split(".")[0]: json.loads(js.read_text())["metrics"]["imagenette/val"]["top1"]
            for js in folder.glob("*.imagenette.json")}
    bagnets = sorted((q, name) for name, q in PATCH_SIZES.items() if name in top1)
    accs = [top1[name] for _, name in bagnets]
    trend = ("accuracy grows with it" if accs == sorted(accs) else "accuracy by patch size")
    text = (f"`bash scripts/train_shipped.sh` trains (or resumes) VGG-11, BagNet-17 and BagNet-9 in turn; the BagNets "
            f"share one recipe and size and differ only in patch size, and {trend} "
            f"({' → '.join(f'{100 * a:.1f}' for a in accs)} % for q = {', '.join(str(q) for q, _ in bagnets)}).")
    cnn = []
    for name, label in (("resnet18", "ResNet-18"), ("vgg11", "VGG-11")):
        card = folder / f"{name}.imagenette.md"
        if name in top1 and card.is_file():
            cnn.append(f"{label} {100 * top1[name]:.2f} % ({len(card_curve(card))} epochs)")
    if cnn:
        text += (" The CNNs, same recipe: " + ", ".join(cnn) + "; each card gives the run's wall time and the "
                 "machine it shared.")
    vit_card = folder / "vit.imagenette.md"
    if "vit" in top1 and vit_card.is_file():
        curve = card_curve(vit_card)
        n = len(curve)
        picks = sorted({max(1, round(n * f)) for f in (0.25, 0.5, 0.75)} | {n})
        points = ", ".join(f"{100 * curve[e - 1][1]:.1f} % at epoch {e}" for e in picks)
        text += (f"\n\n`vit:imagenette` is a Vision Transformer (timm's `VisionTransformer`, global attention in every "
                 f"layer) trained from scratch with the same data and a ViT's regularisation "
                 f"(`configs/imagenette/vit.yaml`: TrivialAugment, random erasing, MixUp/CutMix, stochastic depth): "
                 f"{100 * top1['vit']:.2f} % after {n} epochs, short of the 75 % it was asked for (validation top-1 "
                 f"during training, from its card: {points}); it is the model that *can* use the whole image, set "
                 f"beside the BagNets in the experiments "
                 f"([docs/experiments.md](docs/experiments.md#7-a-vit-beside-the-bagnets)).")
    return wrap(text) + "\n"


def robust_brief(folder: Path) -> str:
    """The Certified robustness section's paragraph, from docs/results/robust/*/robustness.json."""
    def load(name: str) -> dict[str, Any]:
        return json.loads((folder / name / "robustness.json").read_text())

    def row(data: dict[str, Any], sticker: int) -> dict[str, Any]:
        return next(r for r in data["rows"] if r["sticker"] == sticker and r["method"] == "masking")

    b17, b33, attack = load("bagnet17"), load("bagnet33"), load("attack")
    sticker = 18
    size = input_side(ROOT / "src" / "bagnet" / "weights" / f"{b17['model']}.imagenette.safetensors")
    a = row(attack, sticker)
    return wrap(
        f"On Imagenette (full validation split, {b17['images']} images, robust masking; "
        f"[docs/robustness.md](docs/robustness.md)): certified top-1 against an {sticker}-px sticker "
        f"({100 * sticker ** 2 / size ** 2:.0f} % of the image) is {100 * row(b17, sticker)['certified']:.1f} % for "
        f"BagNet-17 and {100 * row(b33, sticker)['certified']:.1f} % for BagNet-33; on {attack['images']} images the "
        f"sticker attack takes the undefended BagNet-17 from {100 * attack['clean_undefended']:.0f} % to "
        f"{100 * attack['attacked_undefended'][str(sticker)]:.0f} % and the defended one to "
        f"{100 * a['attacked']:.0f} %, and flips {a['certified_but_flipped'] or 'no'} certified "
        f"image{'s' if a['certified_but_flipped'] != 1 else ''}.") + "\n"


def command_label(command: str) -> str:
    """`bagnet explain`, `bagnet experiment scrambling`, `torchrun`: the words that name a traced command."""
    words = []
    for word in command.split():
        if word.startswith("-") or "/" in word or "." in word or "=" in word or len(words) == 3:
            break
        words.append(word)
    return " ".join(words) or command.split()[0]


def example_times(path: Path, block: str) -> str:
    """The time of each command of the shell example ``block`` as printed, from scripts/time_examples.py's file."""
    data = json.loads(path.read_text())
    entry = next((e for e in data["examples"] if e["source"] == block), None)
    if entry is None:
        raise SystemExit(f"README.md: the shell example before this time was not timed as printed (edited since?): "
                         f"{block.strip().splitlines()[0][:80]!r}; run `python scripts/time_examples.py`")
    from figures_benchmarks import machine_words

    shown = [c for c in entry["commands"] if c["seconds"] >= 0.5]
    parts = ", ".join(f"`{command_label(c['command'])}` {c['seconds']:.0f} s" for c in shown) or \
        f"{entry['seconds']:.1f} s in all"
    return wrap(f"*Time as printed, on {data['data']} — {machine_words(data)}, {data['run']['date']}: "
                f"{parts}.*") + "\n"


METHOD_NAMES = {"evidence": "evidence (exact)", "saliency": "saliency", "integrated_gradients": "integrated gradients",
                "deeplift": "DeepLIFT", "lrp_epsilon": "ε-LRP", "gradcam": "Grad-CAM", "random": "random"}


def attribution_table(path: Path) -> str:
    """docs/attribution.md's table from ``bagnet attribution``'s comparison.csv: AUCs per model and method, the best
    of each model in bold, and the completeness gap against the expected sum where a method has one."""
    import csv

    rows = [r for r in csv.DictReader(path.open()) if r["available"] == "True"]
    best: dict[tuple[str, str], float] = {}
    for r in rows:
        if r["method"] == "random":
            continue
        for key, better in (("deletion_auc", min), ("insertion_auc", max)):
            k = (r["model"], key)
            best[k] = better(best.get(k, float(r[key])), float(r[key]))

    def cell(r: dict, key: str) -> str:
        text = f"{float(r[key]):.3f}"
        return f"**{text}**" if r["method"] != "random" and float(r[key]) == best[(r["model"], key)] else text

    def gap(r: dict) -> str:
        if not r["completeness_gap"]:
            return ""
        g, scale = abs(float(r["completeness_gap"])), float(r["completeness_scale"])
        text = f"{g:.0e}".replace("e-0", "e-") if g < 1e-3 else f"{g:.3f}" if g < 1 else f"{g:.2f}"
        return f"{text} / {scale:.2f}"

    body = [[_label(r["model"]), METHOD_NAMES.get(r["method"], r["method"]), cell(r, "deletion_auc"),
             cell(r, "insertion_auc"), gap(r)] for r in rows]
    return table(["model", "method", "deletion AUC ↓", "insertion AUC ↑", "\\|completeness gap\\| / \\|expected\\|"],
                 body)


def _shipped_side(model: str) -> int:
    """The input side of a shipped model (``bagnet17``), from its weights' preprocessing metadata."""
    side = input_side(ROOT / "src" / "bagnet" / "weights" / f"{model}.imagenette.safetensors")
    if side is None:
        raise SystemExit(f"src/bagnet/weights/{model}.imagenette.safetensors records no input size")
    return side


def certify_table(folder: Path) -> str:
    """docs/robustness.md's certificate table from one ``bagnet certify`` result folder (robust masking rows)."""
    data = json.loads((folder / "robustness.json").read_text())
    side = _shipped_side(data["model"])
    cells = (side - PATCH_SIZES[data["model"]]) // 8 + 1
    rows = [[f"{r['sticker']} ({100 * r['sticker'] ** 2 / side ** 2:.1f} %)", f"{r['window_cells']}×{r['window_cells']}",
             f"{100 * r['clean']:.1f} %", f"{100 * r['certified']:.1f} %"]
            for r in data["rows"] if r["method"] == "masking"]
    return table([f"sticker (px, share of the {side}² image)", f"window (cells of {cells}×{cells})", "clean (masked)",
                  "certified"], rows)


def attack_table(folder: Path) -> str:
    """docs/robustness.md's attack table: undefended and robust-masking accuracies with and without the attack."""
    data = json.loads((folder / "robustness.json").read_text())
    side = _shipped_side(data["model"])
    rows = []
    for r in (r for r in data["rows"] if r["method"] == "masking"):
        rows.append([f"{r['sticker']} px ({100 * r['sticker'] ** 2 / side ** 2:.1f} %)",
                     f"{100 * data['clean_undefended_attacked_subset']:.0f} %",
                     f"{100 * data['attacked_undefended'][str(r['sticker'])]:.0f} %",
                     f"{100 * r['clean_attacked_subset']:.0f} %", f"{100 * r['certified_attacked_subset']:.0f} %",
                     f"{100 * r['attacked']:.0f} %", str(r["certified_but_flipped"])])
    return table(["sticker", "undefended clean", "undefended attacked", "masking clean", "masking certified",
                  "masking attacked", "certified images the attack flipped"], rows)


#: docs/imagenet.md's steps: (name, images decoded, forward passes per model, what the passes are); ``None`` models:
#: every model of the run; a BagNet's interaction effects come from its evidence map (one pass and small crops per
#: image, counted as two passes).
IMAGENET_STEPS = (
    ("evaluate", 50_000, 50_000, "50,000 images, 8 loader processes"),
    ("scrambling", 5_000, 25_000, "5 grids × 5,000 images"),
    ("interactions", 200, 16_800, "200 images × 7 gaps × 4 pairs × 3 maskings (BagNets: 2 per image)"),
    ("similarity", 10_000, 10_000, "10,000 images"),
    ("masking", 1_000, 8_000, "1,000 images × 8 k, plus one BagNet-33 heatmap per image"),
    ("attribution", 50, 50 * 332, "50 images × (IG 32 steps + 4 other methods, forward and backward ≈ 3 passes "
                                  "each, + 7 maps × 2 curves × 16 steps) for 4 models"),
)
IMAGENET_MODELS = ("bagnet9", "bagnet17", "bagnet33", "vgg16", "resnet50", "resnet152", "densenet169", "vit_b_16")
ATTRIBUTION_MODELS = ("bagnet33", "vgg16", "resnet50", "densenet169")
EVALUATE_LOADERS = 8


def imagenet_estimate(path: Path) -> str:
    """docs/imagenet.md's run-time estimate: the measured inputs (imagenet-estimate.json and the GPU file it names)
    and, per step, decoding (images ÷ decode rate) plus compute (passes ÷ each model's GPU rate)."""
    data = json.loads(path.read_text())
    gpu = json.loads((ROOT / data["gpu_source"]).read_text())
    costs, decode = data["gmac_224"], data["decode_images_per_s_per_core"]
    inf = gpu["inference"]
    cnn_tmac = inf["resnet50_img_s"]["fp32"] * gpu["training"]["resnet50_gmac"] / 1e3  # TMAC/s, fp32

    def rate(model: str) -> float:  # images per second on the GPU, fp32, the device's own batching policy
        if model.startswith("bagnet"):
            return inf["bagnet33_unchunked_img_s"]["fp32"] * costs["bagnet33"] / costs[model]
        return cnn_tmac * 1e3 / costs[model]

    rows, total = [], 0.0
    for name, images, passes, what in IMAGENET_STEPS:
        models = ATTRIBUTION_MODELS if name == "attribution" else IMAGENET_MODELS
        if name == "evaluate":  # loaders decode while the GPU computes: the slower of the two, per model
            seconds = sum(max(images / (EVALUATE_LOADERS * decode), passes / rate(m)) for m in models)
        else:
            seconds = images / decode + sum((2 * images if name == "interactions" and m.startswith("bagnet")
                                             else passes) / rate(m) for m in models)
            if name == "masking":
                seconds += images * gpu["heatmap"]["strict_s"]
        total += seconds
        rows.append([name, what, f"~{seconds / 60:.0f} min" if seconds >= 90 else f"~{seconds:.0f} s"])
    rows.append(["all", "", f"**about {total / 60:.0f} min**"])
    costs_text = ", ".join(f"`{m}` {costs[m]:.2f}" for m in IMAGENET_MODELS)
    intro = wrap(
        f"How it is estimated: the forward cost per image at 224 px, counted with `torch.utils.flop_counter` on this "
        f"repository's models ({costs_text} GMAC); the GPU's fp32 rates from `{data['gpu_source']}` "
        f"({gpu['run']['gpu']}: ResNet-50 {inf['resnet50_img_s']['fp32']:.0f} img/s = {cnn_tmac:.1f} TMAC/s for every "
        f"CNN, BagNet-33 {inf['bagnet33_unchunked_img_s']['fp32']:.0f} img/s with the GPU's batching policy, scaled by "
        f"cost for the other BagNets); decoding one 500×375 JPEG (decode, resize 256, crop, normalise) measured at "
        f"{decode:.0f} images/s on one core of this machine, so `evaluate` ({EVALUATE_LOADERS} loader processes) "
        f"decodes at {EVALUATE_LOADERS * decode:.0f} img/s and the experiments, which decode in the main process, at "
        f"{decode:.0f} img/s. Inputs measured by `python scripts/imagenet_estimate.py` ({data['run']['date']}).")
    return intro + "\n\n" + table(["step", "forward passes per model", "estimate"], rows)


def shortcut_strategies(path: Path) -> str:
    """docs/audit.md: the marked model's positive Shirt strategies, what each is worth alone and with the stronger
    ones, from docs/results/shortcut.json."""
    data = json.loads(path.read_text())
    rows = [f"| #{s['id']} | {100 * s['share']:.1f} % | {100 * s['mark_overlap']:.0f} % | "
            f"{100 * s['class_accuracy_without']:.1f} % | {100 * s['class_accuracy_without_union']:.1f} % |"
            for s in data["results"]["marked"]["class_strategies"]]
    header = ["| Shirt strategy (by share) | share | examples on the mark | Shirt accuracy without it | "
              "… without it and the stronger ones |", "| --- | --- | --- | --- | --- |"]
    return "\n".join(header + rows)


def transfer_sweep(path: Path) -> str:
    """docs/finetuning.md: every setting the transfer experiment tried, mean validation (where it chose) and test
    top-1 over its seeds, from docs/results/transfer.json."""
    data = json.loads(path.read_text())
    rows = []
    for kind, by in data["mean_val_top1_by_setting"].items():
        for label, val in by.items():
            test = data["mean_test_top1_by_setting"][kind][label]
            mark = " (chosen)" if data["chosen"][kind] == label else ""
            rows.append(f"| {kind} | {label}{mark} | {100 * val:.1f} % | {100 * test:.1f} % |")
    return "\n".join(["| start | setting | mean val top-1 | mean test top-1 |", "| --- | --- | --- | --- |"] + rows)


def transfer_summary(path: Path) -> str:
    """docs/finetuning.md: the chosen settings' mean test top-1 of both starts and the gain, one sentence."""
    data = json.loads(path.read_text())
    mean, chosen = data["mean_test_top1"], data["chosen"]
    seeds = [f"{100 * (a['test_top1'] - b['test_top1']):+.1f}" for a, b in zip(data["runs"]["fine-tuned"],
                                                                              data["runs"]["from scratch"])]
    return (f"With {data.get('train_per_class', 100)} training images per class: fine-tuned ({chosen['fine-tuned']}) "
            f"{100 * mean['fine-tuned']:.1f} %, from scratch ({chosen['from scratch']}) "
            f"{100 * mean['from scratch']:.1f} % mean test top-1 — a gain of {data['gain_points']:.1f} points "
            f"(seed by seed: {', '.join(seeds)} points).")


def sparsity_table(path: Path) -> str:
    """docs/finetuning.md: the sparsity sweep of one results file, λ by λ, and the choice made on validation."""
    data = json.loads(path.read_text())
    rows, base = data["rows"], data["rows"][0]
    lines = ["| λ | val top-1 | test top-1 | test top-5 % share (× λ = 0) | test Gini |",
             "| --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['lambda']:g} | {100 * r['val_top1']:.1f} % | {100 * r['test_top1']:.1f} % | "
                     f"{r['test_top5_share']:.3f} (×{r['test_top5_share'] / base['test_top5_share']:.2f}) | "
                     f"{r['test_gini']:.3f} |")
    c = data["chosen"]
    return ("\n".join(lines) + f"\n\nChosen on validation: λ = {data['chosen_lambda']:g} (the largest whose "
            f"validation top-1 is at most 2 points below λ = 0's); on the test split its top-5 % share is "
            f"{c['share_ratio']:.2f} times that of λ = 0, at a cost of {c['test_top1_cost_points']:.1f} points of "
            f"top-1.")

