// The bundle loader: fetch a kiln bundle's metadata, then every weight shard in parallel, verified.
//
//   const bundle = await openBundle("https://host/bundles/my-model/", { onProgress });
//   const lib = await bundle.library("webgpu");
//   for (let i = 0; i < bundle.tensorCache.records.length; i++) {
//     upload(await bundle.shardBytes(i));
//     bundle.shardUploaded(i);            // "upload" progress; the loader drops its copy
//   }
//
// Design:
// - openBundle fetches kiln-config.json, tensor-cache.json, tokenizer.json and tokenizer_config.json
//   in parallel and validates what the runtime reads (LoadError "bad_bundle" otherwise). It then
//   prefetches EVERY shard before it resolves, so all download/integrity/quota errors surface in one
//   place, from openBundle. (Streaming shards into the upload while later ones still download would
//   overlap the two, but the upload is short next to the download and errors would then surface from
//   the middle of the model's upload loop.)
// - Shards are obtained by a pool of `concurrency` workers (default 4) that take shard indices in
//   order; each worker has at most one request in flight, so never more than `concurrency` fetches
//   run at once. Per shard: read the store; on a hit, verify; on a miss or a failed verification
//   (the bad entry is evicted), fetch, verify, put into the store. Every shard gets one more network
//   fetch after a failed verification (bypassing the HTTP cache): a copy that fails twice (cached +
//   fresh, or fresh + fresh) is LoadError "integrity", the server's copy being corrupt. With a store,
//   shard requests use `cache: "no-store"`, so the browser does not keep a second copy of the weights.
// - Verification is WebCrypto SHA-256 of the whole shard against `sha256` in tensor-cache.json;
//   shards without one are refused (a WebLLM cache carries only md5sum; rebuild with kiln build).
// - Memory: by default the verified bytes of every shard stay in JS memory until the caller says
//   the shard is uploaded (`shardUploaded(i)` or `releaseShard(i)`), so peak memory during load is
//   the whole weight size (ParamBytes) plus what the upload target holds. With a persistent store
//   (`cache: "cache-api" | "opfs"`), `holdShards: false` keeps nothing: the prefetch only verifies
//   and stores, and `shardBytes(i)` reads the shard back and verifies it again (peak: about
//   `concurrency` shards, at the cost of a second read and hash). A released shard is re-obtained
//   the same way (store, else network), so `shardBytes` is always safe to call. With `cache: "none"`
//   shards are always held, since re-obtaining one means downloading it again.
// - Progress: `bytesDone / bytesTotal` are per phase and never decrease within a phase; each phase
//   ends with bytesDone === bytesTotal (the sum of the shards' nbytes). "download" counts shard bytes
//   as they arrive from the network or the store (a refetched shard is not counted twice); "verify"
//   counts shards whose hash matched; "upload" counts shards reported through shardUploaded.
//   MB/s (10^6 bytes) is over a moving window of the last few seconds; etaSeconds is null until a
//   rate is known. Download events are throttled to one per 50 ms plus one per finished shard.
// - The store key of a shard is its absolute URL plus its sha256 (`?kiln-sha256=...`), so a rebuilt
//   bundle at the same URL never reads stale shards. Libraries (.wasm) have no hash in the bundle and
//   are not put in the store; they go through the browser's HTTP cache.
// - A fetch or HTTP failure is LoadError "fetch_failed" (not retried: a second openBundle reuses the
//   shards already stored). `signal` aborts everything in flight: LoadError "aborted".
// - A response that sends nothing (no headers, or no body bytes) for `stallTimeoutMs` (default 30 s)
//   is cancelled: LoadError "timeout". Servers and networks that stall leave no other sign; browsers
//   would wait forever. As for fetch_failed, a second openBundle reuses the shards already stored.
// - Every file a bundle names (shards, libraries, tokenizer files) must resolve to a URL under the
//   bundle's base URL: same scheme, host and port, below its path, no "." or ".." segment (also
//   percent-encoded) and no backslash. Anything else is LoadError "bad_bundle" before any fetch: a
//   bundle cannot make the page fetch from another origin or from elsewhere on its own origin.

/* eslint-disable @typescript-eslint/no-explicit-any */

import type { ShardRecord, TensorCacheIndex } from "./model";

export type CacheMode = "cache-api" | "opfs" | "none";

export interface LoadProgress {
  phase: "download" | "verify" | "upload";
  bytesDone: number;
  bytesTotal: number;
  mbPerSecond: number;
  etaSeconds: number | null;
  /** The shard the event is about, when it is about one. */
  file?: string;
}

/** Where verified shards persist between page loads. Keys are strings (absolute URL + sha256). */
export interface ShardStore {
  get(key: string): Promise<Uint8Array | undefined>;
  put(key: string, bytes: Uint8Array): Promise<void>;
  delete(key: string): Promise<void>;
}

