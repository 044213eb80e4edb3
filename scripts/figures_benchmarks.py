"""The README's benchmark figures — tables and the sentences around them — rendered from benchmarks/results/*.json.

Each function takes the result file and returns Markdown; none holds a measured number of its own. Used by
scripts/readme_figures.py.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

NAMES = {"bagnet33": "BagNet-33", "bagnet17": "BagNet-17", "bagnet9": "BagNet-9", "resnet50": "ResNet-50",
         "resnet18": "ResNet-18", "vgg11": "VGG-11", "vit": "ViT"}


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def run_line(data: dict[str, Any]) -> str:
    """The italic line under a table: machine, date, torch and command as the file records them."""
    run = data.get("run")
    if not run:
        return "*Recorded in the file: no machine, date or command (measured before the files recorded them).*\n"
    if run.get("gpu"):
        where = f"{run['gpu']}" + (f", CUDA {run['cuda']}" if run.get("cuda") else "")
    else:
        flags = ", ".join(run.get("cpu_flags", [])) or "no AVX"
        where = f"{run['cpu']} ({flags}), {run['cores']} cores, {run['threads']} thread(s)"
    return f"*{run['date']}, {where}, torch {run['torch']}: `{_command(data)}`*\n"


def machine_words(data: dict[str, Any]) -> str:
    """'a 2-core AMD EPYC with AVX-512 BF16, 1 thread' from a file's run record."""
    run = data.get("run") or {}
    if run.get("gpu"):
        return run["gpu"]
    if not run:
        return "a machine the file does not name"
    flags = run.get("cpu_flags", [])
    isa = "AVX-512 BF16" if "avx512_bf16" in flags else "AVX-512" if "avx512f" in flags else \
        "AVX2 only" if "avx2" in flags else "no AVX"
    return f"a {run['cores']}-core {run['cpu']} with {isa}, {run['threads']} thread{'s' if run['threads'] > 1 else ''}"


def span(values: list[float], fmt: str = "{:.1f}", unit: str = "") -> str:
    """'a–b' (or 'a' when they round alike) with ``unit`` after it."""
    lo, hi = fmt.format(min(values)), fmt.format(max(values))
    return (lo if lo == hi else f"{lo}–{hi}") + unit


