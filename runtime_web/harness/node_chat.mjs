// Node (WASM backend) driver of kiln's engine:
//   node node_chat.mjs KILN_MJS BUNDLE_URL < [{"api": "chat"|"text", "request": {...}}, ...]
// runs the requests in order on one engine and prints one JSON result per request: the completion,
// or for stream requests {chunks: [...]}, or {error: {name, code, message}}.
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
import { runSteps } from "./run_steps.mjs";

const [kilnPath, bundleUrl] = process.argv.slice(2);
const kiln = await import(pathToFileURL(kilnPath).href);
const steps = JSON.parse(readFileSync(0, "utf8"));
const progress = [];
const engine = await kiln.createEngine(bundleUrl, { backend: "wasm", onProgress: (p) => progress.push(p) });
const results = await runSteps(engine, steps);
engine.unload();
process.stdout.write(JSON.stringify({ backend: engine.backend, progress: progress.slice(-1), results }));
