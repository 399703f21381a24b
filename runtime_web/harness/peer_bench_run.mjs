// Page driver of scripts/bench_runtime.py --peer (scripts/bench_peer.py): loads one engine, kiln
// (WASM backend) or one version of wllama (llama.cpp in wasm, CPU only), and times one streamed
// raw-prompt request the same way for every engine. The page's server maps /kiln/ to
// runtime_web/dist, each wllama version's package folder under node_modules to its own prefix
// (spec.wllamaBase, e.g. /wllama-3.13.0/ and /wllama-3.8.1/), /bundle/ to the kiln bundle and
// /models/ to the GGUF file's folder.
import { createEngine } from "/kiln/kiln.mjs";

const now = () => performance.now() / 1000;

/**
 * Times one streamed request. `start()` begins it and gives the chunks (an async iterable); `textOf`
 * reads a chunk's text. The first token is the first chunk that carries text: prefill runs from the
 * request to it, decode from it to the end of the stream.
 */
async function timeStream(start, textOf) {
  const requested = now();
  let first = null;
  let chunks = 0;
  let text = "";
  let last = null;
  for await (const chunk of await start()) {
    const piece = textOf(chunk);
    if (piece) {
      if (first === null) first = now();
      chunks += 1;
      text += piece;
    }
    last = chunk;
  }
  const ended = now();
  return { firstTokenSeconds: first - requested, afterFirstSeconds: ended - first, textChunks: chunks, text, last };
}

/** Callback-style streaming (wllama's onData) as an async iterable. */
function callbackStream(run) {
  const queue = [];
  let done = false;
  let failure = null;
  let wake = null;
  const push = (item) => { queue.push(item); wake?.(); };
  run(push).then(() => { done = true; wake?.(); }, (err) => { failure = err; done = true; wake?.(); });
  return {
    async *[Symbol.asyncIterator]() {
      for (;;) {
        while (queue.length === 0 && !done) await new Promise((r) => { wake = r; });
        wake = null;
        while (queue.length) yield queue.shift();
        if (done) {
          if (failure) throw failure;
          return;
        }
      }
    },
  };
}

function rates(promptTokens, newTokens, timed) {
  return {
    prefillTokensPerS: promptTokens / timed.firstTokenSeconds,
    decodeTokensPerS: newTokens > 1 ? (newTokens - 1) / timed.afterFirstSeconds : null,
  };
}

async function runKiln(spec) {
  const started = now();
  const engine = await createEngine(spec.bundleUrl, { backend: "wasm", cache: "none", threads: spec.threads });
  const loadSeconds = now() - started;
  try {
    const request = { prompt: spec.prompt, temperature: 0, max_tokens: spec.newTokens, logit_bias: spec.logitBias };
    if (spec.warmup) {
      await engine.completions.create({ ...request, prompt: spec.warmupPrompt, max_tokens: 2 });
    }
    engine.resetChat(); // no prefix of the prompt stays in the KV cache
    const timed = await timeStream(() => engine.completions.create({ ...request, stream: true }),
                                   (c) => c.choices?.[0]?.text ?? "");
    const usage = timed.last.usage;
    return {
      loadSeconds,
      threadsUsed: engine.threads ?? 1, // an engine without the option runs one thread
      threadsInfo: { engineThreads: engine.threads ?? null, usageThreads: usage.extra?.threads ?? null },
      promptTokens: usage.prompt_tokens,
      newTokens: usage.completion_tokens,
      finishReason: timed.last.choices?.[0]?.finish_reason ?? null,
      ...rates(usage.prompt_tokens, usage.completion_tokens, timed),
      engineReported: { prefillTokensPerS: usage.extra?.prefill_tokens_per_s ?? null,
                        decodeTokensPerS: usage.extra?.decode_tokens_per_s ?? null },
      timing: { firstTokenSeconds: timed.firstTokenSeconds, afterFirstSeconds: timed.afterFirstSeconds,
                textChunks: timed.textChunks },
      text: timed.text,
    };
  } finally {
    engine.unload();
  }
}

