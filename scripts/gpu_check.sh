#!/usr/bin/env bash
# Everything the README claims for GPUs, on the GPU of this machine: the `cuda` tests, then the GPU benchmarks
# (benchmarks/device.py, heatmap.py, forward.py and train.py with --device cuda), each writing its result file into
# OUT (default benchmarks/results; the README renders benchmarks/results/*-cuda.json with
# `python scripts/readme_figures.py`). Sized for a lent machine: every step has its own time limit and all of them
# together stay under 12 minutes on an H100/H200; nothing needs the data in ../shared.
# Without a GPU that PyTorch can use it says so, skips everything and writes nothing (exit 0).
# Usage: bash scripts/gpu_check.sh [OUT]      (PYTHON=python3 where there is no .venv, as on a lent machine)
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
OUT=${1:-benchmarks/results}
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if ! gpu=$("$PY" -c "import torch, sys; sys.exit(1) if not torch.cuda.is_available() else print(torch.cuda.get_device_name(0))" 2>/dev/null); then
    echo "[gpu_check] no GPU that PyTorch can use here: skipped the cuda tests and the GPU benchmarks; nothing written"
    exit 0
fi
echo "[gpu_check] $gpu; results into $OUT"
mkdir -p "$OUT"
status=0
step() {  # step LIMIT_SECONDS NAME COMMAND...: run one step under its own limit, go on after a failure
    local limit=$1 name=$2; shift 2
    echo "[gpu_check] $name ($(date -u +%H:%M:%S) UTC, limit ${limit} s): $*"
    timeout "$limit" "$@" || { echo "[gpu_check] $name FAILED (exit $?)"; status=1; }
}
limit=$("$PY" -c "import pytest_timeout" 2>/dev/null && echo "--timeout 200")  # the plugin may be missing there
step 240 tests "$PY" -m pytest -m cuda tests/test_cuda.py -q -rs -p no:cacheprovider $limit
step 150 device "$PY" benchmarks/device.py --device cuda --batch 256 --size 224 --maps 16 --repeats 3 \
    --json "$OUT/device-cuda.json"
step 90 heatmap "$PY" benchmarks/heatmap.py --device cuda --repeats 3 --ref-patches 2000 --json "$OUT/heatmap-cuda.json"
step 90 forward "$PY" benchmarks/forward.py --device cuda --batches 1 64 --json "$OUT/forward-cuda.json"
step 120 train "$PY" benchmarks/train.py --device cuda --steps 5 --json "$OUT/train-cuda.json"
echo "[gpu_check] done (exit $status); files: $(ls "$OUT"/*-cuda.json 2>/dev/null | tr '\n' ' ')"
exit $status
