// Page driver of tests/test_wasm_threads.py: one WASM engine per run ({threads, request}), each
// reporting the threads it got (and why not more), the kernel tasks its helper threads ran, and
// the greedy reply. A createEngine refusal comes back as { error: { name, code, message } }.
import { createEngine } from "/kiln/kiln.mjs";

window.kilnThreads = async (bundleUrl, runs) => {
  const results = [];
  for (const { threads, request } of runs) {
    let engine;
    try {
      engine = await createEngine(bundleUrl, { backend: "wasm", cache: "none", threads });
    } catch (err) {
      results.push({ error: { name: err.name, code: err.code, message: err.message } });
      continue;
    }
    try {
      const reply = await engine.completions.create(request);
      results.push({ crossOriginIsolated: globalThis.crossOriginIsolated, threads: engine.threads,
                     threadsReason: engine.threadsReason, helperTasks: engine.model.helperTasks(),
                     text: reply.choices[0].text, usage: reply.usage });
    } finally {
      engine.unload();
    }
  }
  return results;
};
window.kilnReady = true;
