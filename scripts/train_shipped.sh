#!/usr/bin/env bash
# Train (or continue, after a kill) the shipped Imagenette models one after another, each resumable.
# Usage: bash scripts/train_shipped.sh [CONFIG_NAME ...]    (default: vgg11 bagnet17 bagnet9)
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
cd "$ROOT"
for name in "${@:-vgg11 bagnet17 bagnet9}"; do
    for n in $name; do
        config="configs/imagenette/$n.yaml"
        out=$("$PY" -c "import yaml,sys; print(yaml.safe_load(open(sys.argv[1]))['out'])" "$config")
        if [ -f "$out/summary.json" ]; then echo "[train_shipped] $n: finished ($out/summary.json)"; continue; fi
        resume=""; [ -f "$out/checkpoint.pt" ] && resume="--resume"
        echo "[train_shipped] $n: bagnet train --config $config $resume --no-progress"
        "$VENV/bin/bagnet" train --config "$config" $resume --no-progress
    done
done
