// Unit tests of the bundle loader (src/loader.ts) against a local node:http server that serves a
// synthetic bundle made here (random shards, a tensor-cache.json with their sha256, a kiln-config.json,
// tokenizer files). Run: cd runtime_web && node build.mjs --tests && node --test .build/test/loader.test.mjs
// Longer than 400 lines: every case serves variants of the one synthetic bundle built at the top.
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { createServer, IncomingMessage, Server, ServerResponse } from "node:http";
import { AddressInfo } from "node:net";
import { after, before, test } from "node:test";

import type { KilnConfig } from "../src/bundle_types";
import { LoadError, LoadProgress, MemoryShardStore, openBundle, shardCacheKey } from "../src/loader";

// ---------------------------------------------------------------------------------------------
// the synthetic bundle

const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
const enc = (v: unknown) => new TextEncoder().encode(typeof v === "string" ? v : JSON.stringify(v));
const WASM = Uint8Array.from([0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00]);

/** A kiln-config.json as kiln build writes it (valid against compiler/schema/kiln-config.schema.json). */
function kilnConfig(): KilnConfig {
  return {
    kiln_version: "0.1.0", format_version: 1, architecture: "LlamaForCausalLM", model_type: "llama",
    model_config: { hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2, num_attention_heads: 4,
                    num_key_value_heads: 2, head_dim: 16, vocab_size: 640, rms_norm_eps: 1e-5, rope_theta: 10000,
                    tie_word_embeddings: false },
    quantization: "q0f32", context_window_size: 512, prefill_chunk_size: 128, sliding_window_size: -1,
    sampling: { temperature: 0.7, top_p: 0.9, top_k: 0, repetition_penalty: 1.0 },
    tokens: { bos_token_id: 1, eos_token_ids: [2], stop_token_ids: [2], pad_token_id: null },
    chat_template: "{{ messages }}", tokenizer_files: ["tokenizer.json", "tokenizer_config.json"],
    libraries: { wasm: "model_wasm.wasm" }, tensor_cache: "tensor-cache.json", webgpu_features: [],
    estimated_memory_bytes: { weights: 1000, kv_cache: 2000, activations: 300, total: 3300 },
    params: { count: 1000, bytes: 1000, bits_per_param: 8 },
  };
}

interface Bundle { files: Map<string, Uint8Array>; shards: Uint8Array[]; names: string[]; total: number }

function makeBundle(sizes: number[], edit: { config?: (c: any) => void; cache?: (c: any) => void } = {}): Bundle {
  const files = new Map<string, Uint8Array>();
  const shards = sizes.map((n) => new Uint8Array(randomBytes(n)));
  const names = shards.map((_, i) => `params_shard_${i}.bin`);
  const cache = {
    metadata: { ParamSize: 0, ParamBytes: sizes.reduce((a, b) => a + b, 0), BitsPerParam: 8 },
    records: shards.map((bytes, i) => ({
      dataPath: names[i], format: "raw-shard", nbytes: bytes.byteLength, sha256: sha256(bytes),
      records: [{ name: `w${i}`, shape: [bytes.byteLength], dtype: "uint8", format: "raw",
                  nbytes: bytes.byteLength, byteOffset: 0 }],
    })),
  };
  const config = kilnConfig();
  edit.config?.(config);
  edit.cache?.(cache);
  shards.forEach((b, i) => files.set(names[i], b));
  files.set("tensor-cache.json", enc(cache));
  files.set("kiln-config.json", enc(config));
  files.set("tokenizer.json", enc({ version: "1.0", model: { type: "BPE", vocab: {}, merges: [] } }));
  files.set("tokenizer_config.json", enc({ bos_token: "<s>", eos_token: "</s>" }));
  files.set("model_wasm.wasm", WASM);
  return { files, shards, names, total: sizes.reduce((a, b) => a + b, 0) };
}

// ---------------------------------------------------------------------------------------------
// the server: serves the current bundle under /bN/ (a new N on each reset, so that requests a
// previous load cancelled but the server sees late are not counted), counts requests, and can
// delay, hold, corrupt, truncate, stall or withhold files

