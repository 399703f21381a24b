// Page driver of scripts/bench_runtime.py: times createEngine (fetch, verify, compile pipelines,
// upload weights) and runs one measured request after an optional warm-up request. The page's
// server maps /kiln/ to runtime_web/dist.
import { createEngine } from "/kiln/kiln.mjs";

async function adapterInfo() {
  const adapter = await navigator.gpu?.requestAdapter();
  if (!adapter) return null;
  const info = adapter.info ?? {};
  return { vendor: info.vendor, architecture: info.architecture, description: info.description };
}

window.kilnBench = async (bundleUrl, backend, warmup, request) => {
  const started = performance.now();
  const engine = await createEngine(bundleUrl, { backend, cache: "none" });
  const loadSeconds = (performance.now() - started) / 1000;
  try {
    if (warmup) {
      // First calls of each kernel may still compile or allocate; keep them out of the numbers.
      await engine.chat.completions.create(warmup);
      engine.resetChat();
    }
    const reply = await engine.chat.completions.create(request);
    return {
      backend: engine.backend,
      adapter: engine.backend === "webgpu" ? await adapterInfo() : null,
      loadSeconds,
      usage: reply.usage,
      finishReason: reply.choices[0].finish_reason,
    };
  } finally {
    engine.unload();
  }
};
window.kilnReady = true;
