#!/usr/bin/env bash
# The README's test command: set up (idempotent), then run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec "${KILN_VENV:-$PWD/.venv}/bin/python" -m pytest "$@"
