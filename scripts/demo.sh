#!/usr/bin/env bash
# The README's first command: set up (idempotent), then compile a small kernel for WebGPU and
# WASM and run it in Node and in headless Chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec "${KILN_VENV:-$PWD/.venv}/bin/kiln" smoke "$@"
