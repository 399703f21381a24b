"""Bundle the tvmjs TypeScript runtime shipped in the apache-tvm wheel (`tvm/web/src`) into one
ES module, `tvmjs.bundle.mjs`, that both Node and the browser import.

tvmjs imports `tvmjs_runtime_wasi.js` (emcc's JS glue wrapped as a WASI provider), which
`build_wasm_runtime.py` produced, so that script runs first. esbuild comes from runtime_web's
committed npm lockfile.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kiln import toolchain
from kiln.errors import KilnError, ToolchainError

# Node-only modules that tvmjs requires lazily (RPC websockets, old-Node timers); never bundled.
NODE_EXTERNALS = ["ws", "perf_hooks", "fs", "path", "crypto", "url", "worker_threads"]


def build(force: bool = False) -> Path:
    out_dir = toolchain.tvmjs_dir()
    bundle = out_dir / "tvmjs.bundle.mjs"
    if bundle.is_file() and not force:
        print(f"tvmjs bundle up to date: {bundle}")
        return bundle
    glue = toolchain.web_runtime_dir() / "tvmjs_runtime_wasi.js"
    if not glue.is_file():
        raise ToolchainError(f"the TVM web runtime is not built; {toolchain.SETUP_HINT}.")
    esbuild = toolchain.REPO_ROOT / "runtime_web" / "node_modules" / ".bin" / "esbuild"
    if not esbuild.exists():
        raise ToolchainError(f"esbuild is not installed in runtime_web/node_modules; {toolchain.SETUP_HINT}.")

    started = time.monotonic()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=".tvmjs-") as work:
        src = Path(work) / "src"
        shutil.copytree(toolchain.tvm_package_dir() / "web" / "src", src)
        shutil.copy(glue, src / "tvmjs_runtime_wasi.js")
        staged = Path(work) / "out"
        staged.mkdir()
        cmd = [str(esbuild), str(src / "index.ts"), "--bundle", "--format=esm", "--platform=neutral",
               "--target=es2020", "--log-level=warning", f"--outfile={staged / 'tvmjs.bundle.mjs'}"]
        cmd += [f"--external:{name}" for name in NODE_EXTERNALS]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise KilnError(f"esbuild failed to bundle tvmjs:\n{proc.stdout}{proc.stderr}")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staged.rename(out_dir)
    print(f"built tvmjs bundle in {time.monotonic() - started:.1f} s: {bundle}")
    return bundle


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="rebuild even if the bundle exists")
    args = parser.parse_args()
    try:
        build(force=args.force)
    except KilnError as err:
        print(err, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