async function runWllama(spec) {
  // Versions 3.8.1 and 3.13.0 take the same calls: new Wllama({default: wasm URL}, config),
  // loadModelFromUrl(url, LoadModelParams & {useCache}), createCompletion(OpenAI-style raw completion
  // params, passed on to llama.cpp's server code as JSON, so llama-server's cache_prompt works too).
  // The module is imported before the load clock starts, as kiln's is (a static import).
  const { Wllama } = await import(`${spec.wllamaBase}esm/index.js`);
  const logs = [];
  const keep = (level) => (...args) => logs.push(`${level}: ${args.map((a) => typeof a === "string" ? a : JSON.stringify(a)).join(" ")}`);
  const logger = { debug: keep("debug"), log: keep("log"), warn: keep("warn"), error: keep("error") };
  const started = now();
  const wllama = new Wllama({ default: `${spec.wllamaBase}esm/wasm/wllama.wasm` }, { logger });
  await wllama.loadModelFromUrl(spec.ggufUrl, {
    useCache: false, n_threads: spec.threads, n_gpu_layers: 0, n_ctx: spec.contextWindow,
  });
  const loadSeconds = now() - started;
  try {
    const info = wllama.getLoadedContextInfo();
    const bias = { ...spec.logitBias };
    for (const id of info.list_tokens_eog ?? []) bias[String(id)] = -100;
    const request = { prompt: spec.prompt, temperature: 0, max_tokens: spec.newTokens, n_predict: spec.newTokens,
                      logit_bias: bias, cache_prompt: false };
    if (spec.warmup) {
      await wllama.createCompletion({ ...request, prompt: spec.warmupPrompt, max_tokens: 2, n_predict: 2 });
    }
    const timed = await timeStream(
      () => callbackStream((onData) => wllama.createCompletion({ ...request, stream: true, onData })),
      (c) => c.choices?.[0]?.text ?? "");
    const last = timed.last;
    const timings = last.timings ?? {};
    const promptTokens = last.usage?.prompt_tokens ?? timings.prompt_n + (timings.cache_n ?? 0);
    const newTokens = last.usage?.completion_tokens ?? timings.predicted_n;
    return {
      loadSeconds,
      threadsUsed: wllama.getNumThreads(),
      threadsInfo: { multithread: wllama.isMultithread(), numThreads: wllama.getNumThreads(),
                     libllama: typeof Wllama.getLibllamaVersion === "function" ? Wllama.getLibllamaVersion() : null,
                     logLines: logs.filter((l) => /multithread|pthread|n_threads|webgpu|CPU model buffer|KV buffer/i.test(l)).slice(0, 8) },
      promptTokens,
      newTokens,
      finishReason: last.choices?.[0]?.finish_reason ?? null,
      ...rates(promptTokens, newTokens, timed),
      engineReported: { prefillTokensPerS: timings.prompt_per_second ?? null,
                        decodeTokensPerS: timings.predicted_per_second ?? null, cachedPromptTokens: timings.cache_n ?? null,
                        stopTokensBiased: Object.keys(bias).map(Number) },
      timing: { firstTokenSeconds: timed.firstTokenSeconds, afterFirstSeconds: timed.afterFirstSeconds,
                textChunks: timed.textChunks },
      text: timed.text,
    };
  } finally {
    await wllama.exit();
  }
}

/**
 * spec: { engine: "kiln" | "wllama", name (the engine's label, e.g. "wllama 3.8.1"), threads, prompt,
 * warmupPrompt, warmup, newTokens, logitBias, bundleUrl (kiln), wllamaBase, ggufUrl and
 * contextWindow (wllama) }.
 */
window.peerBench = async (spec) => {
  const out = spec.engine === "kiln" ? await runKiln(spec) : await runWllama(spec);
  return { engine: spec.name ?? spec.engine, threadsAsked: spec.threads, crossOriginIsolated: globalThis.crossOriginIsolated === true,
           hardwareConcurrency: navigator.hardwareConcurrency, ...out };
};
window.peerBenchReady = true;
