"""Relax IRModule -> one linked `.wasm` model library, for WebGPU kernels (wasm32 host) or for
pure WASM CPU kernels (simd128).

TVM's LLVM emits bitcode that Debian's wasm-ld 14 cannot read, so the compiled module is saved as
wasm *object* files and linked with emcc against the runtime objects prebuilt by
`scripts/build_wasm_runtime.py`.

The WASM CPU library imports a *shared* memory and carries kiln's thread pool (kiln_threads.c), so
that helper threads can run the same kernels on the same memory; emcc 3.1.6 refuses pthreads in a
standalone library, so the linker is asked for the shared memory directly. Where a page cannot have
a shared memory, the runtime loads the library with the import marked private (wasm_memory.ts).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from pathlib import Path

from kiln import toolchain
from kiln.errors import InternalCompilerError, KilnError, describe_exception
from kiln.staging import move_file

WASM_HOST = {"kind": "llvm", "mtriple": "wasm32-unknown-unknown-wasm"}
TARGETS = {
    "webgpu": {"kind": "webgpu", "host": WASM_HOST},
    "wasm": {**WASM_HOST, "mattr": ["+simd128", "+atomics", "+bulk-memory"]},
}
# Libraries whose kernels may run on several threads (see the module docstring).
THREADED_TARGETS = ("wasm",)
# emcc's libc and libc++ are built without atomics, and wasm-ld refuses such objects in a shared
# memory unless told not to check. That is sound here: only the calling thread runs them (allocation,
# I/O, the TVM runtime); helper threads run nothing but kernel tasks (kiln_threads.c).
SHARED_MEMORY_FLAGS = ["-Wl,--shared-memory", "-Wl,--import-memory", "-Wl,--no-check-features"]

# Link flags for a library that tvmjs instantiates through its WASI polyfill; the optimization
# level comes from link_level().
LINK_FLAGS = [
    "--no-entry",
    "-s", "WASM_BIGINT=1",
    "-s", "STANDALONE_WASM=1",
    "-s", "ALLOW_MEMORY_GROWTH=1",
    "-s", "ERROR_ON_UNDEFINED_SYMBOLS=0",
]


class UnknownTargetError(KilnError):
    code = "target"


def make_target(name: str):
    import tvm

    if name not in TARGETS:
        raise UnknownTargetError(
            f"unknown target {name!r}; choose one of: {', '.join(sorted(TARGETS))}."
        )
    return tvm.target.Target(TARGETS[name])


# binaryen at -O2 makes a library about 40 % smaller (a tiny model's: 6.6 -> 3.9 MB) without the
# ~50 s more that -O3 costs; -O2 itself costs ~50 s a library on 2 cores and leaves TVM's kernels
# as LLVM compiled them. KILN_LINK_OPT=-O1 trades the size for that time (the test suite does).
LINK_LEVEL_ENV = "KILN_LINK_OPT"
LINK_LEVELS = ("-O0", "-O1", "-O2", "-O3", "-Os", "-Oz")


def link_level() -> str:
    level = os.environ.get(LINK_LEVEL_ENV, "-O2")
    if level not in LINK_LEVELS:
        raise KilnError(f"{LINK_LEVEL_ENV}={level!r} is not an emcc optimization level; use one of {', '.join(LINK_LEVELS)} or unset it.")
    return level


def link_wasm(output: str | os.PathLike, objects: list[str], options=None, threads: bool = False) -> None:
    """emcc link of compiled model objects with the prebuilt TVM web runtime objects; `threads`
    links kiln's thread pool and a shared memory."""
    emcc = toolchain.find_tool("emcc")
    runtime = [str(p) for p in (toolchain.runtime_objects(threads=True) if threads else toolchain.runtime_objects())]
    preload = toolchain.tvm_package_dir() / "web" / "emcc" / "preload.js"
    # Emit the .wasm beside emcc's JS glue in a scratch dir, then keep only the .wasm. The scratch
    # dir sits beside the output (not in $TMPDIR, often another filesystem) so the move is a rename.
    output = Path(output)
    with tempfile.TemporaryDirectory(prefix=".kiln-link-", dir=output.parent) as scratch:
        glue = Path(scratch) / "library.js"
        cmd = [emcc, link_level(), *LINK_FLAGS, *(SHARED_MEMORY_FLAGS if threads else []),
               "--pre-js", str(preload), "-o", str(glue), *runtime, *objects]
        cmd += list(options or [])
        proc = subprocess.run(cmd, env=toolchain.emcc_env(), capture_output=True, text=True)
        if proc.returncode != 0:
            raise KilnError(f"emcc failed to link the model library:\n{proc.stdout}{proc.stderr}")
        move_file(glue.with_suffix(".wasm"), output)


link_wasm.object_format = "o"  # read by tvm's export_library: save modules as wasm objects


def linker_for(target: str):
    """export_library's `fcompile` for a library of `target`."""
    def link(output, objects, options=None):
        link_wasm(output, objects, options, threads=target in THREADED_TARGETS)

    link.object_format = link_wasm.object_format
    return link


@contextlib.contextmanager
def _passes_tracked():
    """Run the body in a copy of the current PassContext that also keeps the stack of running
    passes; the list it yields ends with the innermost pass of a failure (TVM's errors do not say)."""
    import tvm

    running: list[str] = []

    @tvm.instrument.pass_instrument
    class Track:
        def run_before_pass(self, _mod, info):
            running.append(info.name)

        def run_after_pass(self, _mod, _info):
            running.pop()

    outer = tvm.transform.PassContext.current()
    with tvm.transform.PassContext(opt_level=outer.opt_level, required_pass=list(outer.required_pass),
                                   disabled_pass=list(outer.disabled_pass), config=dict(outer.config),
                                   instruments=[*outer.instruments, Track()]):
        yield running


def build_wasm_library(mod, target: str, out: str | os.PathLike) -> Path:
    """Compile `mod` for `target` ("webgpu" or "wasm") and write the linked library to `out`.

    The output is written to a temporary name and renamed into place, so a failure leaves nothing.
    """
    from tvm import relax

    from kiln.kernels.schedules import relax_pipeline

    tvm_target = make_target(target)
    # Check the toolchain before spending seconds in relax.build.
    toolchain.find_tool("emcc")
    toolchain.runtime_objects(threads=target in THREADED_TARGETS)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # TVM's stock pipeline for the target, with kiln's kernel scheduling (compiler/kernels/schedules.py).
    with _passes_tracked() as running:
        try:
            executable = relax.build(mod, target=tvm_target, relax_pipeline=relax_pipeline(tvm_target))
        except KilnError:
            raise
        except Exception as err:
            stage = f"TVM pass {running[-1]}" if running else "TVM's relax.build"
            raise InternalCompilerError(describe_exception(err), target=target, stage=stage) from err
    partial = out.with_name(f".{out.name}.partial")
    try:
        executable.export_library(str(partial), fcompile=linker_for(target))
        move_file(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    return out
