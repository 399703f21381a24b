// Node (WASM backend) driver of kiln's engine:
//   node node_chat.mjs TVMJS_BUNDLE KILN_MJS BUNDLE_URL < [{"api": "chat"|"text", "request": {...}}, ...]
// runs the requests in order on one engine and prints one JSON result per request: the completion,
// or for stream requests {chunks: [...]}, or {error: {name, code, message}}.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { runSteps } from "./run_steps.mjs";

globalThis.require = createRequire(import.meta.url);
globalThis.__dirname = dirname(fileURLToPath(import.meta.url));

const [tvmjsPath, kilnPath, bundleUrl] = process.argv.slice(2);
const tvmjs = await import(pathToFileURL(tvmjsPath).href);
const kiln = await import(pathToFileURL(kilnPath).href);
const steps = JSON.parse(readFileSync(0, "utf8"));
const progress = [];
const engine = await kiln.createEngine(bundleUrl, { tvmjs, backend: "wasm", onProgress: (p) => progress.push(p) });
const results = await runSteps(engine, steps);
engine.unload();
process.stdout.write(JSON.stringify({ backend: engine.backend, progress: progress.slice(-1), results }));