interface Behaviour {
  delayMs?: number;
  /** Hold shard responses until this many are in flight (then 20 ms more), or 500 ms at most. */
  gate?: number;
  corrupt?: Set<string>;   // flip a byte
  truncate?: Set<string>;  // serve half
  stall?: Set<string>;     // send half, then never finish
  hang?: Set<string>;      // never answer (no headers)
  trickle?: Set<string>;   // send 5 kB every 50 ms
  missing?: Set<string>;   // 404
}

class TestServer {
  bundle!: Bundle;
  behaviour: Behaviour = {};
  counts = new Map<string, number>();
  inFlight = 0;        // shard requests started and not closed
  maxInFlight = 0;
  shardRequests = 0;
  closedEarly = 0;     // shard responses whose connection closed before they finished
  paths: string[] = []; // every request path since the last reset, wherever it points
  private server!: Server;
  private origin = "";
  private generation = 0;
  private held: (() => void)[] = [];
  private gateTimer: ReturnType<typeof setTimeout> | undefined;

  /** The bundle URL, without a trailing slash. */
  get base(): string {
    return `${this.origin}/b${this.generation}`;
  }

  async start(): Promise<void> {
    this.server = createServer((req, res) => this.handle(req, res));
    await new Promise<void>((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    this.origin = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise((resolve) => this.server.close(resolve));
  }

  /** Serve `bundle` with `behaviour` from now on, with fresh counters (at a new URL unless samePath). */
  reset(bundle: Bundle, behaviour: Behaviour = {}, samePath = false): void {
    if (!samePath) this.generation++;
    this.releaseHeld();
    this.bundle = bundle;
    this.behaviour = behaviour;
    this.counts.clear();
    this.paths = [];
    this.inFlight = this.maxInFlight = this.shardRequests = this.closedEarly = 0;
  }

  count(name: string): number {
    return this.counts.get(name) ?? 0;
  }

  private releaseHeld(): void {
    clearTimeout(this.gateTimer);
    this.gateTimer = undefined;
    const held = this.held;
    this.held = [];
    for (const send of held) send();
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const path = decodeURIComponent(new URL(req.url ?? "/", "http://x").pathname);
    this.paths.push(req.url ?? "");
    const prefix = `/b${this.generation}/`;
    if (!path.startsWith(prefix)) { // a late request of an earlier test
      res.writeHead(410).end();
      return;
    }
    const name = path.slice(prefix.length);
    this.counts.set(name, this.count(name) + 1);
    const b = this.behaviour;
    const body = this.bundle.files.get(name);
    if (!body || b.missing?.has(name)) {
      res.writeHead(404, "Not Found", { "Content-Type": "text/plain" }).end("not found");
      return;
    }
    const isShard = name.endsWith(".bin");
    if (isShard) {
      this.shardRequests++;
      this.inFlight++;
      this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
      const generation = this.generation;
      res.on("close", () => {
        if (generation !== this.generation) return;
        this.inFlight--;
        if (!res.writableFinished) this.closedEarly++;
      });
    }
    const send = () => {
      let out = body;
      if (b.corrupt?.has(name)) {
        out = body.slice();
        out[out.length >> 1] ^= 0xff;
      }
      if (b.truncate?.has(name)) out = body.subarray(0, body.length >> 1);
      if (b.hang?.has(name)) return;
      if (b.trickle?.has(name)) {
        res.writeHead(200, { "Content-Length": String(out.length) });
        let at = 0;
        const more = () => {
          if (res.destroyed) return;
          res.write(out.subarray(at, at + 5_000));
          at += 5_000;
          if (at < out.length) setTimeout(more, 50);
          else res.end();
        };
        more();
        return;
      }
      if (b.stall?.has(name)) {
        res.writeHead(200, { "Content-Length": String(out.length) });
        res.write(out.subarray(0, out.length >> 1));
        return;
      }
      res.writeHead(200, { "Content-Length": String(out.length) }).end(out);
    };
    if (isShard && b.gate) {
      this.held.push(send);
      clearTimeout(this.gateTimer);
      this.gateTimer = setTimeout(() => this.releaseHeld(), this.inFlight >= b.gate ? 20 : 500);
    } else if (isShard && b.delayMs) {
      setTimeout(send, b.delayMs);
    } else {
      send();
    }
  }
}

const server = new TestServer();
before(() => server.start());
after(() => server.stop());

/** The LoadError openBundle rejects with (fails the test when it resolves or throws something else). */
async function loadError(promise: Promise<unknown>): Promise<LoadError> {
  try {
    await promise;
  } catch (e) {
    assert.ok(e instanceof LoadError, `expected a LoadError, got ${e}`);
    return e;
  }
  assert.fail("openBundle resolved, expected a LoadError");
}

/** A memory store that records its calls. */
class RecordingStore extends MemoryShardStore {
  calls: string[] = [];
  override async get(key: string) { this.calls.push(`get ${key}`); return super.get(key); }
  override async put(key: string, bytes: Uint8Array) { this.calls.push(`put ${key}`); return super.put(key, bytes); }
  override async delete(key: string) { this.calls.push(`delete ${key}`); return super.delete(key); }
}

const SIZES = [150_000, 1, 70_000, 300_000, 4096, 65_536, 200_001];

// ---------------------------------------------------------------------------------------------
// loading

test("every shard arrives and verifies, with or without a trailing slash", async () => {
  const bundle = makeBundle(SIZES);
  for (const slash of ["", "/"]) {
    server.reset(bundle);
    const b = await openBundle(server.base + slash, { cache: "none" });
    assert.equal(b.url, server.base + "/");
    assert.equal(b.cacheMode, "none");
    assert.equal(b.config.context_window_size, 512);
    assert.equal(b.tensorCache.records.length, SIZES.length);
    assert.equal(b.tokenizerJson.model.type, "BPE");
    assert.equal(b.tokenizerConfig.eos_token, "</s>");
    for (let i = 0; i < SIZES.length; i++) {
      const bytes = await b.shardBytes(i);
      assert.equal(bytes.byteLength, SIZES[i]);
      assert.ok(Buffer.from(bytes).equals(Buffer.from(bundle.shards[i])), `shard ${i} differs`);
      assert.equal(server.count(bundle.names[i]), 1, `shard ${i} fetched once`);
    }
    assert.deepEqual(await b.library("wasm"), WASM);
    assert.equal((await loadError(b.library("webgpu"))).code, "bad_bundle");
  }
});

test("the default cache in Node (no globalThis.caches) is none", async () => {
  server.reset(makeBundle([10]));
  assert.equal((await openBundle(server.base)).cacheMode, "none");
});

test("never more than `concurrency` shard requests in flight (default 4)", async () => {
  const bundle = makeBundle(Array.from({ length: 14 }, (_, i) => 1000 + i));
  for (const [concurrency, expected] of [[3, 3], [undefined, 4], [1, 1], [20, 14]] as const) {
    server.reset(bundle, { gate: expected });
    const b = await openBundle(server.base, { cache: "none", concurrency });
    assert.equal(server.maxInFlight, expected, `concurrency ${concurrency}`);
    assert.equal(server.shardRequests, 14);
    for (let i = 0; i < 14; i++) assert.equal((await b.shardBytes(i)).byteLength, 1000 + i);
  }
});

test("progress: per phase monotonic, constant total, ends at the total; upload progress via shardUploaded", async () => {
  const bundle = makeBundle(SIZES);
  server.reset(bundle, { delayMs: 5 });
  const events: LoadProgress[] = [];
  const b = await openBundle(server.base, { cache: "none", concurrency: 2, onProgress: (p) => events.push({ ...p }) });
  for (let i = 0; i < SIZES.length; i++) {
    await b.shardBytes(i);
    b.shardUploaded(i);
    b.shardUploaded(i); // twice: counted once
  }
  for (const phase of ["download", "verify", "upload"] as const) {
    const seq = events.filter((e) => e.phase === phase);
    assert.ok(seq.length >= SIZES.length, `${phase}: ${seq.length} events`);
    let last = -1;
    for (const e of seq) {
      assert.equal(e.bytesTotal, bundle.total);
      assert.ok(e.bytesDone >= last, `${phase}: ${e.bytesDone} after ${last}`);
      assert.ok(e.bytesDone <= e.bytesTotal);
      assert.ok(Number.isFinite(e.mbPerSecond) && e.mbPerSecond >= 0, `${phase}: MB/s ${e.mbPerSecond}`);
      assert.ok(e.etaSeconds === null || (Number.isFinite(e.etaSeconds) && e.etaSeconds >= 0));
      if (e.file !== undefined) assert.ok(bundle.names.includes(e.file), e.file);
      last = e.bytesDone;
    }
    const end = seq[seq.length - 1];
    assert.equal(end.bytesDone, bundle.total, `${phase} ends at the total`);
    assert.equal(end.etaSeconds, 0);
  }
  // every verify event comes after the download of its shard completed
  assert.ok(events.findIndex((e) => e.phase === "verify") > events.findIndex((e) => e.phase === "download"));
  assert.ok(events.some((e) => e.phase === "download" && e.mbPerSecond > 0));
});

// ---------------------------------------------------------------------------------------------
// the store and integrity

test("a store hit is not fetched; a corrupted cached shard is evicted, fetched again once, and then works", async () => {
  const bundle = makeBundle(SIZES);
  const store = new RecordingStore();
  server.reset(bundle);
  await openBundle(server.base, { store });
  assert.equal(store.entries.size, SIZES.length);
  const url1 = `${server.base}/${bundle.names[1]}`;
  const key3 = shardCacheKey(`${server.base}/${bundle.names[3]}`, sha256(bundle.shards[3]));
  assert.ok(store.entries.has(key3), "keyed by absolute URL + sha256");
  assert.notEqual(key3, shardCacheKey(url1, sha256(bundle.shards[3])));

  // all cached: no shard request at all
  server.reset(bundle, {}, true);
  const again = await openBundle(server.base, { store });
  assert.equal(server.shardRequests, 0);
  assert.deepEqual(await again.shardBytes(3), bundle.shards[3]);

  // corrupt shard 3 in the store
  const bad = store.entries.get(key3)!.slice();
  bad[7] ^= 1;
  store.entries.set(key3, bad);
  store.calls = [];
  server.reset(bundle, {}, true);
  const b = await openBundle(server.base + "/", { store });
  assert.equal(server.count(bundle.names[3]), 1, "the corrupted shard is fetched once");
  assert.equal(server.shardRequests, 1, "no other shard is fetched");
  assert.ok(store.calls.indexOf(`delete ${key3}`) >= 0, "evicted");
  assert.ok(store.calls.indexOf(`put ${key3}`) > store.calls.indexOf(`delete ${key3}`), "stored again");
  assert.deepEqual(store.entries.get(key3), bundle.shards[3]);
  assert.deepEqual(await b.shardBytes(3), bundle.shards[3]);
});

test("a server that serves a corrupt shard: LoadError integrity after exactly 2 fetches of it", async () => {
  const bundle = makeBundle(SIZES);
  server.reset(bundle, { corrupt: new Set([bundle.names[2]]) });
  const store = new MemoryShardStore();
  const e = await loadError(openBundle(server.base, { store, concurrency: 1 }));
  assert.equal(e.code, "integrity");
  assert.match(e.message, /params_shard_2\.bin/);
  assert.match(e.message, /corrupt/);
  assert.match(e.message, /kiln build/);
  assert.equal(server.count(bundle.names[2]), 2);
  assert.equal(server.count(bundle.names[3]), 0, "the first failure stops the pool");
  const key2 = shardCacheKey(`${server.base}/${bundle.names[2]}`, sha256(bundle.shards[2]));
  assert.ok(!store.entries.has(key2), "a corrupt shard is never stored");
});

test("a corrupted cached shard whose fresh copy is corrupt too: integrity after one fetch", async () => {
  const bundle = makeBundle(SIZES);
  const store = new MemoryShardStore();
  server.reset(bundle);
  await openBundle(server.base, { store });
  const key = shardCacheKey(`${server.base}/${bundle.names[4]}`, sha256(bundle.shards[4]));
  store.entries.set(key, new Uint8Array(12));
  server.reset(bundle, { corrupt: new Set([bundle.names[4]]) }, true);
  const e = await loadError(openBundle(server.base, { store }));
  assert.equal(e.code, "integrity");
  assert.match(e.message, /params_shard_4\.bin/);
  assert.match(e.message, /cached copy/);
  assert.equal(server.count(bundle.names[4]), 1);
  assert.ok(!store.entries.has(key), "the bad cached copy was evicted");
});

test("a truncated shard on the server: integrity naming the sizes", async () => {
  const bundle = makeBundle(SIZES);
  server.reset(bundle, { truncate: new Set([bundle.names[0]]) });
  const e = await loadError(openBundle(server.base, { cache: "none" }));
  assert.equal(e.code, "integrity");
  assert.match(e.message, /75000 bytes instead of 150000/);
  assert.equal(server.count(bundle.names[0]), 2);
});

test("a store that is full: LoadError quota saying to free space or use cache none", async () => {
  const bundle = makeBundle(SIZES);
  server.reset(bundle);
  const full = new MemoryShardStore();
  full.put = async () => { throw new DOMException("The quota has been exceeded.", "QuotaExceededError"); };
  const e = await loadError(openBundle(server.base, { store: full }));
  assert.equal(e.code, "quota");
  assert.match(e.message, /free space/);
  assert.match(e.message, /cache: "none"/);

  const broken = new MemoryShardStore();
  broken.put = async () => { throw new Error("disk on fire"); };
  const f = await loadError(openBundle(server.base, { store: broken }));
  assert.equal(f.code, "cache_failed");
  assert.match(f.message, /disk on fire/);
});

// ---------------------------------------------------------------------------------------------
// fetch failures and abort

test("a 404: LoadError fetch_failed naming the file, URL and status", async () => {
  const bundle = makeBundle(SIZES);
  server.reset(bundle, { missing: new Set([bundle.names[5]]) });
  const e = await loadError(openBundle(server.base, { cache: "none" }));
  assert.equal(e.code, "fetch_failed");
  assert.equal(e.status, 404);
  assert.equal(e.url, `${server.base}/${bundle.names[5]}`);
  assert.ok(e.message.includes(`${server.base}/params_shard_5.bin`), e.message);
  assert.match(e.message, /HTTP 404/);
  assert.equal(server.count(bundle.names[5]), 1, "an HTTP error is not retried");

  server.reset(bundle, { missing: new Set(["tokenizer.json"]) });
  const t = await loadError(openBundle(server.base, { cache: "none" }));
  assert.equal(t.code, "fetch_failed");
  assert.match(t.message, /tokenizer\.json.*HTTP 404/);
  assert.equal(server.shardRequests, 0);
});

test("a server that is not there: LoadError fetch_failed", async () => {
  const probe = createServer();
  await new Promise<void>((resolve) => probe.listen(0, "127.0.0.1", resolve));
  const port = (probe.address() as AddressInfo).port;
  await new Promise((resolve) => probe.close(resolve));
  const e = await loadError(openBundle(`http://127.0.0.1:${port}/b`, { cache: "none" }));
  assert.equal(e.code, "fetch_failed");
  assert.match(e.message, /kiln-config\.json|tensor-cache\.json|tokenizer/);
});

test("abort mid-download: LoadError aborted, and the in-flight requests are closed", async () => {
  const bundle = makeBundle(SIZES);
  server.reset(bundle, { stall: new Set(bundle.names) });
  const controller = new AbortController();
  let progressed = 0;
  const started = performance.now();
  const e = await loadError(openBundle(server.base, {
    cache: "none", concurrency: 3, signal: controller.signal,
    onProgress: (p) => { if (p.phase === "download" && p.bytesDone > 0 && progressed++ === 0) setTimeout(() => controller.abort(), 20); },
  }));
  assert.equal(e.code, "aborted");
  assert.ok(progressed > 0, "the download had started");
  assert.ok(performance.now() - started < 5000);
  assert.equal(server.shardRequests, 3, "no new request after the abort");
  for (let waited = 0; server.closedEarly < 3 && waited < 3000; waited += 20) await new Promise((r) => setTimeout(r, 20));
  assert.equal(server.closedEarly, 3, "every in-flight shard request was cancelled");
  assert.equal(server.inFlight, 0);

  server.reset(bundle);
  const pre = await loadError(openBundle(server.base, { cache: "none", signal: AbortSignal.abort() }));
  assert.equal(pre.code, "aborted");
  assert.equal(server.counts.size, 0, "an aborted signal fetches nothing");
});

// ---------------------------------------------------------------------------------------------
// bad bundles

test("a missing kiln-config field: LoadError bad_bundle naming the field and kiln build", async () => {
  for (const [edit, field] of [
    [(c: any) => delete c.context_window_size, /missing field context_window_size/],
    [(c: any) => delete c.model_config.vocab_size, /missing field model_config\.vocab_size/],
    [(c: any) => delete c.libraries, /missing field libraries/],
    [(c: any) => { c.libraries = {}; }, /field libraries must be/],
    [(c: any) => { c.prefill_chunk_size = "big"; }, /field prefill_chunk_size must be a positive integer/],
    [(c: any) => { c.format_version = 2; }, /format_version 2 is not supported/],
  ] as const) {
    server.reset(makeBundle([100], { config: edit }));
    const e = await loadError(openBundle(server.base, { cache: "none" }));
    assert.equal(e.code, "bad_bundle");
    assert.match(e.message, /^kiln-config\.json: /);
    assert.match(e.message, field);
    assert.match(e.message, /kiln build/);
    assert.equal(server.shardRequests, 0);
  }
});

test("bad tensor-cache.json and tokenizer files: LoadError bad_bundle", async () => {
  const noSha = makeBundle([100, 200], { cache: (c) => delete c.records[1].sha256 });
  server.reset(noSha);
  let e = await loadError(openBundle(server.base, { cache: "none" }));
  assert.equal(e.code, "bad_bundle");
  assert.match(e.message, /tensor-cache\.json: shard 1 \(params_shard_1\.bin\) has no sha256/);

  server.reset(makeBundle([100], { cache: (c) => { c.records[0].records[0].nbytes = 101; } }));
  e = await loadError(openBundle(server.base, { cache: "none" }));
  assert.match(e.message, /outside the shard/);

  const html = makeBundle([100]);
  html.files.set("tokenizer.json", enc("<!doctype html><html></html>"));
  server.reset(html);
  e = await loadError(openBundle(server.base, { cache: "none" }));
  assert.equal(e.code, "bad_bundle");
  assert.match(e.message, /tokenizer\.json .* not valid JSON \(the server sent HTML/);

  const notWasm = makeBundle([100]);
  notWasm.files.set("model_wasm.wasm", enc("<html>"));
  server.reset(notWasm);
  const b = await openBundle(server.base, { cache: "none" });
  assert.equal((await loadError(b.library("wasm"))).code, "bad_bundle");
});

test("bad options: LoadError bad_option / bad_url", async () => {
  server.reset(makeBundle([1]));
  assert.equal((await loadError(openBundle(server.base, { concurrency: 0 }))).code, "bad_option");
  assert.equal((await loadError(openBundle(server.base, { concurrency: 1.5 }))).code, "bad_option");
  assert.equal((await loadError(openBundle("relative/bundle"))).code, "bad_url");
  assert.equal((await loadError(openBundle(server.base, { cache: "opfs" }))).code, "cache_unavailable");
  assert.equal((await loadError(openBundle(server.base, { cache: "cache-api" }))).code, "cache_unavailable");
});

// ---------------------------------------------------------------------------------------------
// memory

test("released shards are read again from the store, or fetched again without one", async () => {
  const bundle = makeBundle(SIZES);
  server.reset(bundle);
  const store = new RecordingStore();
  const b = await openBundle(server.base, { store });
  b.shardUploaded(2);
  store.calls = [];
  assert.deepEqual(await b.shardBytes(2), bundle.shards[2]);
  assert.equal(store.calls.filter((c) => c.startsWith("get")).length, 1);
  assert.equal(server.count(bundle.names[2]), 1, "read from the store, not the network");
  await b.shardBytes(2);
  assert.equal(store.calls.length, 1, "held again after the re-read");

  server.reset(bundle);
  const none = await openBundle(server.base, { cache: "none" });
  none.releaseShard(0);
  assert.deepEqual(await none.shardBytes(0), bundle.shards[0]);
  assert.equal(server.count(bundle.names[0]), 2, "without a store, a released shard is downloaded again");
  await assert.rejects(none.shardBytes(SIZES.length), RangeError);
});

test("holdShards false: nothing is held, every shardBytes reads the store and verifies", async () => {
  const bundle = makeBundle(SIZES);
  server.reset(bundle);
  const store = new RecordingStore();
  const b = await openBundle(server.base, { store, holdShards: false });
  store.calls = [];
  for (let i = 0; i < SIZES.length; i++) assert.deepEqual(await b.shardBytes(i), bundle.shards[i]);
  assert.equal(store.calls.filter((c) => c.startsWith("get")).length, SIZES.length);
  assert.equal(server.shardRequests, SIZES.length, "no shard downloaded twice");
  // a store entry that went bad after the load is caught on the read-back
  const key = shardCacheKey(`${server.base}/${bundle.names[6]}`, sha256(bundle.shards[6]));
  store.entries.set(key, new Uint8Array(3));
  assert.deepEqual(await b.shardBytes(6), bundle.shards[6]);
  assert.equal(server.count(bundle.names[6]), 2);
});

// ---------------------------------------------------------------------------------------------
// files outside the bundle

test("a bundle naming files outside its folder: LoadError bad_bundle before anything is fetched from them", async () => {
  const port = new URL(server.base).port;
  const escapes = [
    "../params_shard_0.bin", "../../etc/passwd", "sub/../../x.bin", "%2e%2e/x.bin", "sub/%2E%2E/%2e%2e/x.bin",
    "sub/..%2f..%2fx.bin", "..\\x.bin", "sub\\..\\..\\x.bin", "/etc/passwd", "/b0/params_shard_0.bin",
    "http://evil.example/params_shard_0.bin", "//evil.example/x.bin", `http://localhost:${port}/x.bin`,
    "https://127.0.0.1/x.bin", "data:application/octet-stream;base64,AAAA", "javascript:alert(1)", ".", "./",
  ];
  for (const dataPath of escapes) {
    server.reset(makeBundle([100, 200], { cache: (c) => { c.records[1].dataPath = dataPath; } }));
    const e = await loadError(openBundle(server.base, { cache: "none" }));
    assert.equal(e.code, "bad_bundle", `${dataPath}: ${e.message}`);
    assert.match(e.message, /^tensor-cache\.json: shard 1's dataPath .* outside the bundle folder/, dataPath);
    assert.match(e.message, /kiln build/);
    assert.equal(server.shardRequests, 0, `${dataPath}: no shard is fetched`);
    assert.deepEqual(server.paths.filter((p) => !/\/(kiln-config|tensor-cache|tokenizer|tokenizer_config)\.json$/.test(p)), [],
                     `${dataPath}: only the bundle's metadata was requested`);
  }
  for (const library of ["../model_wasm.wasm", "http://evil.example/model_wasm.wasm", "/model_wasm.wasm"]) {
    server.reset(makeBundle([100], { config: (c) => { c.libraries.wasm = library; } }));
    const e = await loadError(openBundle(server.base, { cache: "none" }));
    assert.equal(e.code, "bad_bundle");
    assert.match(e.message, /^kiln-config\.json: libraries\.wasm .* outside the bundle folder/);
    assert.equal(server.shardRequests, 0);
  }
  server.reset(makeBundle([100], { config: (c) => { c.tokenizer_files = ["tokenizer.json", "../../tokenizer.json"]; } }));
  const t = await loadError(openBundle(server.base, { cache: "none" }));
  assert.match(t.message, /tokenizer_files\[1\] .* outside the bundle folder/);

  // Files in subfolders of the bundle, and names with dots that are not segments, are fine.
  const nested = makeBundle([100, 200], { cache: (c) => { c.records[0].dataPath = "weights/params_shard_0.bin"; c.records[1].dataPath = "..params_shard_1..bin"; } });
  nested.files.set("weights/params_shard_0.bin", nested.shards[0]);
  nested.files.set("..params_shard_1..bin", nested.shards[1]);
  server.reset(nested);
  const ok = await openBundle(server.base, { cache: "none" });
  assert.deepEqual(await ok.shardBytes(0), nested.shards[0]);
  assert.deepEqual(await ok.shardBytes(1), nested.shards[1]);
});

test("a kiln-config.json context size beyond int32: LoadError bad_bundle", async () => {
  server.reset(makeBundle([100], { config: (c) => { c.context_window_size = 2 ** 33; } }));
  const e = await loadError(openBundle(server.base, { cache: "none" }));
  assert.equal(e.code, "bad_bundle");
  assert.match(e.message, /context_window_size must be a positive integer below 2\^31/);
});

// ---------------------------------------------------------------------------------------------
// stalled downloads

test("a stalled shard: LoadError timeout after stallTimeoutMs, and a retry fetches only what was not verified", async () => {
  const bundle = makeBundle(SIZES);
  const store = new RecordingStore();
  server.reset(bundle, { stall: new Set([bundle.names[3]]) });
  const started = performance.now();
  const e = await loadError(openBundle(server.base, { store, concurrency: 1, stallTimeoutMs: 300 }));
  const waited = performance.now() - started;
  assert.equal(e.code, "timeout", e.message);
  assert.equal(e.url, `${server.base}/${bundle.names[3]}`);
  assert.match(e.message, /weight shard params_shard_3\.bin from .* stalled: nothing arrived for 0\.3 s/);
  assert.match(e.message, /the 3 shards verified so far are cached/);
  assert.ok(waited >= 300 && waited < 5000, `failed after ${waited} ms`);
  for (let waitedClose = 0; server.inFlight > 0 && waitedClose < 3000; waitedClose += 20) await new Promise((r) => setTimeout(r, 20));
  assert.equal(server.inFlight, 0, "the stalled request was cancelled");

  server.reset(bundle, {}, true);
  const b = await openBundle(server.base, { store, concurrency: 1, stallTimeoutMs: 300 });
  for (let i = 0; i < 3; i++) assert.equal(server.count(bundle.names[i]), 0, `verified shard ${i} is not fetched again`);
  for (let i = 3; i < SIZES.length; i++) assert.equal(server.count(bundle.names[i]), 1, `shard ${i} is fetched`);
  assert.deepEqual(await b.shardBytes(3), bundle.shards[3]);
});

test("a server that never answers: LoadError timeout; a slow download that keeps sending does not time out", async () => {
  const bundle = makeBundle(SIZES);
  server.reset(bundle, { hang: new Set(["tokenizer.json"]) });
  const e = await loadError(openBundle(server.base, { cache: "none", stallTimeoutMs: 200 }));
  assert.equal(e.code, "timeout");
  assert.match(e.message, /tokenizer\.json from .* stalled/);

  server.reset(bundle, { hang: new Set([bundle.names[5]]) });
  const f = await loadError(openBundle(server.base, { cache: "none", stallTimeoutMs: 200 }));
  assert.equal(f.code, "timeout");
  assert.match(f.message, /params_shard_5\.bin/);

  // 150 kB at 5 kB per 50 ms: 1.5 s in all, but never 500 ms without bytes.
  server.reset(bundle, { trickle: new Set([bundle.names[0], "tokenizer.json"]) });
  const started = performance.now();
  const b = await openBundle(server.base, { cache: "none", stallTimeoutMs: 500 });
  assert.ok(performance.now() - started > 1000);
  assert.deepEqual(await b.shardBytes(0), bundle.shards[0]);

  for (const bad of [0, -1, Number.NaN, "10"]) {
    assert.equal((await loadError(openBundle(server.base, { stallTimeoutMs: bad as any }))).code, "bad_option");
  }
});