def table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table (no trailing newline)."""
    return "\n".join(["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
                     + ["| " + " | ".join(row) + " |" for row in rows])


def signed(value: float) -> str:
    """'+38' or '−6' (a typographic minus)."""
    return f"{value:+.0f}".replace("-", "−")


# --- heatmaps ---------------------------------------------------------------------------------------------------

def heatmap_table(path: Path) -> str:
    data = load(path)
    rows = [[NAMES.get(r["model"], r["model"]), f"{r['dense_median_s']:.2f} s",
             f"{r['reference_extrapolated_s']:.0f} s",
             f"{r['speedup']:.1f}×", f"{r['dense_gflop']:.0f}", f"{r['dense_gflops_per_s']:.0f}",
             f"{r['peak_rss_bytes'] / 2**30:.2f} GiB (+{r['increase_bytes'] / 2**30:.2f} GiB)",
             f"{r['max_rel_diff_vs_reference_on_200_patches']:.1e}"] for r in data["rows"]]
    mm = data.get("matmul_gflops_per_s", {})
    extra = (f"fp32 matmul 4096² in the same run: {mm['before']:.0f} / {mm['after']:.0f} GFLOP/s before / after.\n"
             if mm else "")
    header = ["model", "dense", "reference*", "speed-up", "GFLOP done", "GFLOP/s", "peak RSS (increase)",
              "max rel. diff"]
    return table(header, rows) + "\n\n" + extra + run_line(data)


def heatmap_notes(path: Path) -> str:
    data = load(path)
    rows = {r["model"]: r for r in data["rows"]}
    first = data["rows"][0]
    h, w = (int(v) for v in first["image"].split("x"))
    least = min(data["rows"], key=lambda r: r["speedup"])
    most = max(data["rows"], key=lambda r: r["speedup"])
    mm = data.get("matmul_gflops_per_s", {})
    text = (f"\\* The reference (patches in batches of 1000, as the paper's code does) is timed on "
            f"{first['reference_sample_patches']} random patches and scaled to all {h * w:,} positions; the last "
            f"column compares the dense map with the reference on 200 of them. The work counted includes the overlap "
            f"of tiles. {NAMES.get(least['model'], least['model'])} gains least ({least['speedup']:.1f}× against "
            f"{NAMES.get(most['model'], most['model'])}'s {most['speedup']:.1f}×): its small patch makes the "
            f"reference cheap, while the dense map still runs the deep 1×1 layers at every pixel.")
    if mm and "bagnet33" in rows:
        rate = rows["bagnet33"]["dense_gflops_per_s"] / statistics.mean([mm["before"], mm["after"]])
        text += f" BagNet-33's dense convolutions ran at {rate:.2f}× the fp32 matmul rate of the same run" + (
            ": the dense map runs about as fast as this machine's arithmetic allows." if rate >= 0.8 else ".")
    text += (" The speed-up depends strongly on the machine, its threads and what else runs; earlier runs are kept "
             "in [docs/benchmark-history.md](docs/benchmark-history.md).")
    return wrap(text) + "\n"


def device_cpu_notes(path: Path) -> str:
    """The Heatmaps section's sentence on precision and batching, from benchmarks/device.py's CPU run."""
    data = load(path)
    rows = {r["precision"]: r for r in data["heatmaps"]}
    strict, bf16 = rows["strict"], rows["bf16"]
    return wrap(
        f"Measured with `{_command(data)}` ({machine_words(data)}, {data['run']['date']}; paper-size BagNet-33 with "
        f"random weights, {strict['size']}² px): bf16 "
        f"{strict['one_map_s'] / bf16['one_map_s']:.1f}× faster than strict ({bf16['one_map_s']:.2f} vs "
        f"{strict['one_map_s']:.2f} s per map) at a largest error of {bf16['max_error_vs_strict_rel']:.1e} of the "
        f"map's range; batching {strict['maps']} maps took {strict['batched_vs_singles']:.2f}× the time of "
        f"{strict['maps']} single maps in strict precision.") + "\n"


def _command(data: dict[str, Any]) -> str:
    run = data["run"]
    env = " ".join(f"{k}={v}" for k, v in run.get("env", {}).items())
    return f"{(env + ' ') if env else ''}{run['command']}"


# --- forward pass -----------------------------------------------------------------------------------------------

def forward_table(path: Path) -> str:
    data = load(path)
    cell = {(r["model"], r["variant"], r["batch"]): r for r in data["rows"]}
    models = list(dict.fromkeys(r["model"] for r in data["rows"]))
    rows = []
    for m in models:
        def ips(variant: str, batch: int) -> str:
            r = cell.get((m, variant, batch))
            return "—" if r is None else f"{r['images_per_s']:.1f}"

        def vs(batch: int) -> str:
            r = cell.get((m, "channels_last+fused", batch))
            return "—" if r is None or "ms_per_gmac_vs_resnet50" not in r else f"{r['ms_per_gmac_vs_resnet50']:.2f}×"

        gmac = next(r["gmacs_per_image"] for r in data["rows"] if r["model"] == m)
        ratio = "1" if m == "resnet50" else f"{vs(1)} / {vs(32)}"
        rows.append([NAMES.get(m, m), f"{gmac:.2f}", ips("eager", 1), ips("eager", 32), ips("channels_last", 32),
                     ips("channels_last+fused", 1), ips("channels_last+fused", 32), ratio])
    header = ["model", "GMAC", "eager b1", "eager b32", "ch.-last b32", "ch.-last+fused b1", "ch.-last+fused b32",
              "per-MAC vs ResNet-50 (b1 / b32, fused)"]
    return table(header, rows) + "\n\n" + run_line(data)


def forward_notes(path: Path) -> str:
    data = load(path)
    rows = data["rows"]
    cell = {(r["model"], r["variant"], r["batch"]): r for r in rows}
    bagnets = [m for m in dict.fromkeys(r["model"] for r in rows) if m.startswith("bagnet")]
    gmac = {r["model"]: r["gmacs_per_image"] for r in rows}
    fused_vs = [cell[(m, "channels_last+fused", b)]["ms_per_gmac_vs_resnet50"] for m in bagnets for b in (1, 32)
                if "ms_per_gmac_vs_resnet50" in cell.get((m, "channels_last+fused", b), {})]
    text = (f"A BagNet costs about {span([gmac[m] / gmac['resnet50'] for m in bagnets])}× the multiply-accumulates of "
            f"a ResNet-50 (no downsampling stem), and with BatchNorm folded and channels-last it spends "
            f"{span(fused_vs, '{:.2f}')}× ResNet-50's time per MAC.")
    unchunked = [cell[(m, "eager-unchunked", 32)] for m in bagnets if (m, "eager-unchunked", 32) in cell]
    if unchunked:
        chunked = [cell[(m, "eager", 32)]["images_per_s"] for m in bagnets]
        text += (f" Without padding or an early stride, big batches are memory-bound: eager batch 32 without chunks "
                 f"ran at {span([r['images_per_s'] for r in unchunked])} img/s "
                 f"({span([r['ms_per_gmac_vs_resnet50'] for r in unchunked], '{:.1f}')}× ResNet-50's time per MAC), "
                 f"with the default chunks of 2×224² pixels (`model.inference_chunk_pixels`, eval mode without "
                 f"autograd only, same results) at {span(chunked)} img/s.")
    gains = [cell[(m, "channels_last+fused", b)]["images_per_s"] / cell[(m, "eager", b)]["images_per_s"]
             for m in bagnets for b in (1, 32) if (m, "eager", b) in cell and (m, "channels_last+fused", b) in cell]
    text += (" Kept: chunking (default), channels-last and BatchNorm folding in the heatmap path; "
             "`bagnet.models.fuse_batchnorm(model)` and `model.to(memory_format=torch.channels_last)` are yours to "
             f"apply for inference ({span(gains, '{:.2f}')}× the eager speed in this run).")
    compiled = [(m, b) for m in bagnets for b in (1, 32) if (m, "compiled", b) in cell]
    if compiled:
        ratios = [cell[(m, "compiled", b)]["images_per_s"] / cell[(m, "channels_last+fused", b)]["images_per_s"]
                  for m, b in compiled]
        first = [cell[(m, "compiled", b)]["first_call_s"] for m, b in compiled
                 if "first_call_s" in cell[(m, "compiled", b)]]
        text += (f" torch.compile of the fused channels-last BagNets ran at {span(ratios, '{:.2f}')}× their eager "
                 f"speed" + (f" after {span(first, '{:.0f}', ' s')} to compile each shape" if first else "") +
                 "; it is not used by default: every new input or tile shape recompiles, which costs more than it "
                 "saves for a few images.")
    return wrap(text) + "\n"


# --- training ---------------------------------------------------------------------------------------------------

def train_table(path: Path) -> str:
    data = load(path)
    rows = []
    for r in sorted(data["rows"], key=lambda r: (r["config"].split()[0], r.get("compile", False))):
        name = r["config"].replace(".yaml", "") + (f" (batch {r['batch_size']})" if r["batch_size"] != 64 else "")
        ratio = r.get("time_per_mac_vs_resnet18")
        rows.append([name, f"{r['params'] / 1e6:.2f} M", f"{r['gmac']:.3f}",
                     f"{1e3 * r.get('normalised_per_mac', float('nan')):.1f}", f"{r['images_per_s']:.1f}",
                     f"{r['step_s']:.2f}", f"{r.get('first_step_s', float('nan')):.0f}",
                     "—" if ratio is None else f"{ratio:.2f}×"])
    header = ["config", "parameters", "GMAC/img", "normalised per 1000 MAC", "images/s", "s/step", "first step (s)",
              "time per MAC vs ResNet-18"]
    return table(header, rows) + "\n\n" + run_line(data)


def _train_rows(data: dict[str, Any]) -> dict[tuple[str, bool], dict[str, Any]]:
    return {(r["config"].split()[0].replace(".yaml", ""), bool(r.get("compile"))): r for r in data["rows"]}


def train_notes(path: Path) -> str:
    """Why a BagNet's training MAC is slower on a CPU, from train.json and profile-train.json beside it."""
    data = load(path)
    rows = _train_rows(data)
    bagnets = sorted({c for c, _ in rows if c.startswith("bagnet")})
    eager = {c: rows[(c, False)] for c, _ in rows if (c, False) in rows}
    per_mac = lambda c: 1e3 * eager[c]["normalised_per_mac"]  # noqa: E731
    cnns = [c for c in ("resnet18", "vgg11") if c in eager]
    text = (f"Why a BagNet spends each training MAC "
            f"{span([eager[c]['time_per_mac_vs_resnet18'] for c in bagnets])}× as long as a ResNet-18 on this CPU "
            f"(eager): it normalises {span([per_mac(c) for c in bagnets])} activations per 1000 MAC against "
            f"{' and '.join(f'{per_mac(c):.1f} for {NAMES[c]}' for c in cnns)} — full-resolution, few-channel stages "
            f"with no early downsampling — and BatchNorm, ReLU and the residual adds each sweep those activations "
            f"from memory several times.")
    profile_path = path.parent / "profile-train.json"
    if profile_path.is_file():
        prof = load(profile_path)
        shares = ", ".join(f"{kind} {100 * share:.0f} %" for kind, share in prof["step_shares"].items()
                           if share >= 0.02)
        bn = prof["batchnorm_ms"]
        shape = "×".join(map(str, prof["batchnorm_shape"]))
        dtype = prof["precision"].replace("torch.", "").replace("bfloat16", "bf16")
        arch = prof["config"].replace(".yaml", "")
        text += (f" The profile of one eager {NAMES.get(arch, arch)} step (shipped config, {dtype}, "
                 f"{'channels-last, ' if prof['channels_last'] else ''}batch {prof['batch']}, "
                 f"{prof['run']['threads']} thread, `benchmarks/profile_train.py`, {prof['run']['date']}) shares its "
                 f"operators' own time out as: {shares}. BatchNorm alone, forward and backward on one {shape} "
                 f"activation: " + ", ".join(f"{label} {ms:.0f} ms" for label, ms in bn.items()) + ".")
    compiled = {c: rows[(c, True)] for c, _ in rows if (c, True) in rows}
    if compiled:
        gain = {c: compiled[c]["images_per_s"] / eager[c]["images_per_s"] - 1 for c in compiled if c in eager}
        slower = [NAMES.get(c, c) for c in sorted(gain) if gain[c] <= 0]
        firsts = [compiled[c]["first_step_s"] for c in compiled]
        text += (" `torch.compile` fuses BatchNorm, ReLU and adds into fewer sweeps: "
                 + ", ".join(f"{NAMES.get(c, c)} {signed(100 * gain[c])} %" for c in sorted(gain))
                 + " images/s in the table's run")
        if "bagnet33" in compiled and "bagnet33" in eager:
            c, e = compiled["bagnet33"], eager["bagnet33"]
            text += f" (BagNet-33 compiled: {c['time_per_mac_vs_resnet18']:.2f}× ResNet-18's eager time per MAC"
            if c["step_s"] < e["step_s"]:
                steps = c["first_step_s"] / (e["step_s"] - c["step_s"])
                text += f"; its {c['first_step_s']:.0f}-s compile is paid back after about {steps:.0f} steps"
            text += ")"
        text += ("; " + (f"it slows {' and '.join(slower)} here, so it " if slower else "it ")
                 + "stays an option (`compile: true` / `--compile`), not the default. Cold compile times: "
                 f"{span(firsts, '{:.0f}', ' s')}.")
        best = min(r["time_per_mac_vs_resnet18"] for (c, _), r in rows.items() if c.startswith("bagnet"))
        verdict = ("**A time per MAC within 1.25× of ResNet-18's is not reached on this CPU**" if best > 1.25 else
                   "A time per MAC within 1.25× of ResNet-18's is reached on this CPU")
        text += (f" {verdict} ({best:.2f}× at best in this run): the extra activations per MAC are the "
                 f"architecture's, and no setting measured removes their memory traffic.")
    gpu = path.parent / "gpu-h200-before.json"
    if gpu.is_file():
        g = load(gpu)
        text += (f" On a GPU the same step is close to the arithmetic ({g['run']['gpu']}, see Devices: "
                 f"BagNet-33 {gpu_time_per_mac(g):.2f}× ResNet-50's time per MAC in bf16).")
    return wrap(text) + "\n"


