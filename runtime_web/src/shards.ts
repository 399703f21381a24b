// A bundle's weight shards: each obtained from the store or the network, verified against its
// sha256 (one refetch after a failed verification), counted into the download / verify / upload
// progress, and held in memory until uploaded when the loader keeps them. loader.ts describes the
// policy; this module carries it out.

import type { ShardRecord } from "./bundle_types";
import { describe, isInt } from "./bundle_validate";
import type { Downloader } from "./download";
import { LoadError } from "./errors";
import { LoadProgress, Meter } from "./progress";
import { CacheMode, sha256Hex, shardCacheKey, ShardStore } from "./shard_store";

function isQuotaError(e: unknown): boolean {
  const err = e as { name?: unknown; code?: unknown } | null;
  return err?.name === "QuotaExceededError" || err?.code === 22 || err?.name === "NS_ERROR_DOM_QUOTA_REACHED";
}

export class ShardSet {
  /** The sum of the shards' nbytes. */
  readonly total: number;
  /** Verified bytes kept until released, by shard index. */
  readonly held = new Map<number, Uint8Array>();
  private readonly keys: string[];
  private readonly downloaded: number[]; // per shard, the most bytes counted
  private readonly verified = new Set<number>();
  private readonly uploaded = new Set<number>();
  private downloadedSum = 0;
  private verifiedSum = 0;
  private uploadedSum = 0;
  private readonly downloadMeter: Meter;
  private readonly verifyMeter: Meter;
  private readonly uploadMeter: Meter;

  /** `urls` are the shards' absolute URLs, already checked to lie inside the bundle. */
  constructor(private readonly shards: ShardRecord[], private readonly urls: string[],
              private readonly store: ShardStore | undefined, private readonly cacheMode: CacheMode | "custom",
              private readonly downloader: Downloader, private readonly hold: boolean,
              onProgress: ((p: LoadProgress) => void) | undefined) {
    this.keys = shards.map((s, i) => shardCacheKey(urls[i], s.sha256.toLowerCase()));
    this.total = shards.reduce((n, s) => n + s.nbytes, 0);
    this.downloaded = new Array<number>(shards.length).fill(0);
    this.downloadMeter = new Meter("download", this.total, onProgress, 3000, 50);
    this.verifyMeter = new Meter("verify", this.total, onProgress, 3000, 0);
    this.uploadMeter = new Meter("upload", this.total, onProgress, 3000, 0);
    downloader.keptNote = () => (store && this.verified.size > 0 ? ` (the ${this.verified.size} shards verified so far are cached and will not be downloaded again)` : "");
  }

  get count(): number {
    return this.shards.length;
  }

  checkIndex(index: number): void {
    if (!isInt(index) || index < 0 || index >= this.shards.length) {
      throw new RangeError(`shard index ${index} is out of range: the bundle has ${this.shards.length} shards`);
    }
  }

  private countDownload(i: number, bytes: number, force: boolean): void {
    const capped = Math.min(bytes, this.shards[i].nbytes);
    if (capped > this.downloaded[i]) {
      this.downloadedSum += capped - this.downloaded[i];
      this.downloaded[i] = capped;
    }
    this.downloadMeter.update(this.downloadedSum, this.shards[i].dataPath, force);
  }

  private async storeOp<T>(what: string, op: () => Promise<T>): Promise<T> {
    try {
      return await op();
    } catch (e) {
      if (isQuotaError(e)) {
        throw new LoadError("quota", `the browser's storage quota is exhausted while ${what} (the weights need ${(this.total / 1e6).toFixed(1)} MB); free space (e.g. delete old bundles with clearShardCache, or site data) or open the bundle with cache: "none"`, { cause: e });
      }
      throw new LoadError("cache_failed", `the ${this.cacheMode} shard store failed while ${what}: ${describe(e)}; open the bundle with cache: "none" to bypass it`, { cause: e });
    }
  }

  /** Download shard i, counting progress; the body is read into a buffer of the declared size. */
  private async fetchShard(i: number, s: AbortSignal | undefined, reload: boolean): Promise<Uint8Array> {
    // With a store of ours, keep the weights out of the HTTP cache (no second copy on disk); a
    // retry after a failed verification must not be answered from the HTTP cache either.
    const init: RequestInit = this.store ? { cache: "no-store" } : reload ? { cache: "reload" } : {};
    const shard = this.shards[i];
    const bytes = await this.downloader.download(this.urls[i], `weight shard ${shard.dataPath}`, s, init, shard.nbytes,
                                                 (length) => this.countDownload(i, length, false));
    this.countDownload(i, bytes.byteLength, true);
    return bytes;
  }

