// Node driver of kiln's engine:
//   node node_chat.mjs KILN_MJS BUNDLE_URL [wasm|webgpu|auto] [ENGINE_OPTIONS_JSON] < [{"api": "chat"|"text", "request": {...}}, ...]
// runs the requests in order on one engine and prints one JSON result per request: the completion,
// or for stream requests {chunks: [...]}, or {error: {name, code, message}}. The backend defaults
// to wasm; webgpu and auto first give Node WebGPU through the npm package `webgpu` (Dawn on Vulkan;
// VK_ICD_FILENAMES=/usr/lib/chromium/vk_swiftshader_icd.json selects SwiftShader on the CPU).
// If the engine cannot be created, prints {error: {name, code, message}} and exits with status 2.
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
import { runSteps } from "./run_steps.mjs";

const [kilnPath, bundleUrl, backend = "wasm", engineOptions = "{}"] = process.argv.slice(2);
if (!["wasm", "webgpu", "auto"].includes(backend)) {
  process.stderr.write(`node_chat.mjs: backend must be wasm, webgpu or auto, got ${JSON.stringify(backend)}\n`);
  process.exit(64);
}
// stdout carries only the JSON result; tvmjs reports WebGPU limit fallbacks with console.log.
console.log = (...args) => console.error(...args);
const kiln = await import(pathToFileURL(kilnPath).href);
const steps = JSON.parse(readFileSync(0, "utf8"));
if (backend !== "wasm") await kiln.installNodeWebGPU();
const progress = [];
let engine;
try {
  engine = await kiln.createEngine(bundleUrl, { ...JSON.parse(engineOptions), backend, onProgress: (p) => progress.push(p) });
} catch (err) {
  if (!(err instanceof kiln.EngineError || err instanceof kiln.LoadError)) throw err;
  process.stdout.write(JSON.stringify({ error: { name: err.name, code: err.code, message: err.message } }));
  process.exit(2);
}
const results = await runSteps(engine, steps);
engine.unload();
process.stdout.write(JSON.stringify({ backend: engine.backend, progress: progress.slice(-1), results }));
