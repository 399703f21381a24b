"""Build the web runtime (TVM's three C++ units and kiln's threads unit as wasm object files, plus
emcc's JS glue) into the kiln cache.

The apache-tvm wheel ships the runtime sources but not a TVM source tree: the sources live in the
`tvm` and `tvm_ffi` packages, and nine headers are missing altogether (kiln's own versions are in
runtime_web/wasm/overlay). This script assembles a source root from those pieces in a temporary
folder, compiles `web/emcc/{wasm_runtime,tvmjs_support,webgpu_runtime}.cc` and the overlay's
`web/emcc/kiln_threads.c` to wasm objects, links them once to get the JS glue tvmjs imports, and
publishes everything to web_runtime_dir().

Every unit is compiled twice. `{unit}.o` has WebAssembly atomics and bulk memory, so that a WASM
model library can be linked with a shared memory (kernels/wasm_library.py); its `thread_local`s
then need a block per thread, which kiln_threads.c (built with KILN_THREADS) sets up.
`{unit}.serial.o` has neither, for libraries on a private memory (WebGPU): linked without a shared
memory, wasm-ld places the `thread_local`s of atomics objects over the library's read-only data
(WebGPU's workspace pool, a `thread_local`, then read strings as pointers). TVM's serial
TVMBackendParallelLaunch/Barrier in wasm_runtime.cc are renamed out of the way by the preprocessor
in both: kiln_threads.c defines them (serially without KILN_THREADS).

Run as `python scripts/build_wasm_runtime.py [--force]`. Objects, not LLVM bitcode: TVM's LLVM
writes bitcode newer than Debian emcc's wasm-ld can read, so model libraries are wasm objects and
the runtime must be too.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kiln.toolchain import (
    OVERLAY_DIR,
    RUNTIME_UNITS,
    SERIAL_SUFFIX,
    ToolchainError,
    emcc_env,
    find_tool,
    tvm_ffi_package_dir,
    tvm_package_dir,
    web_runtime_dir,
)

GLUE_JS = "tvmjs_runtime.js"
GLUE_WASM = "tvmjs_runtime.wasm"
WASI_JS = "tvmjs_runtime_wasi.js"
OUTPUTS = (tuple(f"{unit}.o" for unit in RUNTIME_UNITS) + tuple(f"{unit}{SERIAL_SUFFIX}" for unit in RUNTIME_UNITS)
           + (GLUE_JS, GLUE_WASM, WASI_JS))

# The wheel's web/Makefile flags, with the include paths relative to an assembled source root.
THREAD_FLAGS = ["-matomics", "-mbulk-memory"]
CXXFLAGS = ["-O3", "-std=c++17", "-Wno-ignored-attributes"]
CFLAGS = ["-O3", "-std=c11"]
SOURCES = {
    "wasm_runtime": ("web/emcc/wasm_runtime.cc", CXXFLAGS + [
        "-DTVMBackendParallelLaunch=TVMBackendParallelLaunchSerial",
        "-DTVMBackendParallelBarrier=TVMBackendParallelBarrierSerial"]),
    "tvmjs_support": ("web/emcc/tvmjs_support.cc", CXXFLAGS),
    "webgpu_runtime": ("web/emcc/webgpu_runtime.cc", CXXFLAGS),
    "kiln_threads": ("web/emcc/kiln_threads.c", CFLAGS),
}  # fmt: skip
assert set(SOURCES) == set(RUNTIME_UNITS)
# object file -> (unit, extra flags): the threaded and the serial build of every unit
OBJECTS = {**{f"{unit}.o": (unit, THREAD_FLAGS + (["-DKILN_THREADS=1"] if unit == "kiln_threads" else []))
              for unit in RUNTIME_UNITS},
           **{f"{unit}{SERIAL_SUFFIX}": (unit, []) for unit in RUNTIME_UNITS}}
LDFLAGS = [
    "-O3",
    "--no-entry",
    "-s", "WASM_BIGINT=1",
    "-s", "STANDALONE_WASM=1",
    "-s", "ALLOW_MEMORY_GROWTH=1",
    "-s", "ERROR_ON_UNDEFINED_SYMBOLS=0",
]  # fmt: skip


def include_flags(root: Path) -> list[str]:
    dirs = [
        root,
        root / "include",
        root / "3rdparty/tvm-ffi/include",
        root / "3rdparty/tvm-ffi/3rdparty/dlpack/include",
        root / "3rdparty/compiler-rt",
    ]
    return [f"-I{d}" for d in dirs]


def mirror(src: Path, dst: Path) -> None:
    """Lay `src` into `dst`: real directories, one symlink per file; a file already at `dst`
    is replaced, so the last tree mirrored wins.

    Directories are real rather than symlinked because the sources climb out of them with
    `#include "../../support/x.h"`, and the OS resolves `..` after following a directory symlink,
    i.e. inside the installed package, where src/support does not exist.
    """
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        rel = Path(dirpath).relative_to(src)
        (dst / rel).mkdir(parents=True, exist_ok=True)
        for name in filenames:
            link = dst / rel / name
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(Path(dirpath, name).resolve())


def assemble_source_root(root: Path) -> None:
    tvm_dir = tvm_package_dir()
    ffi_dir = tvm_ffi_package_dir()
    layers = [
        (tvm_dir / "include", root / "include"),
        (tvm_dir / "src", root / "src"),
        (tvm_dir / "web", root / "web"),
        (ffi_dir / "include", root / "3rdparty/tvm-ffi/include"),
        (ffi_dir / "src", root / "3rdparty/tvm-ffi/src"),
        (ffi_dir / "3rdparty/dlpack", root / "3rdparty/tvm-ffi/3rdparty/dlpack"),
        (OVERLAY_DIR, root),  # last, so our headers win over anything of the same path
    ]
    for src, dst in layers:
        if not src.is_dir():
            raise ToolchainError(
                f"the TVM packages lack {src}; reinstall apache-tvm and apache-tvm-ffi."
            )
        mirror(src, dst)


def compile_units(emcc: str, root: Path, out_dir: Path) -> None:
    """Compile every object of OBJECTS, as many at a time as there are CPUs."""
    env = emcc_env()
    jobs = max(1, min(len(OBJECTS), os.cpu_count() or 1))
    # The two wasm_runtime builds first: by far the largest, start them early.
    pending = sorted(OBJECTS, key=lambda obj: OBJECTS[obj][0] != "wasm_runtime")
    running: dict[str, tuple[subprocess.Popen, float, Path]] = {}
    try:
        while pending or running:
            while pending and len(running) < jobs:
                obj = pending.pop(0)
                unit, extra = OBJECTS[obj]
                log = out_dir / f"{obj}.log"
                source, flags = SOURCES[unit]
                cmd = [emcc, *flags, *extra, *include_flags(root), "-c", str(root / source),
                       "-o", str(out_dir / obj)]  # fmt: skip
                with open(log, "wb") as log_file:
                    # Own process group: emcc is a wrapper around clang, and stopping a build
                    # must stop the clang too, not orphan it.
                    proc = subprocess.Popen(
                        cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env,
                        start_new_session=True,
                    )  # fmt: skip
                running[obj] = (proc, time.monotonic(), log)
                print(f"  compiling {source} into {obj}", flush=True)
            time.sleep(0.2)
            for obj, (proc, start, log) in list(running.items()):
                if proc.poll() is None:
                    continue
                del running[obj]
                if proc.returncode != 0:
                    sys.stderr.write(log.read_text(errors="replace"))
                    raise SystemExit(f"error: compiling {SOURCES[OBJECTS[obj][0]][0]} into {obj} failed "
                                     f"(exit {proc.returncode})")
                print(f"  {obj}  {time.monotonic() - start:.0f}s", flush=True)
    finally:
        for proc, _, _ in running.values():  # on failure or Ctrl-C, stop the other compilers
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
    for obj in OBJECTS:
        (out_dir / f"{obj}.log").unlink()


def link_glue(emcc: str, root: Path, out_dir: Path) -> None:
    """Link the objects once to get emcc's JS glue, then wrap it the way tvmjs imports it."""
    objects = [f"{unit}{SERIAL_SUFFIX}" for unit in RUNTIME_UNITS]  # a private memory
    cmd = [emcc, *LDFLAGS, "--pre-js", str(root / "web/emcc/preload.js"), "-o", GLUE_JS, *objects]
    run_checked(cmd, out_dir, "linking the runtime", env=emcc_env())
    decorate = root / "web/emcc/decorate_as_wasi.py"
    cmd = [sys.executable, str(decorate), GLUE_JS, WASI_JS, "es"]
    run_checked(cmd, out_dir, "decorating the glue")