  /** Why `bytes` is not shard i, or null when its sha256 matches. */
  private async mismatch(i: number, bytes: Uint8Array): Promise<string | null> {
    const want = this.shards[i].sha256.toLowerCase();
    const got = await sha256Hex(bytes);
    if (got === want) return null;
    return bytes.byteLength !== this.shards[i].nbytes
      ? `${bytes.byteLength} bytes instead of ${this.shards[i].nbytes}`
      : `sha256 ${got} instead of ${want}`;
  }

  private markVerified(i: number): void {
    if (!this.verified.has(i)) {
      this.verified.add(i);
      this.verifiedSum += this.shards[i].nbytes;
    }
    this.verifyMeter.update(this.verifiedSum, this.shards[i].dataPath, true);
  }

  /** Shard i, verified: from the store if it holds a good copy, else from the network (one retry). */
  async obtain(i: number, s: AbortSignal | undefined): Promise<Uint8Array> {
    const { store, keys } = this;
    const file = this.shards[i].dataPath;
    let fetches = 0;
    let firstProblem: string | null = null;
    let bytes = store ? await this.storeOp(`reading ${file}`, () => store.get(keys[i])) : undefined;
    this.downloader.throwIfAborted(s);
    let fromStore = bytes !== undefined;
    if (fromStore) this.countDownload(i, this.shards[i].nbytes, true);
    for (;;) {
      if (bytes === undefined) {
        bytes = await this.fetchShard(i, s, fetches > 0);
        fetches++;
        this.countDownload(i, this.shards[i].nbytes, true);
      }
      const problem = await this.mismatch(i, bytes);
      this.downloader.throwIfAborted(s);
      if (problem === null) {
        const good = bytes;
        if (!fromStore && store) await this.storeOp(`storing ${file}`, () => store.put(keys[i], good));
        this.downloader.throwIfAborted(s);
        this.markVerified(i);
        return bytes;
      }
      const source = fromStore ? `the cached copy (${this.cacheMode} store)` : "the downloaded copy";
      if (fromStore && store) await this.storeOp(`evicting ${file}`, () => store.delete(keys[i]));
      if (firstProblem !== null) {
        throw new LoadError("integrity",
          `weight shard ${file} failed verification twice: ${firstProblem}, then the fresh download from ${this.urls[i]} had ${problem}. ` +
          `The bundle on the server is corrupt or incomplete: rebuild it with \`kiln build\` and re-upload ${file} (with tensor-cache.json)`,
          { url: this.urls[i] });
      }
      firstProblem = `${source} had ${problem}`;
      bytes = undefined;
      fromStore = false;
    }
  }

  /**
   * Obtain every shard with a pool of `concurrency` workers (each with at most one request in
   * flight); the first failure stops the rest. Ends the download and verify phases.
   */
  async prefetch(concurrency: number, signal: AbortSignal | undefined): Promise<void> {
    const pool = new AbortController();
    const onAbort = () => pool.abort();
    signal?.addEventListener("abort", onAbort);
    if (signal?.aborted) pool.abort();
    try {
      this.downloadMeter.start();
      this.verifyMeter.start();
      let next = 0;
      let failure: { error: unknown } | undefined;
      const worker = async () => {
        while (failure === undefined && next < this.shards.length) {
          const i = next++;
          try {
            const bytes = await this.obtain(i, pool.signal);
            if (this.hold) this.held.set(i, bytes);
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
      await Promise.race([Promise.all(Array.from({ length: Math.min(concurrency, this.shards.length) }, worker)), aborted]);
      this.downloader.throwIfAborted();
      if (failure) throw failure.error;
    } finally {
      signal?.removeEventListener("abort", onAbort);
    }
    if (this.total === 0) { // no bytes to count: still end each phase
      this.downloadMeter.update(0, undefined, true);
      this.verifyMeter.update(0, undefined, true);
    }
    this.uploadMeter.start();
  }

  /** Shard `index`'s bytes: the held copy, else obtained again (store, else network). */
  async bytes(index: number, signal: AbortSignal | undefined): Promise<Uint8Array> {
    this.checkIndex(index);
    const held = this.held.get(index);
    if (held) return held;
    this.downloader.throwIfAborted();
    const fresh = await this.obtain(index, signal);
    if (this.hold) this.held.set(index, fresh);
    return fresh;
  }

  release(index: number): void {
    this.checkIndex(index);
    this.held.delete(index);
  }

  /** Shard `index` is in the backend: "upload" progress, and the held copy goes. */
  markUploaded(index: number): void {
    this.release(index);
    if (!this.uploaded.has(index)) {
      this.uploaded.add(index);
      this.uploadedSum += this.shards[index].nbytes;
      this.uploadMeter.update(this.uploadedSum, this.shards[index].dataPath, true);
    }
  }
}
