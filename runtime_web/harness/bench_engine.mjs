// The engine benchmark of scripts/bench_runtime.py, shared by the Chromium page (bench_run.mjs) and
// Node (bench_node.mjs): load a bundle, then run each planned request on a fresh conversation and
// report its speed and, on WebGPU, the GPU work of one decode step.
//
// GPU work is counted from the WebGPU API itself (compute dispatches, queue submits, buffers mapped
// for reading and their bytes), by wrapping the prototype methods once. A decode step ends with one
// readback (the logits, or a sampled token id), so the calls between two reads are one step's.

/** Wraps the GPU classes' methods to count calls; a no-op where WebGPU is absent. */
export function countGpuWork(scope = globalThis) {
  const counts = { dispatches: 0, submits: 0, reads: 0, readBytes: 0, steps: [] };
  let last = { dispatches: 0, submits: 0 };
  const wrap = (cls, name, before) => {
    const proto = scope[cls]?.prototype;
    const original = proto?.[name];
    if (typeof original !== "function") return false;
    proto[name] = function (...args) {
      const after = before.call(this, ...args);  // optionally a function of the call's result
      const result = original.apply(this, args);
      after?.(result);
      return result;
    };
    return true;
  };
  const ok = wrap("GPUComputePassEncoder", "dispatchWorkgroups", () => { counts.dispatches++; })
    && wrap("GPUQueue", "submit", () => { counts.submits++; })
    && wrap("GPUBuffer", "mapAsync", function (mode, offset = 0, size) {
      if (!(mode & scope.GPUMapMode.READ)) return;
      const bytes = size ?? this.size - offset;
      counts.reads++;
      counts.readBytes += bytes;
      const step = { dispatches: counts.dispatches - last.dispatches, submits: counts.submits - last.submits,
                     readBytes: bytes, at: performance.now(), mapped: null };
      counts.steps.push(step);
      last = { dispatches: counts.dispatches, submits: counts.submits };
      return (mapping) => mapping.then(() => { step.mapped = performance.now(); }, () => {});
    });
  return ok ? counts : null;
}

/** The median time between the last `decodes` readbacks and the one before each: one decode step's
 * wall time, without the first token's share of the prefill or an occasional stall. */
function stepMs(counts, decodes) {
  if (!counts || decodes < 1 || counts.steps.length < decodes + 1) return null;
  const at = counts.steps.slice(-(decodes + 1)).map((s) => s.at);
  return median(at.slice(1).map((t, i) => t - at[i]));
}

/** The median time from a step's readback being mapped to the next step's readback request: the
 * host's share of a step (JavaScript, the WASM runtime, encoding), the GPU may run meanwhile. */
function hostMs(counts, decodes) {
  if (!counts || decodes < 1 || counts.steps.length < decodes + 1) return null;
  const steps = counts.steps.slice(-(decodes + 1));
  return median(steps.slice(1).map((s, i) => s.at - steps[i].mapped));
}

