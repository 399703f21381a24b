"""Where the toolchain pieces live (emcc, Node, Chromium, the built TVM web runtime) and how to
find them; every miss is a one-line ToolchainError that says to run setup."""

from __future__ import annotations

import hashlib
import os
import shutil
from importlib import metadata
from pathlib import Path

from kiln.errors import ToolchainError

REPO_ROOT = Path(__file__).resolve().parents[1]
SETUP_HINT = "run `scripts/setup.sh` to install the toolchain"

# Our own versions of the headers the apache-tvm wheel lacks, and kiln's own runtime unit, laid out
# like a TVM source root.
OVERLAY_DIR = REPO_ROOT / "runtime_web" / "wasm" / "overlay"
WASM_RUNTIME_SCRIPT = REPO_ROOT / "scripts" / "build_wasm_runtime.py"
TVMJS_SCRIPT = REPO_ROOT / "scripts" / "build_tvmjs.py"
NPM_LOCKFILE = REPO_ROOT / "runtime_web" / "package-lock.json"

# The translation units of the web runtime, each compiled to one wasm object file: TVM's three, and
# kiln's web/emcc/kiln_threads.c (in the overlay) built for a shared memory and a private one.
RUNTIME_UNITS = ("wasm_runtime", "tvmjs_support", "webgpu_runtime", "kiln_threads")
# Each unit is built twice (scripts/build_wasm_runtime.py): for a library on a shared memory, with
# atomics and kiln's thread pool (`{unit}.o`), and for one on a private memory, without (`{unit}
# .serial.o`). The serial set is not a nicety: in objects built with atomics, wasm-ld lays out the
# `thread_local`s of a library linked without a shared memory over its read-only data.
SERIAL_SUFFIX = ".serial.o"


def tvm_version() -> str:
    return metadata.version("apache-tvm")


def tvm_package_dir() -> Path:
    import tvm

    return Path(tvm.__file__).resolve().parent


def tvm_ffi_package_dir() -> Path:
    import tvm_ffi

    return Path(tvm_ffi.__file__).resolve().parent


def cache_root() -> Path:
    """Build outputs that outlive a checkout (the compiled runtime) live here."""
    env = os.environ.get("KILN_CACHE_DIR")
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kiln"
    return base


def _digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for path in paths:
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in files:
            h.update(str(f.relative_to(REPO_ROOT)).encode())
            h.update(f.read_bytes() if f.exists() else b"")
    return h.hexdigest()[:12]


def compiler_sources_key(tag: str) -> str:
    """Changes whenever `tag` or the compiler's or model definitions' sources change: the key under
    which a cached bundle (the demo's, the benchmark's) stays valid."""
    h = hashlib.sha256(tag.encode())
    h.update(_digest([p for folder in ("compiler", "model_defs") for p in sorted((REPO_ROOT / folder).rglob("*"))
                      if p.suffix in (".py", ".json") and p.is_file()]).encode())
    return h.hexdigest()[:12]


def web_runtime_dir() -> Path:
    """Compiled C++ runtime objects, keyed by the TVM version and by our headers and build script."""
    key = _digest([OVERLAY_DIR, WASM_RUNTIME_SCRIPT])
    return cache_root() / "web-runtime" / f"tvm-{tvm_version()}-{key}"


def tvmjs_dir() -> Path:
    """The bundled tvmjs TypeScript runtime; it embeds the emcc glue of the C++ runtime build."""
    key = _digest([TVMJS_SCRIPT, NPM_LOCKFILE])
    return web_runtime_dir() / f"tvmjs-{key}"


def runtime_objects(threads: bool = False) -> list[Path]:
    """The runtime objects a library links: with kiln's thread pool (for a shared memory) or not."""
    objects = [web_runtime_dir() / (f"{unit}.o" if threads else f"{unit}{SERIAL_SUFFIX}") for unit in RUNTIME_UNITS]
    missing = [o.name for o in objects if not o.is_file()]
    if missing:
        raise ToolchainError(
            f"the TVM web runtime is not built (missing {', '.join(missing)}); {SETUP_HINT}."
        )
    return objects


def tvmjs_bundle() -> Path:
    bundle = tvmjs_dir() / "tvmjs.bundle.mjs"
    if not bundle.is_file():
        raise ToolchainError(f"the tvmjs runtime bundle is not built; {SETUP_HINT}.")
    return bundle


def find_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ToolchainError(f"`{name}` was not found on PATH; {SETUP_HINT}.")
    return path


def emcc_env() -> dict[str, str]:
    """Debian's emcc runs an acorn-based optimizer from /usr/share/nodejs, which Node does not
    search by default (symptom: `Cannot find module 'acorn'` at link time)."""
    env = dict(os.environ)
    paths = [p for p in env.get("NODE_PATH", "").split(os.pathsep) if p]
    if "/usr/share/nodejs" not in paths:
        paths.append("/usr/share/nodejs")
    env["NODE_PATH"] = os.pathsep.join(paths)
    return env


def chromium_path() -> str:
    env = os.environ.get("KILN_CHROMIUM")
    if env:
        if not Path(env).is_file():
            raise ToolchainError(f"KILN_CHROMIUM points at {env}, which does not exist; {SETUP_HINT}.")
        return env
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    raise ToolchainError(f"Chromium was not found on PATH; {SETUP_HINT}.")
