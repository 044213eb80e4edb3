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
