// Page driver of scripts/bench_runtime.py: the engine benchmark (bench_engine.mjs) in Chromium, for
// kiln and, on the same bundle, WebLLM. The page's server maps /kiln/ to runtime_web/dist and
// /webllm/ to @mlc-ai/web-llm's lib folder.
import { createEngine } from "/kiln/kiln.mjs";
import { benchEngine, benchWebLLM, countGpuWork } from "./bench_engine.mjs";

const counts = countGpuWork();

async function adapterInfo() {
  const adapter = await navigator.gpu?.requestAdapter();
  if (!adapter) return null;
  const info = adapter.info ?? {};
  return { vendor: info.vendor, architecture: info.architecture, description: info.description };
}

window.kilnBench = async (spec) => {
  const out = spec.engine === "webllm"
    ? await benchWebLLM(await import("/webllm/index.js"), { ...spec, counts })
    : await benchEngine(createEngine, { ...spec, counts });
  out.adapter = out.backend === "webgpu" ? await adapterInfo() : null;
  return out;
};
window.kilnReady = true;
