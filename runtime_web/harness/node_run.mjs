// Node (WASM CPU) runner: node node_run.mjs TVMJS_BUNDLE LIBRARY.wasm < request.json > result.json
// Logs go to stderr so that stdout carries only the JSON result.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { runFunction } from "./run_function.mjs";

// emcc's JS glue inside the tvmjs bundle is CommonJS-minded: it calls require() for Node
// built-ins and reads __dirname, neither of which an ES module has.
globalThis.require = createRequire(import.meta.url);
globalThis.__dirname = dirname(fileURLToPath(import.meta.url));

const [bundlePath, wasmPath] = process.argv.slice(2);
if (!bundlePath || !wasmPath) {
  console.error("usage: node node_run.mjs TVMJS_BUNDLE LIBRARY.wasm < request.json");
  process.exit(2);
}
const tvmjs = await import(pathToFileURL(bundlePath).href);
// kiln's way of instantiating a library (its memory, shared for a WASM CPU library), on this tvmjs.
const { instantiateLibrary } = await import(new URL("../dist/kiln.mjs", import.meta.url).href);
const request = JSON.parse(readFileSync(0, "utf8"));
const log = (msg) => console.error(msg);
const result = await runFunction(tvmjs, readFileSync(wasmPath), request, log,
                                 async (bytes) => (await instantiateLibrary(tvmjs, bytes, 1, log)).tvm);
process.stdout.write(JSON.stringify(result));
