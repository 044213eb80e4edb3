#!/usr/bin/env bash
# The test suite (creates .venv on first use). Extra arguments go to pytest.
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
cd "$ROOT"
exec "$VENV/bin/python" -m pytest "$@"
