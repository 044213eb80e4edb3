#!/usr/bin/env bash
# The Imagenette runs behind docs/ (experiments, attribution, robustness), with the shipped models.
# Each step skips itself when its result file exists (delete the folder to redo it). Takes hours on a 2-core CPU.
# Usage: bash scripts/imagenette_results.sh [STEP ...]   steps: scrambling interactions similarity masking summary
#                                                                diagnostic diagnostic-fashion
#                                                                attribution certify attack
#                                                                vit-scrambling vit-offset vit-interactions
#                                                                vit-similarity vit-masking vit-summary
#                                                                vit-diagnostic vit-attribution
# The vit-* steps put the ViT (issue 18) beside the shipped models on the same seeded images (--limit/--seed as
# above), in docs/results/vit/.
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
cd "$ROOT"
B="$VENV/bin/bagnet"
R=docs/results
MODELS="bagnet9:imagenette bagnet17:imagenette bagnet33:imagenette resnet18:imagenette vgg11:imagenette"
steps="${*:-scrambling interactions similarity masking summary diagnostic diagnostic-fashion attribution certify attack vit-scrambling vit-offset vit-interactions vit-similarity vit-masking vit-summary vit-diagnostic vit-attribution}"
V=docs/results/vit
run scrambling "$R/experiments/scrambling/scrambling.json" \
    "$B" experiment scrambling --models $MODELS --data imagenette --limit 1000 --grids 1 2 4 8 16 --out "$R/experiments/scrambling"
run interactions "$R/experiments/interactions/interactions.json" \
    "$B" experiment interactions --models $MODELS --data imagenette --limit 100 --region 16 --gaps 0 8 16 32 48 \
    --fill mean --out "$R/experiments/interactions"
run similarity "$R/experiments/similarity/similarity.json" \
    "$B" experiment similarity --models $MODELS --data imagenette --out "$R/experiments/similarity"
run masking "$R/experiments/masking/masking.json" \
    "$B" experiment masking --models $MODELS --rankers bagnet33:imagenette bagnet17:imagenette \
    --own-attribution integrated_gradients --data imagenette --limit 200 --block 8 --ks 0 1 2 4 8 16 32 64 \
    --fill mean --out "$R/experiments/masking"
run summary "$R/experiments/summary/summary.json" \
    "$B" experiment summary --results "$R/experiments/scrambling" "$R/experiments/interactions" \
    "$R/experiments/similarity" --reference bagnet33:imagenette --patch-size 33 --num-classes 10 \
    --out "$R/experiments/summary"
run diagnostic "$R/experiments/diagnostic-imagenette/diagnostic.json" \
    "$PY" scripts/imagenette_diagnostic.py "$R/experiments/scrambling" "$R/experiments/diagnostic-imagenette"
# finished runs of the Fashion-MNIST diagnostic carried over from an earlier session (see checkpoints/README.md)
if [[ " $steps " == *" diagnostic-fashion "* ]] && [ -d checkpoints/diagnostic-fashion-mnist ]; then
    for d in checkpoints/diagnostic-fashion-mnist/*/; do
        [ -e "runs/diagnostic-fashion-mnist/$(basename "$d")" ] || { mkdir -p runs/diagnostic-fashion-mnist; cp -r "$d" runs/diagnostic-fashion-mnist/; }
    done
fi
run diagnostic-fashion "$R/experiments/diagnostic-fashion-mnist/diagnostic.json" \
    "$B" experiment diagnostic --data fashion-mnist --config configs/fashion-mnist/diagnostic.yaml --patch-sizes 9 17 33 \
    --cnn resnet18 --scramble-grid 4 --runs-dir runs/diagnostic-fashion-mnist --out "$R/experiments/diagnostic-fashion-mnist"
run attribution "$R/attribution/comparison.csv" \
    "$B" attribution --models bagnet33:imagenette resnet18:imagenette vgg11:imagenette --data imagenette --limit 12 \
    --out out/attribution-imagenette
run certify "$R/robust/bagnet17/robustness.json" \
    "$B" certify --model bagnet17:imagenette --data imagenette --stickers 8 13 18 26 --attack-steps 0 \
    --out "$R/robust/bagnet17"
run attack "$R/robust/attack/robustness.json" \
    "$B" certify --model bagnet17:imagenette --data imagenette --stickers 8 18 --limit 100 --attack-steps 20 \
    --attack-stride 4 --attack-top 16 --out "$R/robust/attack"
# --- the ViT beside the BagNets (16-px tokens: an 8×8 token grid at 128 px) ---
run vit-scrambling "$V/scrambling/scrambling.json" \
    "$B" experiment scrambling --models vit:imagenette --data imagenette --limit 1000 --grids 1 2 4 8 16 \
    --out "$V/scrambling"     # the same seeded images as the shipped models' run above
# the same tiles shifted by half a token (8 px): 16-px tiles (grid 8) now cut every token in four
run vit-offset "$V/scrambling-offset8/scrambling.json" \
    "$B" experiment scrambling --models vit:imagenette resnet18:imagenette bagnet33:imagenette --data imagenette \
    --limit 1000 --grids 1 2 4 8 --offset 8 --out "$V/scrambling-offset8"
run vit-interactions "$V/interactions/interactions.json" \
    "$B" experiment interactions --models vit:imagenette resnet18:imagenette bagnet33:imagenette \
    --data imagenette --limit 100 --region 16 --gaps 0 8 16 32 48 64 96 --fill mean --out "$V/interactions"
run vit-similarity "$V/similarity/similarity.json" \
    "$B" experiment similarity --models $MODELS vit:imagenette --data imagenette --out "$V/similarity"
run vit-masking "$V/masking/masking.json" \
    "$B" experiment masking --models vit:imagenette --rankers bagnet33:imagenette bagnet17:imagenette \
    --own-attribution integrated_gradients --data imagenette --limit 200 --block 8 --ks 0 1 2 4 8 16 32 64 \
    --fill mean --out "$V/masking"
run vit-summary "$V/summary/summary.json" \
    "$B" experiment summary --results "$V/scrambling" "$V/interactions" "$V/similarity" \
    --reference bagnet33:imagenette --patch-size 33 --num-classes 10 --out "$V/summary"
run vit-diagnostic "$V/diagnostic/diagnostic.json" \
    "$PY" scripts/imagenette_diagnostic.py "$R/experiments/scrambling,$V/scrambling" "$V/diagnostic" vit:imagenette
run vit-attribution "$V/attribution/comparison.csv" \
    "$B" attribution --models vit:imagenette --data imagenette --limit 12 --out "$V/attribution"