export type LoadErrorCode =
  | "fetch_failed"       // network error or HTTP status other than 2xx
  | "integrity"          // a shard failed sha256 verification twice
  | "quota"              // the store is full
  | "cache_failed"       // the store failed otherwise
  | "cache_unavailable"  // the requested cache mode does not exist here
  | "bad_bundle"         // a bundle file is missing a field, malformed, or not what it should be
  | "bad_url"            // the bundle URL cannot be resolved
  | "bad_option"         // an invalid openBundle option
  | "timeout"            // a download received nothing for stallTimeoutMs
  | "aborted";           // the signal aborted

export class LoadError extends Error {
  readonly code: LoadErrorCode;
  /** The URL concerned, when there is one. */
  readonly url?: string;
  /** The HTTP status, for fetch_failed after a response. */
  readonly status?: number;
  constructor(code: LoadErrorCode, message: string, extra: { url?: string; status?: number; cause?: unknown } = {}) {
    super(message, extra.cause === undefined ? undefined : { cause: extra.cause });
    this.name = "LoadError";
    this.code = code;
    this.url = extra.url;
    this.status = extra.status;
  }
}

export interface OpenBundleOptions {
  /** Default: "cache-api" where `globalThis.caches` exists, else "none". Ignored when `store` is given. */
  cache?: CacheMode;
  /** A store of your own (tests use MemoryShardStore); overrides `cache`. */
  store?: ShardStore;
  /** Shard fetches in flight at most; default 4. */
  concurrency?: number;
  onProgress?: (p: LoadProgress) => void;
  /** Aborts loading, and later shard reads of the bundle. */
  signal?: AbortSignal;
  /** Default: globalThis.fetch. */
  fetch?: typeof fetch;
  /**
   * Keep verified shard bytes in memory until released (default true). false only has an effect
   * with a store: shards are then read back from the store (and verified again) by shardBytes.
   */
  holdShards?: boolean;
  /**
   * A request that receives nothing (headers or body bytes) for this many milliseconds is cancelled
   * with LoadError "timeout". Default 30000; Infinity disables it.
   */
  stallTimeoutMs?: number;
}

export const DEFAULT_STALL_TIMEOUT_MS = 30_000;

export interface LoadedBundle {
  /** The bundle's base URL, absolute, ending in "/". */
  url: string;
  /** kiln-config.json (validated for the fields the runtime reads). */
  config: any;
  tensorCache: TensorCacheIndex;
  tokenizerJson: any;
  tokenizerConfig: any;
  /** Which store shards went to: a CacheMode, or "custom" for opts.store. */
  cacheMode: CacheMode | "custom";
  /** The kernel library for a backend (fetched on first call, then kept). */
  library(backend: "webgpu" | "wasm"): Promise<Uint8Array>;
  /** Shard `index`'s bytes, sha256-verified. */
  shardBytes(index: number): Promise<Uint8Array>;
  /** Drop the loader's copy of a shard (a later shardBytes re-reads it from the store or network). */
  releaseShard(index: number): void;
  /** Report shard `index` uploaded: emits "upload" progress and releases the loader's copy. */
  shardUploaded(index: number): void;
}

// ---------------------------------------------------------------------------------------------
// stores

export const SHARD_CACHE_NAME = "kiln-shards";

/** In-memory store (tests, or a page that wants no persistence but a shared cache across loads). */
export class MemoryShardStore implements ShardStore {
  readonly entries = new Map<string, Uint8Array>();
  async get(key: string): Promise<Uint8Array | undefined> {
    return this.entries.get(key);
  }
  async put(key: string, bytes: Uint8Array): Promise<void> {
    this.entries.set(key, bytes);
  }
  async delete(key: string): Promise<void> {
    this.entries.delete(key);
  }
}

/** The Cache API (`caches.open("kiln-shards")`); keys are the shard URLs with their sha256. */
export class CacheApiShardStore implements ShardStore {
  private constructor(private readonly cache: any) {}

  static async open(name = SHARD_CACHE_NAME): Promise<CacheApiShardStore> {
    const caches = (globalThis as any).caches;
    if (!caches) throw new LoadError("cache_unavailable", "the Cache API is not available here (it needs a secure context: https or localhost); use cache: \"opfs\" or cache: \"none\"");
    return new CacheApiShardStore(await caches.open(name));
  }

  async get(key: string): Promise<Uint8Array | undefined> {
    const response = await this.cache.match(key);
    return response ? new Uint8Array(await response.arrayBuffer()) : undefined;
  }

  async put(key: string, bytes: Uint8Array): Promise<void> {
    await this.cache.put(key, new Response(bytes, { headers: { "Content-Type": "application/octet-stream" } }));
  }

  async delete(key: string): Promise<void> {
    await this.cache.delete(key);
  }
}

