"""The README's results — the shipped models, the experiments, robustness — rendered from the files that hold them:
``src/bagnet/weights/*.json`` and the model cards beside them, ``docs/results/**.json``.

Each function takes its source (a file or a folder) and returns Markdown; none holds a measured number of its own.
Used by scripts/readme_figures.py.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any

from figures_benchmarks import table, wrap

ROOT = Path(__file__).resolve().parents[1]
PATCH_SIZES = {"bagnet9": 9, "bagnet17": 17, "bagnet33": 33}


def input_side(weights: Path) -> int | None:
    """The crop size in a shipped safetensors file's preprocessing metadata (its header only, no tensor read)."""
    with weights.open("rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        meta = json.loads(f.read(length)).get("__metadata__", {})
    return json.loads(meta["preprocess"]).get("crop") if "preprocess" in meta else None


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
