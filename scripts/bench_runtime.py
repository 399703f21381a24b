"""Benchmark kiln's runtime on the 135M-shape synthetic checkpoint in headless Chromium: for each
backend, load time (createEngine start to resolved: fetch, verify, compile, upload), and prefill and
decode tokens/s of a ~100-token chat prompt with 32 greedy new tokens. Prints a table; asserts
nothing.

    .venv/bin/python scripts/bench_runtime.py [--work DIR] [--backends webgpu,wasm]
                                              [--quantization q4f32_1] [--rebuild] [--kernels]

--peer compares kiln's WASM backend with wllama (llama.cpp in wasm; versions 3.13.0 and 3.8.1, each
its own engine) on the real SmolLM2-135M-Instruct GGUF instead, in the same headless Chromium:
128-token prompt, 64 greedy tokens, 3 fresh-browser runs per engine at 1 and 2 threads, medians,
kiln/wllama ratios per version (scripts/bench_peer.py says how each number is measured):

    .venv/bin/python scripts/bench_runtime.py --peer [--threads 1,2] [--repeats 3]
                                              [--peers 3.13.0,3.8.1] [--quantization q4f32_1]
                                              [--json peer.json]

--kernels times the model's kernels one by one instead (each compiled into its own function and
called on zero-filled inputs, decode shapes and prefill shapes of the benchmark's prompt), and
prints, per kernel, the rule that scheduled it and its share of a decode and a prefill step; what
the kernels do not add up to is attention in the paged KV cache plus per-call overhead.

The bundle is built once per quantization and per version of the compiler's sources, and kept in
--work (default: bench-runtime/ under kiln's cache folder). On a machine without a GPU, WebGPU runs
on SwiftShader (Chromium's CPU Vulkan), so its numbers measure kernel scheduling, not a GPU.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from kiln import toolchain
from kiln.testing.run_library import HARNESS_DIR, call_in_chromium

VARIANT = "smollm-135m"
# 107 tokens with the checkpoint's ChatML template and its locally trained tokenizer.
PROMPT = ("Explain how a pottery kiln works, step by step. Start with how the clay is prepared and dried, "
          "then describe the bisque firing, the glazing, and the final glaze firing. Say which temperatures "
          "each stage needs, how long the kiln takes to heat up and to cool down, and what goes wrong when "
          "a piece still holds water.")


def ensure_checkpoint(work: Path) -> Path:
    from kiln.testing.synthetic import make_checkpoint

    checkpoint = work / VARIANT
    if not (checkpoint / "config.json").is_file():
        started = time.monotonic()
        make_checkpoint(VARIANT, checkpoint)
        print(f"made the {VARIANT} checkpoint in {time.monotonic() - started:.0f} s")
    return checkpoint


def prepare_bundle(work: Path, quantization: str, context_window: int | None, rebuild: bool) -> Path:
    from kiln.bundle.build import BuildOptions, build_bundle

    checkpoint = ensure_checkpoint(work)
    key = toolchain.compiler_sources_key(f"{VARIANT}/{quantization}/{context_window}")
    bundle = work / f"bundle-{quantization}-{key}"
    if bundle.is_dir() and not rebuild:
        print(f"reusing {bundle}")
        return bundle
    for stale in work.glob(f"bundle-{quantization}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    started = time.monotonic()
    report = build_bundle(BuildOptions(checkpoint=checkpoint, out=bundle, quantization=quantization,
                                       context_window=context_window, force=True),
                          log=lambda *a, **k: None)
    kernels = ", ".join(f"{k} {v:.0f} s" for k, v in report.seconds.items() if k.endswith("kernels"))
    print(f"built {bundle.name} in {time.monotonic() - started:.0f} s ({kernels})")
    return bundle


def stop_token_ids(bundle: Path) -> list[int]:
    config = json.loads((bundle / "kiln-config.json").read_text())
    return list(config["tokens"]["stop_token_ids"])


def run_backend(bundle: Path, backend: str, new_tokens: int, warmup: bool) -> dict:
    # Random weights may pick a stop token early: bias those away so that every run decodes
    # exactly `new_tokens` tokens.
    bias = {str(t): -100 for t in stop_token_ids(bundle)}
    request = {"messages": [{"role": "user", "content": PROMPT}], "temperature": 0,
               "max_tokens": new_tokens, "logit_bias": bias}
    warm = {"messages": [{"role": "user", "content": "Hi"}], "temperature": 0, "max_tokens": 2,
            "logit_bias": bias} if warmup else None
    mounts = {"/": HARNESS_DIR, "/kiln/": toolchain.REPO_ROOT / "runtime_web" / "dist", "/bundle/": bundle}
    started = time.monotonic()
    out = call_in_chromium(mounts, "bench.html", "window.kilnReady === true",
                           "([url, backend, warm, request]) => window.kilnBench(url, backend, warm, request)",
                           ["/bundle/", backend, warm, request], timeout_s=3600)
    out["wallSeconds"] = time.monotonic() - started
    return out


def calls_in(mod, func_name: str) -> dict[str, list]:
    """PrimFunc name -> the call_tir sites of `func_name` that call it (all alike in shape)."""
    import tvm
    from tvm import relax

    call_tir = tvm.ir.Op.get("relax.call_tir")
    sites: dict[str, list] = {}

    def visit(expr):
        if isinstance(expr, relax.Call) and expr.op.same_as(call_tir):
            sites.setdefault(expr.args[0].name_hint, []).append(expr)

    relax.analysis.post_order_visit(mod[func_name].body, visit)
    return sites


def kernel_bench_module(mod, seq_len: int):
    """One Relax function `bench_<kernel>` per kernel called by decode (suffix _d) and prefill
    (_p, with `seq_len` tokens), each calling the scheduled kernel once. Returns the module and,
    per function, its input shapes, its kernel, the calls per step and the rule that scheduled it."""
    from tvm import relax, tirx
    from tvm.sym import Analyzer

    from kiln.kernels.schedules import SCHEDULE_ATTR

    bb = relax.BlockBuilder()
    specs = []
    added = {}
    for step, suffix, length in (("decode", "d", 1), ("prefill", "p", seq_len)):
        analyzer, bound = Analyzer(), set()
        for kernel, sites in calls_in(mod, step).items():
            call = sites[0]
            args = list(call.args[1].fields)
            if not all(isinstance(a.ty, relax.TensorType) for a in args):
                continue

            def concrete(ty):
                # Every symbolic dimension here is the sequence length.
                for dim in ty.shape.values:
                    for v in tirx.analysis.undefined_vars(dim):
                        if v.name not in bound:
                            analyzer.bind(v, tirx.const(length, "int64"))
                            bound.add(v.name)
                return [int(analyzer.simplify(dim)) for dim in ty.shape.values], str(ty.dtype)

            inputs = [concrete(a.ty) for a in args]
            outputs = [concrete(t) for t in call.ty_args]
            if kernel not in added:
                added[kernel] = bb.add_func(mod[kernel], kernel)
            params = [relax.Var(f"a{i}", relax.TensorType(shape, dtype)) for i, (shape, dtype) in enumerate(inputs)]
            name = f"bench_{kernel}_{suffix}"
            with bb.function(name, params):
                out = bb.emit(relax.call_tir(added[kernel], relax.Tuple(params),
                                             [relax.TensorType(s, d) for s, d in outputs]))
                bb.emit_func_output(out)
            attrs = mod[kernel].attrs
            specs.append({"func": name, "kernel": kernel, "step": step, "count": len(sites),
                          "rule": str(attrs[SCHEDULE_ATTR]) if attrs and SCHEDULE_ATTR in attrs else "none",
                          "inputs": [{"shape": s, "dtype": d} for s, d in inputs]})
    return bb.get(), specs


def profile_kernels(args) -> None:
    from kiln.bundle.build import MAX_DEFAULT_CONTEXT, MAX_DEFAULT_PREFILL_CHUNK, library_name
    from kiln.checkpoint.folder import load_checkpoint
    from kiln.kernels.model_module import build_model_module
    from kiln.weights.quantize import get_quantization
    from kiln.kernels.schedules import relax_pipeline, scheduled_kernels
    from kiln.kernels.wasm_library import link_wasm, make_target
    from tvm import relax

    ckpt = load_checkpoint(ensure_checkpoint(args.work))
    context = args.context_window or min(ckpt.model_config.max_position_embeddings, MAX_DEFAULT_CONTEXT)
    seq_len = args.prompt_tokens
    for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
        target = make_target(backend)
        model = build_model_module(ckpt.family, ckpt.model_config, get_quantization(args.quantization), target,
                                   context_window=context, prefill_chunk=min(context, MAX_DEFAULT_PREFILL_CHUNK),
                                   with_sampling=False)
        bench_mod, specs = kernel_bench_module(scheduled_kernels(model.mod, target), seq_len)
        library = args.work / f"kernels-{library_name(backend)}"
        started = time.monotonic()
        executable = relax.build(bench_mod, target=target, relax_pipeline=relax_pipeline(target))
        executable.export_library(str(library), fcompile=link_wasm)
        print(f"compiled {len(specs)} {backend} kernel functions in {time.monotonic() - started:.0f} s", flush=True)
        mounts = {"/": HARNESS_DIR, "/tvmjs/": toolchain.tvmjs_bundle().parent, "/lib/": library.parent,
                  "/kiln/": toolchain.REPO_ROOT / "runtime_web" / "dist"}
        timed = call_in_chromium(mounts, "kernels.html", "window.kilnReady === true",
                                 "([url, backend, kernels, budget]) => window.kilnTimeKernels(url, backend, kernels, budget)",
                                 [f"/lib/{library.name}", backend, specs, 1.0], timeout_s=3600)
        ms = {t["func"]: t["ms"] for t in timed}
        for step in ("decode", "prefill"):
            rows = [s for s in specs if s["step"] == step]
            total = sum(ms[s["func"]] * s["count"] for s in rows)
            tokens = 1 if step == "decode" else seq_len
            print(f"\n{backend} {step} ({tokens} token{'s' * (tokens > 1)}): kernels add up to {total:.1f} ms per step")
            print(f"{'kernel':<32} {'rule':<26} {'calls':>5} {'ms/call':>9} {'ms/step':>9} {'share':>6}")
            for s in sorted(rows, key=lambda s: -ms[s["func"]] * s["count"]):
                per_step = ms[s["func"]] * s["count"]
                print(f"{s['kernel']:<32} {s['rule']:<26} {s['count']:>5} {ms[s['func']]:>9.3f} {per_step:>9.1f} "
                      f"{100 * per_step / total if total else 0:>5.0f}%")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=toolchain.cache_root() / "bench-runtime",
                        help="folder for the checkpoint and the cached bundle")
    parser.add_argument("--backends", default="webgpu,wasm")
    parser.add_argument("--quantization", default="q4f32_1")
    parser.add_argument("--context-window", type=int, help="default: kiln build's (4096 for this model)")
    parser.add_argument("--new-tokens", type=int, help="greedy new tokens (default 32; --peer: 64)")
    parser.add_argument("--no-warmup", action="store_true", help="skip the short warm-up request")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the bundle even if it is cached")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--kernels", action="store_true", help="time each kernel instead of the engine")
    parser.add_argument("--prompt-tokens", type=int,
                        help="prefill length for --kernels (default 107); the prompt's length for --peer (default 128)")
    parser.add_argument("--peer", action="store_true",
                        help="kiln WASM against wllama on the real SmolLM2-135M-Instruct GGUF (scripts/bench_peer.py)")
    parser.add_argument("--threads", default="1,2", help="--peer: thread counts to run each engine at")
    parser.add_argument("--repeats", type=int, default=3, help="--peer: fresh-browser runs per engine and thread count")
    parser.add_argument("--peers", default="3.13.0,3.8.1",
                        help="--peer: the wllama versions to run, each as its own engine (default: both)")
    args = parser.parse_args()

    args.work.mkdir(parents=True, exist_ok=True)
    if args.peer:
        import bench_peer  # scripts/ is this script's folder, first on sys.path

        args.new_tokens = args.new_tokens or 64
        args.prompt_tokens = args.prompt_tokens or 128
        return bench_peer.run_peer(args)
    args.new_tokens = args.new_tokens or 32
    args.prompt_tokens = args.prompt_tokens or 107
    if args.kernels:
        profile_kernels(args)
        return 0
    bundle = prepare_bundle(args.work, args.quantization, args.context_window, args.rebuild)
    rows = []
    for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
        print(f"running {backend} ...", flush=True)
        out = run_backend(bundle, backend, args.new_tokens, warmup=not args.no_warmup)
        if out["adapter"]:
            print(f"  adapter: {out['adapter']}")
        usage = out["usage"]
        rows.append((backend, out["loadSeconds"], usage["extra"]["prefill_tokens"],
                     usage["extra"]["prefill_tokens_per_s"], usage["completion_tokens"],
                     usage["extra"]["decode_tokens_per_s"], out["wallSeconds"]))
        if args.json:
            args.json.write_text(json.dumps({"bundle": str(bundle), "results": rows}, indent=2))

    print(f"\n{VARIANT} {args.quantization}, headless Chromium, greedy")
    header = ("backend", "load s", "prompt tok", "prefill tok/s", "new tok", "decode tok/s", "wall s")
    print("  ".join(f"{h:>13}" for h in header))
    for backend, load, n_prompt, prefill, n_new, decode, wall in rows:
        cells = (backend, f"{load:.1f}", str(n_prompt), f"{prefill:.2f}", str(n_new), f"{decode:.2f}", f"{wall:.0f}")
        print("  ".join(f"{c:>13}" for c in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