/** The Origin Private File System: one file per shard in the folder "kiln-shards", named by sha256(key). */
export class OpfsShardStore implements ShardStore {
  private constructor(private readonly dir: any) {}

  static async open(name = SHARD_CACHE_NAME): Promise<OpfsShardStore> {
    const storage = (globalThis as any).navigator?.storage;
    if (!storage?.getDirectory) throw new LoadError("cache_unavailable", "the Origin Private File System is not available here (navigator.storage.getDirectory); use cache: \"cache-api\" or cache: \"none\"");
    const root = await storage.getDirectory();
    return new OpfsShardStore(await root.getDirectoryHandle(name, { create: true }));
  }

  private async fileName(key: string): Promise<string> {
    return hex(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(key))) + ".bin";
  }

  async get(key: string): Promise<Uint8Array | undefined> {
    let handle: any;
    try {
      handle = await this.dir.getFileHandle(await this.fileName(key));
    } catch (e) {
      if ((e as any)?.name === "NotFoundError") return undefined;
      throw e;
    }
    return new Uint8Array(await (await handle.getFile()).arrayBuffer());
  }

  async put(key: string, bytes: Uint8Array): Promise<void> {
    const handle = await this.dir.getFileHandle(await this.fileName(key), { create: true });
    if (handle.createWritable) {
      const writable = await handle.createWritable();
      try {
        await writable.write(bytes);
        await writable.close();
      } catch (e) {
        await writable.abort?.().catch(() => {});
        throw e;
      }
    } else if (handle.createSyncAccessHandle) { // Safari outside workers has no createWritable
      const access = await handle.createSyncAccessHandle();
      try {
        access.truncate(0);
        access.write(bytes, { at: 0 });
        access.flush();
      } finally {
        access.close();
      }
    } else {
      throw new Error("this browser can write OPFS files neither with createWritable nor createSyncAccessHandle");
    }
  }

  async delete(key: string): Promise<void> {
    try {
      await this.dir.removeEntry(await this.fileName(key));
    } catch (e) {
      if ((e as any)?.name !== "NotFoundError") throw e;
    }
  }
}

/** Delete every shard kiln has stored with a cache mode (e.g. to free space after rebuilds). */
export async function clearShardCache(cache: "cache-api" | "opfs"): Promise<void> {
  if (cache === "cache-api") {
    await (globalThis as any).caches?.delete(SHARD_CACHE_NAME);
  } else {
    const root = await (globalThis as any).navigator?.storage?.getDirectory?.();
    await root?.removeEntry(SHARD_CACHE_NAME, { recursive: true }).catch((e: any) => {
      if (e?.name !== "NotFoundError") throw e;
    });
  }
}

/** The store key of a shard: its absolute URL with its sha256 as a query parameter. */
export function shardCacheKey(shardUrl: string, sha256: string): string {
  const url = new URL(shardUrl);
  url.hash = "";
  url.searchParams.append("kiln-sha256", sha256);
  return url.href;
}

// ---------------------------------------------------------------------------------------------
// helpers

