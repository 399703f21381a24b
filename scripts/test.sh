#!/usr/bin/env bash
# The README's test command: set up (idempotent), type-check the web runtime, then run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# The web runtime's TypeScript (src, demo, test) type-checks strictly first: a type error fails the run.
(cd runtime_web && npm run --silent typecheck)
# Two pytest-xdist workers (KILN_TEST_WORKERS; 0 runs in this process), one test file per worker at
# a time, in the order tests/conftest.py gives (heaviest first).
exec "${KILN_VENV:-$PWD/.venv}/bin/python" -m pytest -n "${KILN_TEST_WORKERS:-2}" --dist loadgroup \
  --no-loadscope-reorder "$@"