# --- memory -----------------------------------------------------------------------------------------------------

def _memory_cells(data: dict[str, Any]) -> dict[tuple[str, int], dict[bool, dict]]:
    cells: dict[tuple[str, int], dict[bool, dict]] = {}
    for r in data["rows"]:
        cells.setdefault((r["model"], r["size"]), {})[bool(r["checkpointing"])] = r
    return cells


def memory_table(path: Path) -> str:
    data = load(path)
    rows = []
    last = None
    for (model, size), pair in _memory_cells(data).items():
        plain, ckpt = pair.get(False), pair.get(True)

        def cell(r: dict | None) -> str:
            return "—" if r is None else f"{r['peak_bytes_per_image'] / 2**20:.1f}, {r['step_s']:.2f}"

        saved = "—"
        if plain and ckpt:
            frac = 1 - ckpt["peak_bytes_per_image"] / plain["peak_bytes_per_image"]
            saved = f"{100 * frac:.0f} %" if frac > 0 else "none"
        rows.append([model if model != last else "", f"{size} px", cell(plain), cell(ckpt), saved])
        last = model
    header = ["model", "size", "plain: MiB/image, s/step", "checkpointed: MiB/image, s/step", "memory saved"]
    return table(header, rows) + "\n\n" + run_line(data)