function hex(digest: ArrayBuffer): string {
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

async function sha256Hex(bytes: Uint8Array): Promise<string> {
  return hex(await crypto.subtle.digest("SHA-256", bytes));
}

function isQuotaError(e: any): boolean {
  return e?.name === "QuotaExceededError" || e?.code === 22 || e?.name === "NS_ERROR_DOM_QUOTA_REACHED";
}

function abortedError(): LoadError {
  return new LoadError("aborted", "loading the bundle was aborted");
}

function describe(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

const REBUILD = "rebuild the bundle with `kiln build` and upload the whole output folder";

/** Measures bytes/s over a moving window and emits throttled progress events for one phase. */
class Meter {
  private samples: { t: number; bytes: number }[] = [];
  private done = 0;
  private lastEmit = -Infinity;
  private lastEmitted = -1;

  constructor(private readonly phase: LoadProgress["phase"], private readonly total: number,
              private readonly emit: ((p: LoadProgress) => void) | undefined,
              private readonly windowMs = 3000, private readonly throttleMs = 0) {}

  /** Sets the phase's bytes done (never lowered); emits when due, or always with `force`. */
  update(bytesDone: number, file?: string, force = false): void {
    this.done = Math.min(this.total, Math.max(this.done, bytesDone));
    const t = performance.now();
    this.samples.push({ t, bytes: this.done });
    while (this.samples.length > 2 && t - this.samples[1].t >= this.windowMs) this.samples.shift();
    if (!this.emit || this.done === this.lastEmitted) return;
    if (!force && this.done !== this.total && t - this.lastEmit < this.throttleMs) return;
    this.lastEmit = t;
    this.lastEmitted = this.done;
    const first = this.samples[0];
    const dt = (t - first.t) / 1000;
    const rate = dt > 0 ? (this.done - first.bytes) / dt : 0;
    const left = this.total - this.done;
    this.emit({
      phase: this.phase, bytesDone: this.done, bytesTotal: this.total, mbPerSecond: rate / 1e6,
      etaSeconds: left === 0 ? 0 : rate > 0 ? left / rate : null, ...(file === undefined ? {} : { file }),
    });
  }

  start(): void {
    this.samples = [{ t: performance.now(), bytes: this.done }];
  }

  get bytesDone(): number {
    return this.done;
  }
}

/** Percent-decoding that never throws (a malformed escape stays as it is). */
function decodeLoosely(text: string): string {
  return text.replace(/(%[0-9a-fA-F]{2})+/g, (run) => {
    try {
      return decodeURIComponent(run);
    } catch {
      return run;
    }
  });
}

/**
 * The absolute URL of `path`, a file a bundle config names, resolved against the bundle's base URL;
 * LoadError "bad_bundle" when it does not stay inside the bundle folder.
 */
export function bundleFileUrl(base: URL, path: string, file: string, field: string): string {
  let url: URL | undefined;
  try {
    url = new URL(path, base);
  } catch {
    url = undefined;
  }
  const inside = url !== undefined && url.protocol === base.protocol && url.host === base.host
    && url.username === base.username && url.password === base.password
    && url.pathname.startsWith(base.pathname) && url.pathname.length > base.pathname.length;
  // "." and ".." are resolved by the URL parser, but a server may still decode %2F or a backslash
  // into a separator of its own, so such names are refused too.
  const rest = inside ? decodeLoosely(url!.pathname.slice(base.pathname.length)) : "";
  if (!inside || rest.split(/[/\\]/).some((seg) => seg === "." || seg === "..") || rest.includes("\\")) {
    const where = url ? `resolves to ${url.href}, ` : "is not a valid URL, ";
    fail(file, `${field} ${JSON.stringify(path)} ${where}outside the bundle folder ${base.href} (a bundle may only name files inside its own folder)`);
  }
  url!.hash = "";
  return url!.href;
}

function resolveBase(bundleUrl: string): URL {
  let url: URL;
  try {
    url = new URL(bundleUrl, (globalThis as any).location?.href);
  } catch (e) {
    throw new LoadError("bad_url", `cannot resolve the bundle URL ${JSON.stringify(bundleUrl)}: ${describe(e)}; pass an absolute URL (relative ones need a page location)`, { cause: e });
  }
  url.hash = "";
  url.search = "";
  if (!url.pathname.endsWith("/")) url.pathname += "/";
  return url;
}

// ---------------------------------------------------------------------------------------------
// validation

function fail(file: string, what: string): never {
  throw new LoadError("bad_bundle", `${file}: ${what}; ${REBUILD}`);
}

const isInt = (v: unknown) => Number.isInteger(v);
const INT32_MAX = 2 ** 31 - 1;
const isObject = (v: unknown) => v !== null && typeof v === "object" && !Array.isArray(v);

function validateConfig(config: any): void {
  const file = "kiln-config.json";
  if (!isObject(config)) fail(file, "is not a JSON object");
  if (config.format_version !== 1) {
    fail(file, config.format_version === undefined ? "missing field format_version"
      : `format_version ${JSON.stringify(config.format_version)} is not supported by this runtime (it reads 1)`);
  }
  const need = (path: string, ok: (v: any) => boolean, what: string) => {
    let v: any = config;
    for (const part of path.split(".")) v = isObject(v) ? v[part] : undefined;
    if (v === undefined) fail(file, `missing field ${path}`);
    if (!ok(v)) fail(file, `field ${path} must be ${what}, got ${JSON.stringify(v)}`);
  };
  need("quantization", (v) => typeof v === "string", "a string");
  // The runtime passes these to the kernels as int32: a larger value would wrap around.
  need("context_window_size", (v) => isInt(v) && v > 0 && v <= INT32_MAX, "a positive integer below 2^31");
  need("prefill_chunk_size", (v) => isInt(v) && v > 0 && v <= INT32_MAX, "a positive integer below 2^31");
  need("sliding_window_size", isInt, "an integer (-1 for none)");
  need("model_config.vocab_size", (v) => isInt(v) && v > 0, "a positive integer");
  need("model_config.hidden_size", (v) => isInt(v) && v > 0, "a positive integer");
  need("tokens.stop_token_ids", (v) => Array.isArray(v) && v.every(isInt), "an array of token ids");
  need("sampling", isObject, "an object");
  need("webgpu_features", (v) => Array.isArray(v) && v.every((f: unknown) => typeof f === "string"), "an array of feature names");
  need("libraries", (v) => isObject(v) && ["webgpu", "wasm"].some((k) => typeof v[k] === "string")
    && Object.values(v).every((p) => typeof p === "string"), "an object naming a webgpu and/or wasm library file");
  if (config.chat_template !== undefined && config.chat_template !== null && typeof config.chat_template !== "string") {
    fail(file, "field chat_template must be a string or null");
  }
}

function validateTensorCache(cache: any): void {
  const file = "tensor-cache.json";
  if (!isObject(cache)) fail(file, "is not a JSON object");
  if (!Array.isArray(cache.records)) fail(file, "missing field records (the list of weight shards)");
  if (cache.records.length === 0) fail(file, "lists no weight shards");
  cache.records.forEach((shard: any, i: number) => {
    const where = `shard ${i}${typeof shard?.dataPath === "string" ? ` (${shard.dataPath})` : ""}`;
    if (!isObject(shard)) fail(file, `${where} is not an object`);
    if (typeof shard.dataPath !== "string" || shard.dataPath === "") fail(file, `${where}: missing field dataPath`);
    if (!isInt(shard.nbytes) || shard.nbytes < 0) fail(file, `${where}: missing or invalid field nbytes`);
    if (shard.sha256 === undefined) {
      fail(file, `${where} has no sha256 to verify it against (a WebLLM/MLC tensor cache has only md5sum)`);
    }
    if (typeof shard.sha256 !== "string" || !/^[0-9a-fA-F]{64}$/.test(shard.sha256)) {
      fail(file, `${where}: sha256 must be 64 hex digits, got ${JSON.stringify(shard.sha256)}`);
    }
    if (!Array.isArray(shard.records)) fail(file, `${where}: missing field records (its tensors)`);
    for (const rec of shard.records) {
      if (!isObject(rec) || typeof rec.name !== "string" || !isInt(rec.byteOffset) || !isInt(rec.nbytes)
          || !Array.isArray(rec.shape) || typeof rec.dtype !== "string") {
        fail(file, `${where}: a tensor record lacks name, shape, dtype, byteOffset or nbytes`);
      }
      if (rec.byteOffset < 0 || rec.nbytes < 0 || rec.byteOffset + rec.nbytes > shard.nbytes) {
        fail(file, `${where}: tensor ${rec.name} (bytes ${rec.byteOffset}..${rec.byteOffset + rec.nbytes}) lies outside the shard's ${shard.nbytes} bytes`);
      }
    }
  });
}

// ---------------------------------------------------------------------------------------------
// openBundle

export async function openBundle(bundleUrl: string, opts: OpenBundleOptions = {}): Promise<LoadedBundle> {
  const base = resolveBase(bundleUrl);
  const signal = opts.signal;
  const doFetch: typeof fetch = opts.fetch ?? ((globalThis as any).fetch as typeof fetch)?.bind(globalThis);
  if (!doFetch) throw new LoadError("bad_option", "no fetch function: pass opts.fetch (Node 18+ and browsers have a global fetch)");
  const concurrency = opts.concurrency ?? 4;
  if (!isInt(concurrency) || concurrency < 1) {
    throw new LoadError("bad_option", `concurrency must be a positive integer, got ${JSON.stringify(opts.concurrency)}`);
  }
  const stallMs = opts.stallTimeoutMs ?? DEFAULT_STALL_TIMEOUT_MS;
  if (typeof stallMs !== "number" || !(stallMs > 0)) {
    throw new LoadError("bad_option", `stallTimeoutMs must be a positive number of milliseconds (Infinity disables it), got ${JSON.stringify(opts.stallTimeoutMs)}`);
  }
  const throwIfAborted = (s: AbortSignal | undefined = signal) => {
    if (signal?.aborted) throw abortedError();
    if (s?.aborted) throw new LoadError("aborted", "cancelled because another shard failed");
  };
  throwIfAborted();

  /**
   * A request's stall watchdog: `signal` (for fetch) aborts when `signal` of the caller does, or
   * when `alive()` was not called for stallMs. `end()` stops it.
   */
  function watchdog(outer: AbortSignal | undefined) {
    const controller = new AbortController();
    const onAbort = () => controller.abort();
    outer?.addEventListener("abort", onAbort);
    if (outer?.aborted) controller.abort();
    let timer: ReturnType<typeof setTimeout> | undefined;
    let stalled = false;
    const alive = () => {
      clearTimeout(timer);
      if (Number.isFinite(stallMs)) timer = setTimeout(() => { stalled = true; controller.abort(); }, stallMs);
    };
    alive();
    return {
      signal: controller.signal,
      alive,
      get stalled() { return stalled; },
      end() { clearTimeout(timer); outer?.removeEventListener("abort", onAbort); },
    };
  }
  type Watchdog = ReturnType<typeof watchdog>;

  // Set once shards load: what a retry will not download again.
  let keptNote = () => "";
  const stallError = (what: string, url: string) => {
    const kept = keptNote();
    return new LoadError("timeout", `${what} from ${url} stalled: nothing arrived for ${stallMs / 1000} s; check the network and load the bundle again${kept}, or raise stallTimeoutMs`, { url });
  };

  /** GET `url`; maps network, HTTP, stall and abort failures to LoadErrors. The caller ends `watch`. */
  async function get(url: string, what: string, watch: Watchdog, s: AbortSignal | undefined, init: RequestInit = {}): Promise<Response> {
    let response: Response;
    try {
      response = await doFetch(url, { ...init, signal: watch.signal });
    } catch (e) {
      throwIfAborted(s);
      if (watch.stalled) throw stallError(what, url);
      throw new LoadError("fetch_failed", `could not fetch ${what} from ${url}: ${describe(e)} (network error, CORS, or the server is down)`, { url, cause: e });
    }
    watch.alive();
    if (!response.ok) {
      response.body?.cancel().catch(() => {});
      const hint = response.status === 404 ? `; is ${base.href} a kiln bundle folder with all of its files uploaded?` : "";
      throw new LoadError("fetch_failed", `fetching ${what} from ${url} failed: HTTP ${response.status}${response.statusText ? ` ${response.statusText}` : ""}${hint}`,
                          { url, status: response.status });
    }
    return response;
  }

  /**
   * The whole body of a GET of `url`, read chunk by chunk (each chunk feeds the stall watchdog and
   * `onBytes`) into a buffer of `expected` bytes when that is known.
   */
  async function download(url: string, what: string, s: AbortSignal | undefined, init: RequestInit = {},
                          expected = 0, onBytes?: (length: number) => void): Promise<Uint8Array> {
    const watch = watchdog(s);
    try {
      const response = await get(url, what, watch, s, init);
      try {
        if (!response.body) return new Uint8Array(await response.arrayBuffer());
        const reader = response.body.getReader();
        let buffer = new Uint8Array(expected);
        let length = 0;
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          watch.alive();
          if (length + value.byteLength > buffer.byteLength) { // more than expected: grow (a corrupt shard is kept to report)
            const bigger = new Uint8Array(Math.max(buffer.byteLength * 2, length + value.byteLength, 65536));
            bigger.set(buffer.subarray(0, length));
            buffer = bigger;
          }
          buffer.set(value, length);
          length += value.byteLength;
          onBytes?.(length);
        }
        return length === buffer.byteLength ? buffer : buffer.slice(0, length);
      } catch (e) {
        throwIfAborted(s);
        if (watch.stalled) throw stallError(what, url);
        throw new LoadError("fetch_failed", `downloading ${what} from ${url} broke off: ${describe(e)}`, { url, cause: e });
      }
    } finally {
      watch.end();
    }
  }

  async function getJson(file: string): Promise<any> {
    const url = new URL(file, base).href;
    const text = new TextDecoder().decode(await download(url, file, signal));
    try {
      return JSON.parse(text);
    } catch (e) {
      const html = /^\s*</.test(text) ? " (the server sent HTML: check the bundle URL)" : "";
      throw new LoadError("bad_bundle", `${file} at ${url} is not valid JSON${html}: ${describe(e)}; ${REBUILD}`, { url, cause: e });
    }
  }

  // -- metadata -------------------------------------------------------------------------------
  const [config, tensorCache, tokenizerJson, tokenizerConfig] = await Promise.all(
    ["kiln-config.json", "tensor-cache.json", "tokenizer.json", "tokenizer_config.json"].map(getJson));
  validateConfig(config);
  validateTensorCache(tensorCache);
  if (!isObject(tokenizerJson) || !isObject(tokenizerJson.model)) fail("tokenizer.json", "is not a tokenizers JSON file (no model field)");
  if (!isObject(tokenizerConfig)) fail("tokenizer_config.json", "is not a JSON object");
  // Every file the configs name stays inside the bundle folder, checked before anything is fetched.
  const libraryUrls = new Map<string, string>();
  for (const [backend, file] of Object.entries(config.libraries as Record<string, string>)) {
    libraryUrls.set(backend, bundleFileUrl(base, file, "kiln-config.json", `libraries.${backend}`));
  }
  if (typeof config.tensor_cache === "string") bundleFileUrl(base, config.tensor_cache, "kiln-config.json", "tensor_cache");
  if (Array.isArray(config.tokenizer_files)) {
    config.tokenizer_files.forEach((f: unknown, i: number) => {
      if (typeof f === "string") bundleFileUrl(base, f, "kiln-config.json", `tokenizer_files[${i}]`);
    });
  }

  // -- store ----------------------------------------------------------------------------------
  let store: ShardStore | undefined;
  let cacheMode: CacheMode | "custom";
  if (opts.store) {
    store = opts.store;
    cacheMode = "custom";
  } else {
    const explicit = opts.cache !== undefined;
    cacheMode = opts.cache ?? ((globalThis as any).caches ? "cache-api" : "none");
    if (cacheMode !== "cache-api" && cacheMode !== "opfs" && cacheMode !== "none") {
      throw new LoadError("bad_option", `cache must be "cache-api", "opfs" or "none", got ${JSON.stringify(opts.cache)}`);
    }
    if (cacheMode !== "none") {
      try {
        store = cacheMode === "cache-api" ? await CacheApiShardStore.open() : await OpfsShardStore.open();
      } catch (e) {
        if (explicit) {
          throw e instanceof LoadError ? e : new LoadError("cache_unavailable",
            `cannot open the ${cacheMode} shard store: ${describe(e)}; use cache: "none"`, { cause: e });
        }
        store = undefined; // the default cache is best effort (e.g. a private window refuses it)
        cacheMode = "none";
      }
    }
  }
  const hold = opts.holdShards !== false || store === undefined;

  // -- shards ---------------------------------------------------------------------------------
  const shards: ShardRecord[] = tensorCache.records;
  const urls = shards.map((s, i) => bundleFileUrl(base, s.dataPath, "tensor-cache.json", `shard ${i}'s dataPath`));
  const keys = shards.map((s, i) => shardCacheKey(urls[i], s.sha256!.toLowerCase()));
  const total = shards.reduce((n, s) => n + s.nbytes, 0);
  const downloaded = new Array<number>(shards.length).fill(0); // per shard, the most bytes counted
  const verified = new Set<number>();
  const uploaded = new Set<number>();
  const held = new Map<number, Uint8Array>();
  let downloadedSum = 0;
  let verifiedSum = 0;
  let uploadedSum = 0;
  keptNote = () => (store && verified.size > 0 ? ` (the ${verified.size} shards verified so far are cached and will not be downloaded again)` : "");
  const downloadMeter = new Meter("download", total, opts.onProgress, 3000, 50);
  const verify = new Meter("verify", total, opts.onProgress, 3000, 0);
  const upload = new Meter("upload", total, opts.onProgress, 3000, 0);

  const countDownload = (i: number, bytes: number, force: boolean) => {
    const capped = Math.min(bytes, shards[i].nbytes);
    if (capped > downloaded[i]) {
      downloadedSum += capped - downloaded[i];
      downloaded[i] = capped;
    }
    downloadMeter.update(downloadedSum, shards[i].dataPath, force);
  };

  async function storeOp<T>(what: string, op: () => Promise<T>): Promise<T> {
    try {
      return await op();
    } catch (e) {
      if (isQuotaError(e)) {
        throw new LoadError("quota", `the browser's storage quota is exhausted while ${what} (the weights need ${(total / 1e6).toFixed(1)} MB); free space (e.g. delete old bundles with clearShardCache, or site data) or open the bundle with cache: "none"`, { cause: e });
      }
      throw new LoadError("cache_failed", `the ${cacheMode} shard store failed while ${what}: ${describe(e)}; open the bundle with cache: "none" to bypass it`, { cause: e });
    }
  }

  /** Download shard i, counting progress; the body is read into a buffer of the declared size. */
  async function fetchShard(i: number, s: AbortSignal | undefined, reload: boolean): Promise<Uint8Array> {
    // With a store of ours, keep the weights out of the HTTP cache (no second copy on disk); a
    // retry after a failed verification must not be answered from the HTTP cache either.
    const init: RequestInit = store ? { cache: "no-store" } : reload ? { cache: "reload" } : {};
    const bytes = await download(urls[i], `weight shard ${shards[i].dataPath}`, s, init, shards[i].nbytes,
                                 (length) => countDownload(i, length, false));
    countDownload(i, bytes.byteLength, true);
    return bytes;
  }

  /** Why `bytes` is not shard i, or null when its sha256 matches. */
  async function mismatch(i: number, bytes: Uint8Array): Promise<string | null> {
    const want = shards[i].sha256!.toLowerCase();
    const got = await sha256Hex(bytes);
    if (got === want) return null;
    return bytes.byteLength !== shards[i].nbytes
      ? `${bytes.byteLength} bytes instead of ${shards[i].nbytes}`
      : `sha256 ${got} instead of ${want}`;
  }

  function markVerified(i: number): void {
    if (!verified.has(i)) {
      verified.add(i);
      verifiedSum += shards[i].nbytes;
    }
    verify.update(verifiedSum, shards[i].dataPath, true);
  }

  /** Shard i, verified: from the store if it holds a good copy, else from the network (one retry). */
  async function obtain(i: number, s: AbortSignal | undefined): Promise<Uint8Array> {
    const file = shards[i].dataPath;
    let fetches = 0;
    let firstProblem: string | null = null;
    let bytes = store ? await storeOp(`reading ${file}`, () => store!.get(keys[i])) : undefined;
    throwIfAborted(s);
    let fromStore = bytes !== undefined;
    if (fromStore) countDownload(i, shards[i].nbytes, true);
    for (;;) {
      if (bytes === undefined) {
        bytes = await fetchShard(i, s, fetches > 0);
        fetches++;
        countDownload(i, shards[i].nbytes, true);
      }
      const problem = await mismatch(i, bytes);
      throwIfAborted(s);
      if (problem === null) {
        if (!fromStore && store) await storeOp(`storing ${file}`, () => store!.put(keys[i], bytes!));
        throwIfAborted(s);
        markVerified(i);
        return bytes;
      }
      const source = fromStore ? `the cached copy (${cacheMode} store)` : "the downloaded copy";
      if (fromStore) await storeOp(`evicting ${file}`, () => store!.delete(keys[i]));
      if (firstProblem !== null) {
        throw new LoadError("integrity",
          `weight shard ${file} failed verification twice: ${firstProblem}, then the fresh download from ${urls[i]} had ${problem}. ` +
          `The bundle on the server is corrupt or incomplete: rebuild it with \`kiln build\` and re-upload ${file} (with tensor-cache.json)`,
          { url: urls[i] });
      }
      firstProblem = `${source} had ${problem}`;
      bytes = undefined;
      fromStore = false;
    }
  }

  // Prefetch every shard with a pool of `concurrency` workers; the first failure stops the rest.
  const pool = new AbortController();
  const onAbort = () => pool.abort();
  signal?.addEventListener("abort", onAbort);
  if (signal?.aborted) pool.abort();
  try {
    downloadMeter.start();
    verify.start();
    let next = 0;
    let failure: { error: unknown } | undefined;
    const worker = async () => {
      while (failure === undefined && next < shards.length) {
        const i = next++;
        try {
          const bytes = await obtain(i, pool.signal);
          if (hold) held.set(i, bytes);
        } catch (e) {
          failure ??= { error: e };
          pool.abort();
        }
      }
    };
    const aborted = new Promise<void>((resolve) => {
      if (pool.signal.aborted) resolve();
      pool.signal.addEventListener("abort", () => resolve());
    });
    // Resolve on an abort at once, even while a store operation (which takes no signal) is pending.
    await Promise.race([Promise.all(Array.from({ length: Math.min(concurrency, shards.length) }, worker)), aborted]);
    throwIfAborted();
    if (failure) throw failure.error;
  } finally {
    signal?.removeEventListener("abort", onAbort);
  }
  if (total === 0) { // no bytes to count: still end each phase
    downloadMeter.update(0, undefined, true);
    verify.update(0, undefined, true);
  }
  upload.start();

  // -- the bundle -----------------------------------------------------------------------------
  const libraries = new Map<string, Promise<Uint8Array>>();
  const checkIndex = (index: number) => {
    if (!isInt(index) || index < 0 || index >= shards.length) {
      throw new RangeError(`shard index ${index} is out of range: the bundle has ${shards.length} shards`);
    }
  };

  return {
    url: base.href,
    config,
    tensorCache,
    tokenizerJson,
    tokenizerConfig,
    cacheMode,

    library(backend: "webgpu" | "wasm"): Promise<Uint8Array> {
      let promise = libraries.get(backend);
      if (!promise) {
        promise = (async () => {
          const file = config.libraries[backend];
          if (typeof file !== "string") {
            throw new LoadError("bad_bundle", `this bundle has no ${backend} library (kiln-config.json libraries: ${Object.keys(config.libraries).join(", ")}); rebuild it with \`kiln build --targets webgpu,wasm\``);
          }
          throwIfAborted();
          const url = libraryUrls.get(backend)!;
          const bytes = await download(url, `the ${backend} library ${file}`, signal);
          if (bytes.byteLength < 8 || bytes[0] !== 0 || bytes[1] !== 0x61 || bytes[2] !== 0x73 || bytes[3] !== 0x6d) {
            throw new LoadError("bad_bundle", `${file} at ${url} is not a WebAssembly module; ${REBUILD}`, { url });
          }
          return bytes;
        })();
        promise.catch(() => libraries.delete(backend)); // a failed fetch may be retried
        libraries.set(backend, promise);
      }
      return promise;
    },

    async shardBytes(index: number): Promise<Uint8Array> {
      checkIndex(index);
      const bytes = held.get(index);
      if (bytes) return bytes;
      throwIfAborted();
      const fresh = await obtain(index, signal);
      if (hold) held.set(index, fresh);
      return fresh;
    },

    releaseShard(index: number): void {
      checkIndex(index);
      held.delete(index);
    },

    shardUploaded(index: number): void {
      checkIndex(index);
      held.delete(index);
      if (!uploaded.has(index)) {
        uploaded.add(index);
        uploadedSum += shards[index].nbytes;
        upload.update(uploadedSum, shards[index].dataPath, true);
      }
    },
  };
}
