// Browser driver of kiln's engine, the page counterpart of node_chat.mjs. The page's server maps
// /tvmjs/ to the tvmjs bundle and /kiln/ to runtime_web/dist.
import * as tvmjs from "/tvmjs/tvmjs.bundle.mjs";
import { createEngine } from "/kiln/kiln.mjs";
import { runSteps } from "./run_steps.mjs";

window.kilnChat = async (bundleUrl, backend, steps) => {
  const engine = await createEngine(bundleUrl, { tvmjs, backend, cache: "none" });
  const results = await runSteps(engine, steps);
  const backendUsed = engine.backend;
  engine.unload();
  return { backend: backendUsed, results };
};
window.kilnReady = true;