def run_checked(cmd: list[str], cwd: Path, what: str, env: dict[str, str] | None = None) -> None:
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout.decode(errors="replace"))
        raise SystemExit(f"error: {what} failed (exit {proc.returncode})")
    print(f"  {what}  {time.monotonic() - start:.0f}s", flush=True)


def publish(staging: Path, final: Path) -> None:
    """Swap the finished build into place with renames, so `final` is only ever complete."""
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        final.rename(old)
        staging.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(final)


def build(final: Path) -> None:
    emcc = find_tool("emcc")
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the published cache should not be
    try:
        with tempfile.TemporaryDirectory(prefix="kiln-tvm-root-") as tmp:
            root = Path(tmp)
            assemble_source_root(root)
            started = time.monotonic()
            print(f"building the TVM web runtime into {final}", flush=True)
            compile_units(emcc, root, staging)
            link_glue(emcc, root, staging)
        missing = [name for name in OUTPUTS if not (staging / name).is_file()]
        if missing:
            raise SystemExit(f"error: the build did not produce {', '.join(missing)}")
        publish(staging, final)
        print(f"web runtime built in {time.monotonic() - started:.0f}s: {final}", flush=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already if published


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--force", action="store_true", help="rebuild even if the cached build is complete"
    )
    args = parser.parse_args(argv)
    # Let a plain `kill` clean up like Ctrl-C: unwind, stop the compilers, drop the staging dir.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        final = web_runtime_dir()
        if not args.force and all((final / name).is_file() for name in OUTPUTS):
            print(f"web runtime up to date: {final}")
            return 0
        build(final)
    except ToolchainError as err:
        print(err, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; nothing was written to the cache", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
