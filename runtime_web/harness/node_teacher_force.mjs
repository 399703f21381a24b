// Node driver of teacher_force.mjs:
//   node node_teacher_force.mjs KILN_MJS BUNDLE_URL [wasm|webgpu] < [{"prompt": [ids], "forced": [ids]}, ...]
// prints {"backend", "results": [{"top1": [...], "margin": [...]}, ...]}.
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
import { teacherForce } from "./teacher_force.mjs";

const [kilnPath, bundleUrl, backend = "wasm"] = process.argv.slice(2);
console.log = (...args) => console.error(...args);  // stdout carries only the JSON result
const kiln = await import(pathToFileURL(kilnPath).href);
const jobs = JSON.parse(readFileSync(0, "utf8"));
if (backend !== "wasm") await kiln.installNodeWebGPU();
const engine = await kiln.createEngine(bundleUrl, { backend, cache: "none" });
const results = await teacherForce(engine.model, jobs);
engine.unload();
process.stdout.write(JSON.stringify({ backend: engine.backend, results }));
