#!/usr/bin/env bash
# One idempotent setup for a fresh Debian 12 machine (run as root, or with sudo available):
# Debian packages, the Python venv with kiln and its test (or demo) dependencies, the npm dependencies from
# the committed lockfile, and TVM's web runtime (C++ -> wasm objects, tvmjs bundle), cached by
# TVM version. A second run with nothing changed only checks stamps.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${KILN_VENV:-$ROOT/.venv}
PYTHON=${PYTHON:-python3}
# kiln's optional dependency set: "test" (torch, Playwright, ... for the test suite) or "demo" (what
# `kiln demo` needs, no torch; scripts/demo.sh asks for it). A venv with "test" has all of "demo".
EXTRAS=${KILN_EXTRAS:-test}

step() { printf '\n== %s\n' "$*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
hash_of() { cat "$@" | sha256sum | cut -c1-16; }

step "Debian packages"
missing=()
command -v emcc >/dev/null || missing+=(emscripten)
command -v chromium >/dev/null || missing+=(chromium)
command -v node >/dev/null || missing+=(nodejs npm)
"$PYTHON" -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "emscripten, chromium, node: present"
fi
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "error[toolchain]: kiln needs Python >= 3.11; set PYTHON=/path/to/python3.11 and re-run scripts/setup.sh." >&2; exit 1; }

step "Python environment ($VENV)"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
stamp="$VENV/.kiln-installed"
want=$(hash_of pyproject.toml)
have=$(cat "$stamp" 2>/dev/null || true)
if [ "$have" != "$want test" ] && [ "$have" != "$want $EXTRAS" ]; then
  # torch==2.13.0 resolves to the local CPU wheel; the pin keeps CUDA packages out.
  "$VENV/bin/pip" install -q -e ".[$EXTRAS]"
  echo "$want $EXTRAS" > "$stamp"
else
  echo "up to date"
fi

step "npm dependencies (runtime_web, from package-lock.json)"
stamp=runtime_web/node_modules/.kiln-installed
want=$(hash_of runtime_web/package-lock.json)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  (cd runtime_web && npm ci --no-audit --no-fund --loglevel=error)
  echo "$want" > "$stamp"
else
  echo "up to date"
fi

step "TVM web runtime (cached per TVM version)"
"$VENV/bin/python" scripts/build_wasm_runtime.py
"$VENV/bin/python" scripts/build_tvmjs.py

step "kiln web runtime (runtime_web/dist)"
(cd runtime_web && npm run --silent build)
echo "built runtime_web/dist/kiln.mjs"

step "setup done"
