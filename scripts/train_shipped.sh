#!/usr/bin/env bash
# Train (or continue, after a kill) the shipped Imagenette models one after another, each resumable.
# Usage: bash scripts/train_shipped.sh [CONFIG_NAME ...]    (default: vgg11 bagnet17 bagnet9)
# A run that outlasts a session is carried to the next one by committing its run folder (checkpoint.pt,
# config.yaml, metrics) under checkpoints/<run name>/; this script copies it back into runs/ and resumes it.
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
cd "$ROOT"
for name in "${@:-vgg11 bagnet17 bagnet9}"; do
    for n in $name; do
        config="configs/imagenette/$n.yaml"
        out=$("$PY" -c "import yaml,sys; print(yaml.safe_load(open(sys.argv[1]))['out'])" "$config")
        if [ -f "$out/summary.json" ] && "$PY" -c "import json,sys; sys.exit(0 if json.load(open(sys.argv[1]))['completed'] else 1)" "$out/summary.json"; then
            echo "[train_shipped] $n: finished ($out/summary.json)"; continue
        fi
        if [ -f "src/bagnet/weights/$n.imagenette.safetensors" ]; then echo "[train_shipped] $n: shipped already"; continue; fi
        # a run carried over from an earlier session (runs/ is not in git): continue from its committed checkpoint
        carried="checkpoints/$(basename "$out")"
        if [ ! -f "$out/checkpoint.pt" ] && [ -f "$carried/checkpoint.pt" ]; then
            mkdir -p "$out" && cp "$carried"/* "$out"/
            echo "[train_shipped] $n: continuing the run carried over in $carried"
        fi
        resume=""; [ -f "$out/checkpoint.pt" ] && resume="--resume"
        echo "[train_shipped] $n: bagnet train --config $config $resume --no-progress"
        "$VENV/bin/bagnet" train --config "$config" $resume --no-progress
    done
done