def memory_notes(path: Path) -> str:
    data = load(path)
    cells = _memory_cells(data)
    paper = [(m, s) for m, s in cells if m.startswith("bagnet33 (paper")]
    saved: dict[str, list[float]] = {}
    for (model, _), pair in cells.items():
        if False in pair and True in pair:
            saved.setdefault(model.split(" (")[1].split(":")[0], []).append(
                100 * (1 - pair[True]["peak_bytes_per_image"] / pair[False]["peak_bytes_per_image"]))
    text = ("The peak is the largest single block's activations, recomputed during its own backward pass, so "
            "checkpointing block by block saves most where a stage has several blocks at the highest resolution "
            "(three in the paper-size BagNet, one in the shipped one)")
    if "paper" in saved and "shipped" in saved:
        text += (f": it saved {span(saved['paper'], '{:.0f}', ' %')} of the paper-size BagNet's peak and "
                 f"{span(saved['shipped'], '{:.0f}', ' %')} of the shipped one's")
    text += "."
    if paper:
        model, size = max(paper, key=lambda ms: ms[1])
        pair = cells[(model, size)]
        if False in pair and True in pair:
            dtype = data.get("precision", "the recorded precision").replace("bfloat16", "bf16")
            text += (f" In {dtype}, a paper-size BagNet-33 at {size} px needs about "
                     f"{pair[False]['peak_bytes_per_image'] / 2**30:.1f} GiB per image in training "
                     f"({pair[True]['peak_bytes_per_image'] / 2**30:.1f} GiB checkpointed).")
    return wrap(text) + "\n"


