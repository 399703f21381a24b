// Node check of the runtime's model step on the WASM backend:
//   node node_generate.mjs TVMJS_BUNDLE KILN_MJS BUNDLE_DIR < {"prompt": [ids], "steps": n}
// prints {"tokens": [...], "prefillLogits": [...]} for greedy decoding.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

globalThis.require = createRequire(import.meta.url);
globalThis.__dirname = dirname(fileURLToPath(import.meta.url));

const [tvmjsPath, kilnPath, bundleDir] = process.argv.slice(2);
const tvmjs = await import(pathToFileURL(tvmjsPath).href);
const { KilnModel } = await import(pathToFileURL(kilnPath).href);
const request = JSON.parse(readFileSync(0, "utf8"));
const config = JSON.parse(readFileSync(join(bundleDir, "kiln-config.json"), "utf8"));
const tensorCache = JSON.parse(readFileSync(join(bundleDir, "tensor-cache.json"), "utf8"));
const model = await KilnModel.load({
  tvmjs, config, tensorCache, backend: "wasm",
  library: readFileSync(join(bundleDir, config.libraries.wasm)),
  shardBytes: async (i) => new Uint8Array(readFileSync(join(bundleDir, tensorCache.records[i].dataPath))),
  log: (msg) => console.error(msg),
});
const argmax = (a) => a.reduce((best, v, i) => (v > a[best] ? i : best), 0);
let logits = await model.prefill(request.prompt);
const prefillLogits = Array.from(logits);
const tokens = [];
for (let i = 0; i < request.steps; i++) {
  tokens.push(argmax(logits));
  if (i + 1 < request.steps) logits = await model.decode(tokens[tokens.length - 1]);
}
process.stdout.write(JSON.stringify({ tokens, prefillLogits }));
