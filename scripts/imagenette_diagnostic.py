"""The dataset diagnostic on Imagenette, from the shipped models (trained with one recipe, see configs/imagenette/)
and a scrambling run over them (a seeded sample of the validation split): writes docs/results/experiments/diagnostic-imagenette/.

Usage: python scripts/imagenette_diagnostic.py [SCRAMBLING_DIR[,DIR...]] [OUT_DIR] [CNN]   (CNN default resnet18:imagenette;
the scrambling run must hold the BagNets it finds and CNN)
"""

import sys
from pathlib import Path

from bagnet.experiments import DiagnosticResult, ScramblingResult, read_result

scrambling_dirs = [Path(d) for d in (sys.argv[1] if len(sys.argv) > 1 else "docs/results/experiments/scrambling").split(",")]
out = Path(sys.argv[2] if len(sys.argv) > 2 else "docs/results/experiments/diagnostic-imagenette")
cnn = sys.argv[3] if len(sys.argv) > 3 else "resnet18:imagenette"
run = read_result(ScramblingResult, scrambling_dirs[0] / "scrambling.json")
for more in scrambling_dirs[1:]:  # runs of other models on the same seeded images
    run = run.merged(read_result(ScramblingResult, more / "scrambling.json"))
print(f"from {', '.join(map(str, scrambling_dirs))}: {run.images} validation images (accuracies on this sample, not the full split)")
bagnets = {q: f"bagnet{q}:imagenette" for q in (9, 17, 33) if f"bagnet{q}:imagenette" in run.models}
result = DiagnosticResult.from_scrambling(run, bagnets, cnn=cnn, grid=4, dataset="imagenette")
for name, model in result.runs.items():
    print(f"{name:<22} {100 * run.top1[model][run.grids.index(1)]:5.1f}%   4×4 scrambled {100 * result.scrambled_top1[name]:5.1f}%")
print(f"scrambling gap of {result.cnn}: {100 * result.scrambling_gap:.1f} points; files in {result.save(out)}")