# --- interactions -----------------------------------------------------------------------------------------------

def interactions_table(path: Path) -> str:
    data = load(path)
    rows = [[f"{NAMES.get(r['model'], r['model'])}, {data['size']} px", f"{r['forward_s_per_image']:.2f} s/img",
             f"{r['local_s_per_image']:.2f} s/img", f"{r['speedup']:.2f}×", f"{r['max_rel_diff_mean_effect']:.1e}"]
            for r in data["rows"]]
    header = ["model, image", "forward passes", "evidence map + crops", "speed-up",
              "max rel. diff of mean \\|effect\\|"]
    return table(header, rows) + "\n\n" + run_line(data)


# --- the GPU's figures ------------------------------------------------------------------------------------------

def gpu_time_per_mac(data: dict[str, Any]) -> float:
    """BagNet-33's training time per MAC relative to ResNet-50's, from the GPU file's images/s and GMAC."""
    t = data["training"]
    return (t["resnet50_img_s"] * t["resnet50_gmac"]) / (t["bagnet33_img_s"] * t["bagnet33_gmac"])


def gpu_before_table(path: Path) -> str:
    data = load(path)
    inf, hm, tr, pr = data["inference"], data["heatmap"], data["training"], data["precision"]
    rows = [
        ("BagNet-33 inference, batch 256, 224 px, with the CPU chunks (2×224²)",
         f"{inf['bagnet33_chunked_img_s']['bf16']:.0f} img/s bf16, "
         f"{inf['bagnet33_chunked_img_s']['fp32']:.0f} img/s fp32"),
        ("the same without chunks (what the per-device policy now does on a GPU)",
         f"{inf['bagnet33_unchunked_img_s']['bf16']:.0f} img/s bf16, {inf['bagnet33_unchunked_img_s']['fp32']:.0f} "
         f"img/s fp32; ResNet-50 {inf['resnet50_img_s']['bf16']:.0f} / {inf['resnet50_img_s']['fp32']:.0f}"),
        ("heatmap, BagNet-33, 224²",
         f"{hm['strict_s']:.3f} s strict fp32, {hm['tf32_s']:.3f} s TF32, {hm['stride8_s']:.3f} s at stride 8; the "
         f"released patch-by-patch method {hm['released_s']:.1f} s"),
        ("training step, bf16, channels-last, batch 128, 224 px",
         f"BagNet-33 {tr['bagnet33_img_s']:.0f} img/s × {tr['bagnet33_gmac']:.2f} GMAC "
         f"({gpu_time_per_mac(data):.2f}× ResNet-50's time per MAC), compiled "
         f"{tr['bagnet33_compiled_img_s']:.0f} img/s"),
        ("precision of the shipped models' logits against fp64",
         f"strict < {pr['strict']:.0e} of the logit range, TF32 {pr['tf32']:.1e}, bf16 {pr['bf16']:.1e}"),
    ]
    run = data["run"]
    return (table([f"before ({run['gpu']})", "figure"], [list(r) for r in rows])
            + f"\n\n*{run['date']}, {run['gpu']}, torch {run['torch']}, CUDA {run['cuda']}; "
            f"{data['source']}*\n")


