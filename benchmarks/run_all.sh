#!/usr/bin/env bash
# Re-measure every benchmark whose figures the README shows, one after another (about 40 min on a 2-core CPU),
# writing benchmarks/results/*.json; then `python scripts/readme_figures.py --write` renders the README from them.
# Run it on a quiet machine: the files record the machine, threads, torch, date and command, not what ran beside.
# Usage: bash benchmarks/run_all.sh [NAME ...]   (names: heatmap device forward train profile interactions memory index
# report; default all)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
R=benchmarks/results
names=("$@")
[ ${#names[@]} -eq 0 ] && names=(heatmap device forward train profile interactions memory index report)
for name in "${names[@]}"; do
  echo "== $name ($(date -u +%H:%M:%S) UTC)" >&2
  case $name in
    heatmap) $PY benchmarks/heatmap.py --json $R/heatmap.json ;;
    device) OMP_NUM_THREADS=1 $PY benchmarks/device.py --device cpu --batch 4 --size 96 --maps 3 --repeats 1 \
              --json $R/device-cpu.json ;;
    forward) $PY benchmarks/forward.py --compile --json $R/forward.json ;;
    train) TORCHINDUCTOR_CACHE_DIR=$(mktemp -d) OMP_NUM_THREADS=1 $PY benchmarks/train.py --steps 5 --compile both \
             --json $R/train.json ;;
    profile) OMP_NUM_THREADS=1 $PY benchmarks/profile_train.py --json $R/profile-train.json ;;
    interactions) $PY benchmarks/interactions.py --json $R/interactions.json
                  $PY benchmarks/interactions.py --models bagnet33 --size 224 --images 2 --json $R/interactions-224.json ;;
    memory) OMP_NUM_THREADS=1 $PY benchmarks/memory.py --sizes 128 224 512 --batch 2 --json $R/memory.json ;;
    index) $PY benchmarks/index.py --json $R/index.json ;;
    report) $PY benchmarks/report.py --json $R/report.json ;;
    *) echo "unknown benchmark: $name (heatmap device forward train profile interactions memory index report)" >&2; exit 2 ;;
  esac
done
