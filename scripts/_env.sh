# Sourced by the other scripts: make sure .venv exists and holds bagnet with its dev extras.
# Creates it on first use (torch/torchvision pinned by constraints.txt for this machine).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
STAMP="$VENV/.bagnet-installed"
if [ ! -x "$PY" ] || [ ! -f "$STAMP" ] || [ "$ROOT/pyproject.toml" -nt "$STAMP" ] || [ "$ROOT/constraints.txt" -nt "$STAMP" ]; then
    echo "[bagnet] setting up $VENV (first run takes a few minutes) ..." >&2
    [ -x "$PY" ] || python3 -m venv "$VENV"
    "$PY" -m pip install --quiet --upgrade pip >&2 || true
    "$PY" -m pip install --quiet -c "$ROOT/constraints.txt" -e "$ROOT[dev]" >&2
    touch "$STAMP"
fi

# The project's shared data (../shared/data beside the checkout), said explicitly: bagnet itself only reads
# $BAGNET_DATA or the user's cache.
if [ -z "${BAGNET_DATA:-}" ] && [ -d "$ROOT/../shared/data" ]; then export BAGNET_DATA="$(cd "$ROOT/../shared/data" && pwd)"; fi

# run STEP FILE COMMAND...: run COMMAND when STEP is among "$steps" and FILE (its result) does not exist yet.
run() { local step=$1 file=$2; shift 2
    if [[ " $steps " != *" $step "* ]]; then return; fi
    if [ -f "$file" ]; then echo "[${TAG:-results}] $step: $file exists, skipped"; return; fi
    echo "[${TAG:-results}] $step: $*"; "$@"; }