def gpu_figures(folder: Path) -> str:
    """The GPU table: measured, from ``device-cuda.json`` (written by scripts/gpu_check.sh) when it exists, else the
    transcribed before row of ``gpu-h200-before.json`` with its provenance."""
    measured = folder / "device-cuda.json"
    if not measured.is_file():
        return ("No GPU measurement is stored yet (`benchmarks/results/device-cuda.json`): the row below is the "
                "transcribed **before** row.\n\n" + gpu_before_table(folder / "gpu-h200-before.json"))
    parts = [device_table(measured)]
    for name, title, render in (("heatmap", "Dense heatmaps", heatmap_table), ("forward", "Forward pass", forward_table),
                                ("train", "Training step", train_table)):
        path = folder / f"{name}-cuda.json"
        if path.is_file():  # the other benchmarks of scripts/gpu_check.sh, when they ran
            parts.append(f"**{title} on the GPU** (`{path.name}`):\n\n" + render(path))
    return "\n\n".join(parts)


def device_table(path: Path) -> str:
    """benchmarks/device.py's file as a table: inference per model, policy and dtype; heatmaps per precision."""
    data = load(path)
    rows = []
    for r in data["inference"]:
        peak = f", peak {r['peak_mib'] / 1024:.1f} GiB" if r.get("peak_mib") else ""
        rows.append([f"{r['model']} inference, batch {r['batch']}, {r['dtype']}, {r['policy']} policy",
                     f"{r['images_per_s']:.0f} img/s, {r['tmac_per_s']:.2f} TMAC/s "
                     f"({r['time_per_mac_vs_resnet50']:.2f}× ResNet-50's time per MAC){peak}"])
    for r in data["heatmaps"]:
        peak = f", peak {r['peak_mib'] / 1024:.1f} GiB" if r.get("peak_mib") else ""
        rows.append([f"heatmap BagNet-33 {r['size']}², {r['precision']}",
                     f"one map {r['one_map_s']:.3f} s; {r['maps']} batched {r['batched_s'] / r['maps']:.3f} s per map "
                     f"({r['batched_vs_singles']:.2f} of singles); error {r['max_error_vs_strict_rel']:.1e} of the "
                     f"range{peak}"])
    run = data["run"]
    return (table([f"measured ({data['device']})", "figure"], rows)
            + f"\n\n*{run['date']}, {data['device']}, torch {data['torch']}; `{run['command']}`*\n")


