#!/usr/bin/env bash
# The paper's experiments on ImageNet at 224 px: the released BagNets and torchvision's VGG-16, ResNet-50,
# ResNet-152 and DenseNet-169 (the paper's comparison models), plus torchvision's ViT-B/16 (which the paper did not
# have). Each step skips itself when its result file exists (delete the folder to redo it). See docs/imagenet.md
# for what each step computes, the paper's figures beside it and the expected run time.
#
# Usage: bash scripts/imagenet_results.sh IMAGENET_ROOT [STEP ...]
#   steps: evaluate scrambling interactions similarity masking summary attribution tables
# Environment: DEVICE (cpu | cuda; default cuda when there is one), NPROC (processes for torchrun, e.g. the number
#   of GPUs; default 1), OUT (default docs/results/imagenet), LIMIT_SCALE (divide every image count by it, for a
#   quick slice: LIMIT_SCALE=100), WORKERS (data-loading processes of evaluate, default 8); MODELS, REFERENCE and
#   ATTRIBUTION_MODELS replace the models (any specs bagnet.load accepts, e.g. torchvision:NAME:/local/file.pth).
# Weights: torchvision's and the BagNets' are downloaded once into torch.hub's cache (hash-checked); offline, put
#   the files named in the error message there by hand.
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
cd "$ROOT"
ROOT_DATA="${1:?usage: bash scripts/imagenet_results.sh IMAGENET_ROOT [STEP ...]}"; shift
DATA="imagenet:$ROOT_DATA"
OUT="${OUT:-docs/results/imagenet}"
DEVICE="${DEVICE:-$("$PY" -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')}"
NPROC="${NPROC:-1}"
SCALE="${LIMIT_SCALE:-1}"
WORKERS="${WORKERS:-8}"
if [ "$NPROC" -gt 1 ]; then B=("$VENV/bin/torchrun" --standalone --nproc_per_node "$NPROC" -m bagnet)
else B=("$VENV/bin/bagnet"); fi
n() { echo $(( ($1 + SCALE - 1) / SCALE )); }  # an image count, divided by LIMIT_SCALE
BAGNETS="bagnet9:imagenet bagnet17:imagenet bagnet33:imagenet"
CNNS="torchvision:vgg16 torchvision:resnet50 torchvision:resnet152 torchvision:densenet169"
VIT="torchvision:vit_b_16"
MODELS="${MODELS:-$BAGNETS $CNNS $VIT}"
REFERENCE="${REFERENCE:-bagnet33:imagenet}"  # the BagNet that ranks patches for masking and anchors the summary
ATTRIBUTION_MODELS="${ATTRIBUTION_MODELS:-bagnet33:imagenet torchvision:vgg16 torchvision:resnet50 torchvision:densenet169}"
steps="${*:-evaluate scrambling interactions similarity masking summary attribution tables}"
TAG=imagenet
common=(--data "$DATA" --device "$DEVICE" --no-progress)
# the reference's label in the result files and its patch size (read from its metadata, nothing downloaded)
read -r REF_LABEL REF_Q < <("$PY" -c '
import sys, bagnet
from bagnet.models import model_entry, model_label
spec = sys.argv[1]
meta = model_entry(spec).meta if spec in bagnet.list_models() else bagnet.load(spec).meta
print(model_label(spec), meta.patch_size)' "$REFERENCE")

for m in $MODELS; do
    safe=$(printf '%s' "$m" | sed 's#[/:]#_#g; s#^_*##')  # one folder per model, whatever its spec
    run evaluate "$OUT/evaluate/$safe/evaluation.json" \
        "${B[@]}" evaluate --model "$m" "${common[@]}" --limit "$(n 50000)" --workers "$WORKERS" --batch-size 100 \
        --out "$OUT/evaluate/$safe"
done
run scrambling "$OUT/scrambling/scrambling.json" \
    "${B[@]}" experiment scrambling --models $MODELS "${common[@]}" --limit "$(n 5000)" --grids 1 2 4 8 16 \
    --out "$OUT/scrambling"
run interactions "$OUT/interactions/interactions.json" \
    "${B[@]}" experiment interactions --models $MODELS "${common[@]}" --limit "$(n 200)" --region 16 \
    --gaps 0 16 32 48 64 96 128 --fill mean --out "$OUT/interactions"
run similarity "$OUT/similarity/similarity.json" \
    "${B[@]}" experiment similarity --models $MODELS "${common[@]}" --limit "$(n 10000)" --out "$OUT/similarity"
run masking "$OUT/masking/masking.json" \
    "${B[@]}" experiment masking --models $MODELS --rankers "$REFERENCE" "${common[@]}" --limit "$(n 1000)" \
    --block 8 --ks 0 1 2 4 8 16 32 64 --fill mean --out "$OUT/masking"
run summary "$OUT/summary/summary.json" \
    "$VENV/bin/bagnet" experiment summary --results "$OUT/scrambling" "$OUT/interactions" "$OUT/similarity" \
    --reference "$REF_LABEL" --patch-size "$REF_Q" --num-classes 1000 --out "$OUT/summary"
run attribution "$OUT/attribution/comparison.json" \
    "$VENV/bin/bagnet" attribution --models $ATTRIBUTION_MODELS "${common[@]}" --limit "$(n 50)" --out "$OUT/attribution"
run tables "$OUT/tables.md" \
    bash -c '"$0" scripts/results_tables.py "$1" > "$1/tables.md.tmp" && mv "$1/tables.md.tmp" "$1/tables.md"' "$PY" "$OUT"
