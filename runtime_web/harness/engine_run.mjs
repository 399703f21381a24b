// Browser driver of kiln's engine, the page counterpart of node_chat.mjs. The page's server maps
// /tvmjs/ to the tvmjs bundle and /kiln/ to runtime_web/dist.
import * as tvmjs from "/tvmjs/tvmjs.bundle.mjs";
import { createEngine } from "/kiln/kiln.mjs";

window.kilnChat = async (bundleUrl, backend, steps) => {
  const engine = await createEngine(bundleUrl, { tvmjs, backend, cache: "none" });
  const results = [];
  for (const step of steps) {
    const api = step.api === "text" ? engine.completions : engine.chat.completions;
    try {
      if (step.request.stream) {
        const chunks = [];
        for await (const chunk of await api.create(step.request)) chunks.push(chunk);
        results.push({ chunks });
      } else {
        results.push(await api.create(step.request));
      }
    } catch (err) {
      results.push({ error: { name: err.name, code: err.code, message: err.message } });
    }
  }
  const backendUsed = engine.backend;
  engine.unload();
  return { backend: backendUsed, results };
};
window.kilnReady = true;