def wrap(text: str, width: int = 118) -> str:
    import textwrap

    return "\n\n".join(textwrap.fill(par, width=width, break_long_words=False, break_on_hyphens=False)
                       for par in text.split("\n\n"))


def index_table(path: Path) -> str:
    """The patch index benchmark: the forward passes alone against the build, then queries."""
    data = load(path)
    f, b = data["forward"], data["build"]
    gib = 2 ** 30
    rows = [["forward passes only", f"{f['seconds']:.0f} s", f"{f['images'] / f['seconds']:.1f}",
             f"{f['patches'] / f['seconds']:,.0f}", "—", f"{f['peak_rss_bytes'] / gib:.2f} GiB"],
            [f"build (`{b['factory']}`)", f"{b['seconds']:.0f} s", f"{b['images'] / b['seconds']:.1f}",
             f"{b['patches'] / b['seconds']:,.0f}", f"{b['bytes_per_patch']:,.0f} B",
             f"{b['peak_rss_bytes'] / gib:.2f} GiB"]]
    header = ["pass", "time", "images/s", "patches/s", "on disk per patch", "peak RSS"]
    return table(header, rows) + "\n\n" + run_line(data)


def index_notes(path: Path) -> str:
    data = load(path)
    b, q = data["build"], data["query"]
    per_patch = b["bytes_per_patch"]
    imagenet = 1_281_167 * 24 * 24
    return (f"{b['patches']:,} patches of {b['images']:,} images ({data['model']}, {data['data']}): the build took "
            f"{data['build_over_forward']:.2f}× the time of the forward passes alone (target ≤ 1.2×); recall@10 "
            f"of the compressed index against brute force over the same vectors, measured by the build on its "
            f"sampled queries, {b['recall_at_10']:.3f} (nprobe {b['nprobe']}); one query (k = 10) over all "
            f"{q['patches']:,} patches: median {q['query_ms_median']:.2f} ms (90th percentile "
            f"{q['query_ms_p90']:.2f} ms); opening the index {q['load_seconds']:.1f} s, its reader's peak RSS "
            f"{q['peak_rss_bytes'] / 2 ** 30:.2f} GiB. At the measured {per_patch:,.0f} bytes per patch, ImageNet's "
            f"{imagenet:,} BagNet-33 patches at 224 px (24 × 24 cells per image) would take "
            f"{imagenet * per_patch / 1e12:.2f} TB with this index type and a width-reduced model: see the arithmetic "
            f"below for the compressed layout such a size calls for.\n")


IMAGENET_TRAIN, IMAGENET_CELLS = 1_281_167, 24 * 24  # BagNet-33 at 224 px: (224 − 33) // 8 + 1 = 24 cells a side


