// The device benchmark: kiln's WebGPU engine in Node (Dawn, the npm package `webgpu`) on every
// bundle of a kit that scripts/device_kit.py prepared, on a machine with a real GPU.
//
//   node device_bench.mjs KIT_DIR [--bandwidth-gbs 4800]
//
// A kit carries each bundle without its weights (they would not fit the trip): its shards are
// filled here with seeded random values of the right types and sizes (int4 words, small floats),
// and tensor-cache.json gets their checksums, so the loader verifies them as usual. Each bundle then
// runs its plan (bench_engine.mjs: load, prefill, decode at short and long context, dispatches and
// readback per step), and the table puts decode next to the bandwidth roofline: the bytes of
// weights one decode step reads (all of them, the tied embedding included, as the output layer)
// over the GPU's memory bandwidth. Results go to stdout and, as JSON, to $OUT/device_bench.json.
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync, createReadStream } from "node:fs";
import { createServer } from "node:http";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { benchEngine, countGpuWork } from "./bench_engine.mjs";

const args = process.argv.slice(2);
const kit = resolve(args[0] ?? ".");
const bandwidthAt = args.indexOf("--bandwidth-gbs");
const bandwidthGBs = bandwidthAt >= 0 ? Number(args[bandwidthAt + 1]) : null;

/** xorshift32: the same filler bytes on every run. */
function fill(bytes, dtype, seed) {
  let s = seed >>> 0 || 1;
  const next = () => { s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0; return s; };
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (dtype === "float32") {
    for (let i = 0; i + 4 <= bytes.length; i += 4) view.setFloat32(i, (next() / 2 ** 32 - 0.5) * 0.1, true);
  } else if (dtype === "float16") {
    // Halves in [-0.05, 0.05): sign, exponent 14..10 (2^-1 .. 2^-5 of 0.1-ish), random mantissa.
    for (let i = 0; i + 2 <= bytes.length; i += 2) {
      const r = next();
      view.setUint16(i, ((r & 1) << 15) | ((10 + (r >>> 1) % 4) << 10) | ((r >>> 8) & 0x3ff), true);
    }
  } else {
    for (let i = 0; i + 4 <= bytes.length; i += 4) view.setUint32(i, next(), true);
  }
}

function prepareShards(dir) {
  const indexPath = join(dir, "tensor-cache.json");
  const index = JSON.parse(readFileSync(indexPath, "utf8"));
  let changed = false;
  index.records.forEach((shard, k) => {
    const path = join(dir, shard.dataPath);
    if (existsSync(path) && statSync(path).size === shard.nbytes) return;
    const bytes = new Uint8Array(shard.nbytes);
    shard.records.forEach((rec, j) => fill(bytes.subarray(rec.byteOffset, rec.byteOffset + rec.nbytes), rec.dtype, 7919 * k + j + 1));
    writeFileSync(path, bytes);
    shard.sha256 = createHash("sha256").update(bytes).digest("hex");
    shard.md5sum = createHash("md5").update(bytes).digest("hex");
    changed = true;
  });
  if (changed) writeFileSync(indexPath, JSON.stringify(index, null, 2));
  return index.records.reduce((sum, shard) => sum + shard.nbytes, 0);
}

function serve(dir) {
  const server = createServer((req, res) => {
    const path = join(dir, decodeURIComponent(new URL(req.url, "http://x").pathname));
    if (!path.startsWith(dir) || !existsSync(path) || !statSync(path).isFile()) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "content-length": statSync(path).size });
    createReadStream(path).pipe(res);
  });
  return new Promise((ok) => server.listen(0, "127.0.0.1", () => ok(server)));
}

const kiln = await import(pathToFileURL(join(kit, "kiln.mjs")).href);
if (!(await kiln.installNodeWebGPU())) {
  console.error("no WebGPU adapter in Node: this machine needs a Vulkan GPU driver");
  process.exit(1);
}
const info = (await navigator.gpu.requestAdapter({ powerPreference: "high-performance" }))?.info ?? {};
console.log(`adapter: ${info.vendor} ${info.architecture} ${info.description ?? ""}`);
const counts = countGpuWork();
const results = [];
for (const name of readdirSync(join(kit, "bundles")).sort()) {
  const dir = join(kit, "bundles", name);
  const weightBytes = prepareShards(dir);
  const { plan } = JSON.parse(readFileSync(join(dir, "plan.json"), "utf8"));
  const server = await serve(dir);
  try {
    const out = await benchEngine(kiln.createEngine, {
      bundleUrl: `http://127.0.0.1:${server.address().port}/`, backend: "webgpu", plan, warmup: true, counts });
    const roofline = bandwidthGBs ? (bandwidthGBs * 1e9) / weightBytes : null;
    results.push({ bundle: name, weightBytes, bandwidthGBs, rooflineTokensPerS: roofline, ...out });
    console.log(`\n${name}: ${(weightBytes / 1e6).toFixed(0)} MB of weights read per decode step; load ${out.loadSeconds.toFixed(1)} s`);
    for (const run of out.runs.filter((r) => r.promptTokens !== undefined)) {
      const share = roofline ? ` = ${(100 * run.decodeTokensPerS / roofline).toFixed(1)} % of the ${roofline.toFixed(0)} tok/s roofline` : "";
      console.log(`  ${run.label}: ${run.promptTokens} prompt tokens, ${run.newTokens} new, prefill ${run.prefillTokensPerS.toFixed(1)} tok/s, ` +
                  `decode ${run.decodeTokensPerS.toFixed(1)} tok/s${share}; per step ${run.dispatchesPerStep} dispatches, ` +
                  `${run.submitsPerStep} submits, ${run.readBytesPerStep} bytes read back`);
    }
  } catch (err) {
    console.log(`\n${name}: failed: ${err?.message ?? err}`);
    results.push({ bundle: name, error: String(err?.message ?? err) });
  } finally {
    server.close();
  }
}
if (process.env.OUT) {
  mkdirSync(process.env.OUT, { recursive: true });
  writeFileSync(join(process.env.OUT, "device_bench.json"), JSON.stringify({ adapter: info, results }, null, 2));
}
process.exit(0);
