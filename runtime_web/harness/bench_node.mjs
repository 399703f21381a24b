// Node driver of scripts/bench_runtime.py --node: the engine benchmark (bench_engine.mjs) on Node's
// WebGPU (the npm package `webgpu`, Dawn on Vulkan) or WASM.
//   node bench_node.mjs KILN_MJS BUNDLE_URL < spec.json   (spec as for window.kilnBench)
// prints the result as JSON on stdout.
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
import { benchEngine, countGpuWork } from "./bench_engine.mjs";

const [kilnPath, bundleUrl] = process.argv.slice(2);
const kiln = await import(pathToFileURL(kilnPath).href);
const spec = JSON.parse(readFileSync(0, "utf8"));
if (spec.backend === "webgpu" && !(await kiln.installNodeWebGPU())) {
  console.error("no WebGPU adapter in Node: install the npm package webgpu and a Vulkan driver");
  process.exit(1);
}
const counts = countGpuWork();
const out = await benchEngine(kiln.createEngine, { ...spec, bundleUrl, counts });
if (spec.backend === "webgpu") {
  const info = (await navigator.gpu.requestAdapter())?.info ?? {};
  out.adapter = { vendor: info.vendor, architecture: info.architecture, description: info.description };
}
process.stdout.write(JSON.stringify(out));
process.exit(0);