const median = (xs) => {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

/** Seconds from the start of createEngine to the first and last progress event of each phase. */
function phaseClock(started) {
  const phases = {};
  const onProgress = (p) => {
    const t = (performance.now() - started) / 1000;
    const entry = phases[p.phase] ??= { first: t, last: t, bytes: 0 };
    entry.last = t;
    entry.bytes = p.bytesTotal;
  };
  return { phases, onProgress };
}

/**
 * `createEngine`: kiln's. `plan`: [{label, prompt, maxTokens}] raw prompts (completions API, greedy;
 * `logitBias`, if given, is sent with every request). `counts`: from countGpuWork, or null.
 */
export async function benchEngine(createEngine, { bundleUrl, backend, plan, logitBias, warmup, counts, threads }) {
  const started = performance.now();
  const clock = phaseClock(started);
  const engine = await createEngine(bundleUrl, { backend, cache: "none", onProgress: clock.onProgress,
                                                 ...(threads ? { threads } : {}) });
  const loadSeconds = (performance.now() - started) / 1000;
  const runs = [];
  try {
    const request = (prompt, maxTokens) => engine.completions.create({
      prompt, max_tokens: maxTokens, temperature: 0, ...(logitBias ? { logit_bias: logitBias } : {}) });
    if (warmup) {
      // The first call of each kernel may still compile or allocate; keep it out of the numbers.
      const t = performance.now();
      await request(plan[0].prompt.slice(0, 40), 2);
      runs.push({ label: "warm-up", seconds: (performance.now() - t) / 1000 });
    }
    for (const { label, prompt, maxTokens } of plan) {
      engine.resetChat();
      const t = performance.now();
      const reply = await request(prompt, maxTokens);
      const seconds = (performance.now() - t) / 1000;
      const usage = reply.usage;
      // The first token comes from the prompt's logits; each later one is one decode step, and the
      // request's last readbacks are those steps (a long prompt reads back once per chunk).
      const decodes = usage.completion_tokens - 1;
      const steps = counts && decodes > 0 ? counts.steps.slice(-decodes) : [];
      runs.push({
        label, seconds, promptTokens: usage.prompt_tokens, newTokens: usage.completion_tokens,
        prefillTokensPerS: usage.extra.prefill_tokens_per_s, decodeTokensPerS: usage.extra.decode_tokens_per_s,
        decodeSteps: steps.length,
        dispatchesPerStep: median(steps.map((s) => s.dispatches)),
        submitsPerStep: median(steps.map((s) => s.submits)),
        readBytesPerStep: median(steps.map((s) => s.readBytes)),
        msPerStep: stepMs(counts, decodes),
        hostMs: hostMs(counts, decodes),
        text: reply.choices[0].text,
      });
    }
    return { backend: engine.backend, threads: engine.threads ?? 1, loadSeconds, loadPhases: clock.phases, runs };
  } finally {
    engine.unload();
  }
}

/**
 * The same plan through WebLLM (`webllm`: its module) on the same kiln bundle: `modelUrl` is the
 * bundle's folder as WebLLM addresses it (…/resolve/main/ appended), `libUrl` its WebGPU library.
 * Greedy with ignore_eos, so every request decodes maxTokens tokens.
 */
export async function benchWebLLM(webllm, { modelUrl, libUrl, plan, warmup, counts }) {
  const modelId = "kiln-bench-model";
  const appConfig = { model_list: [{ model: new URL(modelUrl, location.href).href, model_id: modelId,
                                     model_lib: new URL(libUrl, location.href).href }],
                      useIndexedDBCache: false };
  const started = performance.now();
  const engine = await webllm.CreateMLCEngine(modelId, { appConfig });
  const loadSeconds = (performance.now() - started) / 1000;
  const runs = [];
  try {
    const request = (prompt, maxTokens) => engine.completions.create({
      prompt, max_tokens: maxTokens, temperature: 0, ignore_eos: true });
    if (warmup) {
      const t = performance.now();
      await request(plan[0].prompt.slice(0, 40), 2);
      runs.push({ label: "warm-up", seconds: (performance.now() - t) / 1000 });
    }
    for (const { label, prompt, maxTokens } of plan) {
      await engine.resetChat();
      const t = performance.now();
      const reply = await request(prompt, maxTokens);
      const usage = reply.usage;
      const decodes = usage.completion_tokens - 1;
      const steps = counts && decodes > 0 ? counts.steps.slice(-decodes) : [];
      runs.push({
        label, seconds: (performance.now() - t) / 1000, promptTokens: usage.prompt_tokens,
        newTokens: usage.completion_tokens, prefillTokensPerS: usage.extra.prefill_tokens_per_s,
        decodeTokensPerS: usage.extra.decode_tokens_per_s, decodeSteps: steps.length,
        dispatchesPerStep: median(steps.map((s) => s.dispatches)),
        submitsPerStep: median(steps.map((s) => s.submits)),
        readBytesPerStep: median(steps.map((s) => s.readBytes)),
        msPerStep: stepMs(counts, decodes),
        hostMs: hostMs(counts, decodes),
        text: reply.choices[0].text,
      });
    }
    return { backend: "webgpu", engine: "WebLLM", threads: 1, loadSeconds, loadPhases: {}, runs };
  } finally {
    await engine.unload();
  }
}
