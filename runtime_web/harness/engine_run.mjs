// Browser driver of kiln's engine, the page counterpart of node_chat.mjs. The page's server maps
// /kiln/ to runtime_web/dist.
import { createEngine } from "/kiln/kiln.mjs";
import { runSteps } from "./run_steps.mjs";

// A createEngine refusal comes back as { error: { name, code, message } }.
window.kilnChat = async (bundleUrl, backend, steps) => {
  let engine;
  try {
    engine = await createEngine(bundleUrl, { backend, cache: "none" });
  } catch (err) {
    return { error: { name: err.name, code: err.code, message: err.message } };
  }
  const results = await runSteps(engine, steps);
  const backendUsed = engine.backend;
  engine.unload();
  return { backend: backendUsed, results };
};
window.kilnReady = true;
