"""Print the Markdown tables of docs/experiments.md from the saved result files (so the docs quote the files).

Usage: python scripts/results_tables.py [RESULTS_DIR]     (default docs/results/experiments; for the ImageNet
       results of scripts/imagenet_results.sh: docs/results/imagenet, which also holds evaluate/<model>/)
"""

import json
import sys
from pathlib import Path

from bagnet.experiments import DiagnosticResult, read_result

root = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/results/experiments")


def load(name: str) -> dict | None:
    path = root / name / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def short(model: str) -> str:
    return model.replace(":imagenette", "").replace(":imagenet", "").replace("torchvision:", "")


def pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.1f}"


def num(v: float | None, fmt: str = ".2f") -> str:
    return "—" if v is None else format(v, fmt)


def table(header: list[str], rows: list[list[str]]) -> None:
    print("| " + " | ".join(header) + " |")
    print("| " + " | ".join("---" for _ in header) + " |")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    print()


evaluations = sorted((root / "evaluate").glob("*/evaluation.json")) if (root / "evaluate").is_dir() else []
if evaluations:
    print("Accuracy on the validation split")
    rows = []
    for path in evaluations:
        e = json.loads(path.read_text())
        rows.append([short(e["model"]), str(e["images"]), pct(e["top1"]), pct(e["top5"])])
    table(["model", "images", "top-1 %", "top-5 %"], rows)
if (d := load("scrambling")):
    for key in ("top1", "top5"):
        print(f"Scrambling, {key[:3]}-{key[3:]} % ({d['images']} images)")
        table(["model"] + [("original" if g == 1 else f"{g}×{g} ({t} px)")
                           for g, t in zip(d["grids"], d["tile_sizes"])],
              [[short(m)] + [pct(v) for v in d[key][m]] for m in d["models"]])
if (d := load("interactions")):
    print(f"Interactions: mean |interaction| / (|effect A| + |effect B|), {d['images']} images, "
          f"{d['region']}-px regions, fill {d['fill']}")
    table(["model"] + [f"gap {g}" for g in d["gaps"]],
          [[short(m)] + [num(v, ".3f") for v in d["normalised_interaction"][m]] for m in d["models"]])
    table(["model"] + [f"|effect| gap {g}" for g in d["gaps"]],
          [[short(m)] + [num(v, ".3f") for v in d["mean_abs_effect"][m]] for m in d["models"]])
if (d := load("similarity")):
    ms = [short(m) for m in d["models"]]
    for key in ("error_consistency", "logit_correlation", "class_accuracy_correlation"):
        print(f"{key} ({d['images']} images)")
        table([""] + ms, [[a] + [num(v) for v in row] for a, row in zip(ms, d[key])])
if (d := load("masking")):
    print(f"Masking, top-1 % ({d['images']} images, {d['block']}-px blocks of {d['blocks_per_image']}, fill {d['fill']})")
    rows = []
    for m in d["models"]:
        for r in d["rankings"]:
            acc = d["accuracy"][m].get(r)
            if acc:
                rows.append([short(m), short(r)] + [pct(v) for v in acc])
    table(["model", "ranked by"] + [f"k={k}" for k in d["ks"]], rows)
if (d := load("summary")):
    print("Summary")
    table(["model", "scrambling retention", "locality", "decision similarity", "score"],
          [[short(m)] + [("—" if d[k][m] is None else f"{d[k][m]:.2f}")
                         for k in ("scrambling_retention", "locality", "decision_similarity", "score")]
           for m in d["models"]])
for name in ("diagnostic-imagenette", "diagnostic-fashion-mnist"):
    path = root / name / "diagnostic.json"
    if path.is_file():
        result = read_result(DiagnosticResult, path)
        print(f"{name}: scrambled at {result.scramble_grid}×{result.scramble_grid} ({result.scramble_tile_px} px tiles)")
        table(["model", "top-1 %", "scrambled top-1 %"],
              [[short(r["model"]), pct(r["top1"]), pct(r["scrambled_top1"] if r["scrambled_top1"] != "" else None)]
               for r in result.rows()])
