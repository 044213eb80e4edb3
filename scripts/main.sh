#!/usr/bin/env bash
# The main job on the embedded default model, offline (creates .venv on first use): explain scikit-image's sample
# photos, writing PNGs and a self-contained HTML report to out/explain/. Extra arguments go to `bagnet explain`
# (image files or folders of your own, --model, --top, --stride, --out ...).
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
if [ "$#" -eq 0 ]; then
    exec "$VENV/bin/bagnet" explain --samples --out out/explain
fi
exec "$VENV/bin/bagnet" explain "$@"
