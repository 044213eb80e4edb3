"""Render the README's figure tables from the result files, so that no number in them is typed by hand.

Each table sits between ``<!-- figures: SOURCE -->`` and ``<!-- /figures -->`` in README.md; SOURCE names the file
(or folder) it is rendered from:

- ``benchmarks/results/heatmap.json``: dense heatmaps against the patch-by-patch reference;
- ``benchmarks/results/train.json``: training throughput and time per MAC (eager and compiled);
- ``benchmarks/results/memory.json``: peak training memory per image, plain and checkpointed;
- ``src/bagnet/weights``: the shipped models (their model cards' titles and measured metrics).

Each table is followed by a line naming the machine, date and command recorded in its file where the file has them.

Usage:  python scripts/readme_figures.py           # rewrite the tables in README.md
        python scripts/readme_figures.py --check   # exit 1 and show the difference if README.md is stale
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BLOCK = re.compile(r"(<!-- figures: (?P<source>[^ ]+) -->\n)(?P<body>.*?)(<!-- /figures -->)", re.S)


def _run_line(data: dict[str, Any]) -> str:
    run = data.get("run")
    if not run:
        return "*Recorded in the file: no machine, date or command (measured before the files recorded them).*\n"
    flags = ", ".join(run.get("cpu_flags", [])) or "no AVX"
    where = run.get("gpu") or f"{run['cpu']} ({flags}), {run['cores']} cores, {run['threads']} thread(s)"
    env = " ".join(f"{k}={v}" for k, v in run.get("env", {}).items())
    return (f"*{run['date']}, {where}, torch {run['torch']}: `{(env + ' ') if env else ''}"
            f"{run['command']}`*\n")


def train_table(path: Path) -> str:
    data = json.loads(path.read_text())
    rows = sorted(data["rows"], key=lambda r: (r["config"].split()[0], r.get("compile", False)))
    lines = ["| config | parameters | GMAC/img | normalised per 1000 MAC | images/s | s/step | first step (s) | "
             "time per MAC vs ResNet-18 |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        name = r["config"].replace(".yaml", "") + (f" (batch {r['batch_size']})" if r["batch_size"] != 64 else "")
        ratio = r.get("time_per_mac_vs_resnet18")
        lines.append(f"| {name} | {r['params'] / 1e6:.2f} M | {r['gmac']:.3f} | "
                     f"{1e3 * r.get('normalised_per_mac', float('nan')):.1f} | {r['images_per_s']:.1f} | "
                     f"{r['step_s']:.2f} | {r.get('first_step_s', float('nan')):.0f} | "
                     f"{'—' if ratio is None else f'{ratio:.2f}×'} |")
    return "\n".join(lines) + "\n\n" + _run_line(data)


def memory_table(path: Path) -> str:
    data = json.loads(path.read_text())
    cells: dict[tuple[str, int], dict[bool, dict]] = {}
    for r in data["rows"]:
        cells.setdefault((r["model"], r["size"]), {})[bool(r["checkpointing"])] = r
    lines = ["| model | size | plain: MiB/image, s/step | checkpointed: MiB/image, s/step | memory saved |",
             "| --- | --- | --- | --- | --- |"]
    last = None
    for (model, size), pair in cells.items():
        plain, ckpt = pair.get(False), pair.get(True)

        def cell(r: dict | None) -> str:
            return "—" if r is None else f"{r['peak_bytes_per_image'] / 2**20:.1f}, {r['step_s']:.2f}"

        saved = "—"
        if plain and ckpt:
            frac = 1 - ckpt["peak_bytes_per_image"] / plain["peak_bytes_per_image"]
            saved = f"{100 * frac:.0f} %" if frac > 0 else "none"
        lines.append(f"| {model if model != last else ''} | {size} px | {cell(plain)} | {cell(ckpt)} | {saved} |")
        last = model
    return "\n".join(lines) + "\n\n" + _run_line(data)


def heatmap_table(path: Path) -> str:
    data = json.loads(path.read_text())
    names = {"bagnet33": "BagNet-33", "bagnet17": "BagNet-17", "bagnet9": "BagNet-9"}
    lines = ["| model | dense | reference* | speed-up | GFLOP done | GFLOP/s | peak RSS (increase) | max rel. diff |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in data["rows"]:
        lines.append(f"| {names.get(r['model'], r['model'])} | {r['dense_median_s']:.2f} s | "
                     f"{r['reference_extrapolated_s']:.0f} s | {r['speedup']:.1f}× | {r['dense_gflop']:.0f} | "
                     f"{r['dense_gflops_per_s']:.0f} | {r['peak_rss_bytes'] / 2**30:.2f} GiB "
                     f"(+{r['increase_bytes'] / 2**30:.2f} GiB) | {r['max_rel_diff_vs_reference_on_200_patches']:.1e} |")
    mm = data.get("matmul_gflops_per_s", {})
    extra = (f"fp32 matmul 4096² in the same run: {mm['before']:.0f} / {mm['after']:.0f} GFLOP/s before / after.\n"
             if mm else "")
    machine = data.get("machine", {})
    if "run" not in data and machine:
        extra += (f"*Recorded in the file: {machine.get('cpu', '?')}, {machine.get('threads', '?')} threads, torch "
                  f"{machine.get('torch', '?')} (no date or command: measured before the files recorded them).*\n")
        return "\n".join(lines) + "\n\n" + extra
    return "\n".join(lines) + "\n\n" + extra + _run_line(data)


_NAMES = {"bagnet33": "BagNet-33", "bagnet17": "BagNet-17", "bagnet9": "BagNet-9", "resnet50": "ResNet-50"}


def forward_table(path: Path) -> str:
    data = json.loads(path.read_text())
    cell = {(r["model"], r["variant"], r["batch"]): r for r in data["rows"]}
    models = list(dict.fromkeys(r["model"] for r in data["rows"]))
    lines = ["| model | GMAC | eager b1 | eager b32 | ch.-last b32 | ch.-last+fused b1 | ch.-last+fused b32 | "
             "per-MAC vs ResNet-50 (b1 / b32, fused) |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for m in models:
        def ips(variant: str, batch: int) -> str:
            r = cell.get((m, variant, batch))
            return "—" if r is None else f"{r['images_per_s']:.1f}"

        def vs(batch: int) -> str:
            r = cell.get((m, "channels_last+fused", batch))
            return "—" if r is None or "ms_per_gmac_vs_resnet50" not in r else f"{r['ms_per_gmac_vs_resnet50']:.2f}×"

        gmac = next(r["gmacs_per_image"] for r in data["rows"] if r["model"] == m)
        ratio = "1" if m == "resnet50" else f"{vs(1)} / {vs(32)}"
        lines.append(f"| {_NAMES.get(m, m)} | {gmac:.2f} | {ips('eager', 1)} | {ips('eager', 32)} | "
                     f"{ips('channels_last', 32)} | {ips('channels_last+fused', 1)} | "
                     f"{ips('channels_last+fused', 32)} | {ratio} |")
    if "run" not in data:
        return "\n".join(lines) + (f"\n\n*Recorded in the file: torch {data.get('torch', '?')}, {data.get('threads', '?')} "
                                   f"threads, {data.get('size', '?')} px (no machine, date or command: measured "
                                   f"before the files recorded them).*\n")
    return "\n".join(lines) + "\n\n" + _run_line(data)


def interactions_table(path: Path) -> str:
    data = json.loads(path.read_text())
    lines = ["| model, image | forward passes | evidence map + crops | speed-up | max rel. diff of mean \\|effect\\| |",
             "| --- | --- | --- | --- | --- |"]
    for r in data["rows"]:
        lines.append(f"| {_NAMES.get(r['model'], r['model'])}, {data['size']} px | {r['forward_s_per_image']:.2f} s/img | "
                     f"{r['local_s_per_image']:.2f} s/img | {r['speedup']:.2f}× | {r['max_rel_diff_mean_effect']:.1e} |")
    tail = _run_line(data) if "run" in data else (
        f"*Recorded in the file: torch {data.get('torch', '?')}, {data.get('images', '?')} images (no machine, date or "
        f"command: measured before the files recorded them).*\n")
    return "\n".join(lines) + "\n\n" + tail


def shipped_table(folder: Path) -> str:
    import struct

    lines = ["| name | what | Imagenette val top-1 / top-5 | images | card |", "| --- | --- | --- | --- | --- |"]
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
        header = (folder / f"{stem}.safetensors").read_bytes()
        (length,) = struct.unpack("<Q", header[:8])
        meta = json.loads(header[8:8 + length]).get("__metadata__", {})
        size = json.loads(meta["preprocess"]).get("crop") if "preprocess" in meta else None
        label = f"`{name}`" + (" (= `default`)" if name == default else "")
        lines.append(f"| {label} | {title}{f', {size} px' if size else ''} | {100 * m['top1']:.2f} % / "
                     f"{100 * m['top5']:.2f} % | {m.get('images', '—')} | [card](src/bagnet/weights/{stem}.md) |")
    return "\n".join(lines) + "\n\n*From each model's `ARCH.DATA.json`, written by `scripts/ship_model.py` from " \
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
    return _wrap(text) + "\n"


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


def _wrap(text: str, width: int = 118) -> str:
    import textwrap

    return "\n\n".join(textwrap.fill(par, width=width, break_long_words=False, break_on_hyphens=False)
                         for par in text.split("\n\n"))


RENDERERS: dict[str, Callable[[Path], str]] = {
    "docs/results": results_brief,
    "benchmarks/results/train.json": train_table,
    "benchmarks/results/memory.json": memory_table,
    "benchmarks/results/heatmap.json": heatmap_table,
    "benchmarks/results/forward.json": forward_table,
    "benchmarks/results/interactions.json": interactions_table,
    "benchmarks/results/interactions-224.json": interactions_table,
    "src/bagnet/weights": shipped_table,
}


def render(text: str) -> str:
    """``text`` with every figures block re-rendered from its source."""
    def replace(match: re.Match) -> str:
        source = match.group("source")
        if source not in RENDERERS:
            raise SystemExit(f"README.md: no renderer for figures source {source!r}; known: {sorted(RENDERERS)}")
        return match.group(1) + "\n" + RENDERERS[source](ROOT / source) + "\n" + match.group(4)

    return BLOCK.sub(replace, text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when README.md is stale")
    args = parser.parse_args()
    text = README.read_text()
    new = render(text)
    if args.check:
        if new != text:
            sys.stdout.writelines(difflib.unified_diff(text.splitlines(True), new.splitlines(True), "README.md",
                                                       "rendered"))
            return 1
        return 0
    README.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