def index_imagenet(folder: Path) -> str:
    """The arithmetic of an ImageNet-scale patch index, from the measured CPU build (index.json) and the measured GPU
    forward rate (gpu-h200-before.json); the storage sizes follow from the index layouts' byte counts."""
    idx, gpu = load(folder / "index.json"), load(folder / "gpu-h200-before.json")
    patches = IMAGENET_TRAIN * IMAGENET_CELLS
    b, f = idx["build"], idx["forward"]
    store_rate = b["patches"] / max(b["seconds"] - f["seconds"], 1e-9)
    img_s = gpu["inference"]["bagnet33_unchunked_img_s"]["bf16"]
    meta16, meta4 = 4 + 4 + 16 * 4, 4 + 4 + 4 * 4  # image, cell, and --evidence-top k classes (int16 + fp16 each)
    layouts = [("`Flat` (float32, exact)", 2048 * 4 + meta16), ("`IVF65536,SQ8` (8-bit codes)", 2048 + 8 + meta16),
               ("`OPQ64_256,IVF65536,PQ64`, `--evidence-top 16`", 64 + 8 + meta16),
               ("`OPQ64_256,IVF65536,PQ64`, `--evidence-top 4`", 64 + 8 + meta4)]
    rows = [[name, f"{per:,} B", f"{patches * per / 1e9:,.0f} GB"] for name, per in layouts]
    return (f"ImageNet's training split is {IMAGENET_TRAIN:,} images × {IMAGENET_CELLS} cells = {patches:,} patches "
            f"for BagNet-33 at 224 px, each a 2048-dimensional feature vector at the paper's width. On disk, per "
            f"layout (vector code + its id + the per-patch arrays):\n\n"
            + table(["index (`--index-type`)", "per patch", "ImageNet"], rows)
            + f"\n\nBuild time per GPU: the forward passes at the {img_s:,} images/s measured for BagNet-33 in bf16 on "
            f"an H200 ({gpu['run']['date']}) take {IMAGENET_TRAIN / img_s / 60:.1f} min per GPU for the whole split. "
            f"The vector store runs on the CPU (faiss-cpu); here it added {store_rate:,.0f} patches/s per process "
            f"beyond the forward passes ({b['factory']}, {idx['forward']['patches'] // max(f['images'], 1)} cells per "
            f"image, 768 dimensions), which would be {patches / store_rate / 3600:,.0f} process-hours for "
            f"ImageNet: the store, not the GPU, sets the pace, so a GPU build of faiss or many CPU processes are "
            f"needed at that scale (not measured here). Under `torchrun --nproc-per-node N bagnet index …` rank r "
            f"builds shards r, r + N, …, each written atomically with its own faiss index; rank 0 trains the "
            f"quantizer once on the first shards' vectors (at most 100,000) and the other ranks wait for it, so all "
            f"shards share one set of lists; after a barrier rank 0 merges the shards (faiss `merge_from` with id "
            f"offsets) and streams the per-patch arrays into memory-mapped files. The merge holds the compressed "
            f"index in memory (its size in the table above, without the per-patch arrays).\n")


def report_table(path: Path) -> str:
    """The interactive report's bytes per image (beside the static report's for the same images) and opening time."""
    data = load(path)
    own, large, opened = data["own_resolution"], data["large"], data["open"]
    rows = [[f"{r['images']} Imagenette val images, short side {r['short_side_px']:.0f} px", f"{r['model']}",
             f"{r['bytes_per_image'] / 1e3:,.0f} kB", f"{r['static_report_bytes_per_image'] / 1e3:,.0f} kB",
             f"{r['static_report_bytes_per_image'] / r['bytes_per_image']:.1f}×"] for r in (own, large)]
    header = ["report of", "model", "interactive report per image", "static report per image (before)", "smaller by"]
    return (table(header, rows) + "\n\n"
            + f"Opening the {own['images']}-image report in headless Chromium ({opened['opens']} opens, medians): load "
            f"event after {opened['load_ms_median']:.0f} ms, the first image's map drawn after "
            f"{opened['first_map_ms_median']:.0f} ms (target < {data['budget_open_ms'] / 1000:.0f} s; each map is "
            f"drawn when its image comes into view), a class switch redraws a map in "
            f"{opened['class_switch_ms_median']:.1f} ms. Budget: ≤ {data['budget_bytes_per_image'] / 1e6:.0f} MB per "
            f"image for the top-3 classes at the model's own resolution.\n\n" + run_line(data))

