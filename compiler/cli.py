"""The `kiln` command line."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from .errors import KilnError


def cmd_smoke(args: argparse.Namespace) -> int:
    """Compile the smoke module for both targets and run it: WASM in Node, WebGPU in Chromium."""
    import numpy as np

    from . import smoke
    from .run_library import describe_adapter, run_in_chromium, run_in_node
    from .wasm_library import build_wasm_library

    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="kiln-smoke-"))
    mod = smoke.dense_softmax_module()
    rng = np.random.default_rng(0)
    w = rng.standard_normal((smoke.HIDDEN, smoke.CLASSES)).astype("float32")
    b = rng.standard_normal((smoke.CLASSES,)).astype("float32")
    runners = {"wasm": ("Node (WASM CPU)", run_in_node, "cpu"),
               "webgpu": ("Chromium (WebGPU)", run_in_chromium, "webgpu")}
    for target, (where, run, device) in runners.items():
        started = time.monotonic()
        library = build_wasm_library(mod, target, out / f"smoke_{target}.wasm")
        print(f"compiled {library} for {target} in {time.monotonic() - started:.1f} s")
        for n in (3, 17):
            x = rng.standard_normal((n, smoke.HIDDEN)).astype("float32")
            request = {"device": device, "func": "main",
                       "inputs": [smoke.tensor_arg(a) for a in (x, w, b)]}
            result = run(library, request)
            diff = np.abs(smoke.output_array(result["outputs"][0]) - smoke.softmax_reference(x, w, b)).max()
            print(f"  {where}, {describe_adapter(result['adapter'])}: n={n} max |kiln - numpy| = {diff:.2e}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kiln", description="Compile LLMs to WebGPU / WASM web bundles.")
    sub = parser.add_subparsers(dest="command", required=True)
    smoke = sub.add_parser("smoke", help="compile a small kernel for WebGPU and WASM and run it in Node and Chromium")
    smoke.add_argument("--out", help="folder for the compiled libraries (default: a temporary folder)")
    smoke.set_defaults(func=cmd_smoke)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KilnError as err:
        print(err, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
