// The bundle loader: fetch a kiln bundle's metadata, then every weight shard in parallel, verified.
// The work is split by job: bundle_validate.ts (the metadata and file names), download.ts (HTTP,
// stalls), shards.ts (obtain, verify, count), shard_store.ts (the stores), progress.ts (events).
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
//   in parallel and validates them (the first two against their schemas in compiler/schema/, the
//   contract the compiler writes them by; LoadError "bad_bundle" otherwise). It then
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

import type { Backend, JsonObject, KilnConfig, TensorCacheIndex, TokenizerJson } from "./bundle_types";
import {
  bundleFileUrl, describe, isInt, REBUILD, resolveBase, validateKilnConfig, validateTensorCache, validateTokenizerConfig,
  validateTokenizerJson,
} from "./bundle_validate";
import { Downloader } from "./download";
import { LoadError } from "./errors";
import type { LoadProgress } from "./progress";
import { CacheApiShardStore, CacheMode, hasCacheApi, OpfsShardStore, ShardStore } from "./shard_store";
import { ShardSet } from "./shards";

// What this module exported before it was split; pages and tests import them from here.
export { LoadError } from "./errors";
export type { LoadErrorCode } from "./errors";
export type { LoadProgress } from "./progress";
export {
  CacheApiShardStore, clearShardCache, MemoryShardStore, OpfsShardStore, SHARD_CACHE_NAME, shardCacheKey,
} from "./shard_store";
export type { CacheMode, ShardStore } from "./shard_store";
export { bundleFileUrl } from "./bundle_validate";

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
  /** kiln-config.json, validated against kiln-config.schema.json. */
  config: KilnConfig;
  /** tensor-cache.json, validated against tensor-cache.schema.json. */
  tensorCache: TensorCacheIndex;
  tokenizerJson: TokenizerJson;
  tokenizerConfig: JsonObject;
  /** Which store shards went to: a CacheMode, or "custom" for opts.store. */
  cacheMode: CacheMode | "custom";
  /** The kernel library for a backend (fetched on first call, then kept). */
  library(backend: Backend): Promise<Uint8Array>;
  /** Shard `index`'s bytes, sha256-verified. */
  shardBytes(index: number): Promise<Uint8Array>;
  /** Drop the loader's copy of a shard (a later shardBytes re-reads it from the store or network). */
  releaseShard(index: number): void;
  /** Report shard `index` uploaded: emits "upload" progress and releases the loader's copy. */
  shardUploaded(index: number): void;
}

// ---------------------------------------------------------------------------------------------
// openBundle

/** The store the options ask for, and its mode; a default store that cannot open means none. */
async function openStore(opts: OpenBundleOptions): Promise<{ store?: ShardStore; cacheMode: CacheMode | "custom" }> {
  if (opts.store) return { store: opts.store, cacheMode: "custom" };
  const explicit = opts.cache !== undefined;
  const cacheMode: CacheMode = opts.cache ?? (hasCacheApi() ? "cache-api" : "none");
  if (cacheMode !== "cache-api" && cacheMode !== "opfs" && cacheMode !== "none") {
    throw new LoadError("bad_option", `cache must be "cache-api", "opfs" or "none", got ${JSON.stringify(opts.cache)}`);
  }
  if (cacheMode === "none") return { cacheMode };
  try {
    return { store: cacheMode === "cache-api" ? await CacheApiShardStore.open() : await OpfsShardStore.open(), cacheMode };
  } catch (e) {
    if (explicit) {
      throw e instanceof LoadError ? e : new LoadError("cache_unavailable",
        `cannot open the ${cacheMode} shard store: ${describe(e)}; use cache: "none"`, { cause: e });
    }
    return { cacheMode: "none" }; // the default cache is best effort (e.g. a private window refuses it)
  }
}

export async function openBundle(bundleUrl: string, opts: OpenBundleOptions = {}): Promise<LoadedBundle> {
  const base = resolveBase(bundleUrl);
  const signal = opts.signal;
  const doFetch: typeof fetch | undefined = opts.fetch ?? (globalThis as { fetch?: typeof fetch }).fetch?.bind(globalThis);
  if (!doFetch) throw new LoadError("bad_option", "no fetch function: pass opts.fetch (Node 18+ and browsers have a global fetch)");
  const concurrency = opts.concurrency ?? 4;
  if (!isInt(concurrency) || concurrency < 1) {
    throw new LoadError("bad_option", `concurrency must be a positive integer, got ${JSON.stringify(opts.concurrency)}`);
  }
  const stallMs = opts.stallTimeoutMs ?? DEFAULT_STALL_TIMEOUT_MS;
  if (typeof stallMs !== "number" || !(stallMs > 0)) {
    throw new LoadError("bad_option", `stallTimeoutMs must be a positive number of milliseconds (Infinity disables it), got ${JSON.stringify(opts.stallTimeoutMs)}`);
  }
  const downloader = new Downloader(base, doFetch, stallMs, signal);
  downloader.throwIfAborted();

  // -- metadata -------------------------------------------------------------------------------
  const [config, tensorCache, tokenizerJson, tokenizerConfig] = await Promise.all(
    ["kiln-config.json", "tensor-cache.json", "tokenizer.json", "tokenizer_config.json"].map((f) => downloader.getJson(f)));
  validateKilnConfig(config);
  validateTensorCache(tensorCache);
  validateTokenizerJson(tokenizerJson);
  validateTokenizerConfig(tokenizerConfig);
  // Every file the configs name stays inside the bundle folder, checked before anything is fetched.
  const libraryUrls = new Map<string, string>();
  for (const [backend, file] of Object.entries(config.libraries)) {
    if (file !== undefined) libraryUrls.set(backend, bundleFileUrl(base, file, "kiln-config.json", `libraries.${backend}`));
  }
  bundleFileUrl(base, config.tensor_cache, "kiln-config.json", "tensor_cache");
  config.tokenizer_files.forEach((f, i) => bundleFileUrl(base, f, "kiln-config.json", `tokenizer_files[${i}]`));

  // -- store and shards -----------------------------------------------------------------------
  const { store, cacheMode } = await openStore(opts);
  const hold = opts.holdShards !== false || store === undefined;
  const urls = tensorCache.records.map((s, i) => bundleFileUrl(base, s.dataPath, "tensor-cache.json", `shard ${i}'s dataPath`));
  const shards = new ShardSet(tensorCache.records, urls, store, cacheMode, downloader, hold, opts.onProgress);
  await shards.prefetch(concurrency, signal);

  // -- the bundle -----------------------------------------------------------------------------
  const libraries = new Map<string, Promise<Uint8Array>>();
  return {
    url: base.href,
    config,
    tensorCache,
    tokenizerJson,
    tokenizerConfig,
    cacheMode,

    library(backend: Backend): Promise<Uint8Array> {
      let promise = libraries.get(backend);
      if (!promise) {
        promise = (async () => {
          const file = config.libraries[backend];
          if (typeof file !== "string") {
            throw new LoadError("bad_bundle", `this bundle has no ${backend} library (kiln-config.json libraries: ${Object.keys(config.libraries).join(", ")}); rebuild it with \`kiln build --targets webgpu,wasm\``);
          }
          downloader.throwIfAborted();
          const url = libraryUrls.get(backend)!;
          const bytes = await downloader.download(url, `the ${backend} library ${file}`, signal);
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

    shardBytes: (index: number): Promise<Uint8Array> => shards.bytes(index, signal),
    releaseShard: (index: number): void => shards.release(index),
    shardUploaded: (index: number): void => shards.markUploaded(index),
  };
}
