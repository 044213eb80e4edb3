#!/usr/bin/env bash
# The main job on the embedded default (creates .venv on first use). Extra arguments go to the command.
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
exec "$VENV/bin/bagnet" selfcheck "$@"
