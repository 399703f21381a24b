// Where verified weight shards persist between page loads: the Cache API, the Origin Private File
// System, or memory. Keys are the shard's absolute URL plus its sha256 (shardCacheKey), so a
// rebuilt bundle at the same URL never reads stale shards.

import { LoadError } from "./errors";

export type CacheMode = "cache-api" | "opfs" | "none";

/** Where verified shards persist between page loads. Keys are strings (absolute URL + sha256). */
export interface ShardStore {
  get(key: string): Promise<Uint8Array | undefined>;
  put(key: string, bytes: Uint8Array): Promise<void>;
  delete(key: string): Promise<void>;
}

export const SHARD_CACHE_NAME = "kiln-shards";

// The parts of the Cache API and OPFS used here, typed structurally: some browsers lack some of
// them (Safari outside workers has no createWritable), and Node has none.
interface CacheLike {
  match(key: string): Promise<Response | undefined>;
  put(key: string, response: Response): Promise<void>;
  delete(key: string): Promise<boolean>;
}
interface CacheStorageLike {
  open(name: string): Promise<CacheLike>;
  delete(name: string): Promise<boolean>;
}
interface WritableLike {
  write(bytes: Uint8Array): Promise<void>;
  close(): Promise<void>;
  abort?(): Promise<void>;
}
interface SyncAccessLike {
  truncate(size: number): void;
  write(bytes: Uint8Array, options: { at: number }): number;
  flush(): void;
  close(): void;
}
interface FileHandleLike {
  getFile(): Promise<Blob>;
  createWritable?(): Promise<WritableLike>;
  createSyncAccessHandle?(): Promise<SyncAccessLike>;
}
interface DirectoryHandleLike {
  getFileHandle(name: string, options?: { create?: boolean }): Promise<FileHandleLike>;
  getDirectoryHandle(name: string, options?: { create?: boolean }): Promise<DirectoryHandleLike>;
  removeEntry(name: string, options?: { recursive?: boolean }): Promise<void>;
}
interface StorageManagerLike {
  getDirectory?(): Promise<DirectoryHandleLike>;
}

function cacheStorage(): CacheStorageLike | undefined {
  return (globalThis as { caches?: CacheStorageLike }).caches;
}

function storageManager(): StorageManagerLike | undefined {
  return (globalThis as { navigator?: { storage?: StorageManagerLike } }).navigator?.storage;
}

/** Whether the Cache API exists here (the default cache mode where it does). */
export function hasCacheApi(): boolean {
  return Boolean(cacheStorage());
}

const errorName = (e: unknown): unknown => (e as { name?: unknown } | null)?.name;

export function hex(digest: ArrayBuffer): string {
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

export async function sha256Hex(bytes: Uint8Array): Promise<string> {
  return hex(await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>));
}

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
  private constructor(private readonly cache: CacheLike) {}

  static async open(name = SHARD_CACHE_NAME): Promise<CacheApiShardStore> {
    const caches = cacheStorage();
    if (!caches) throw new LoadError("cache_unavailable", "the Cache API is not available here (it needs a secure context: https or localhost); use cache: \"opfs\" or cache: \"none\"");
    return new CacheApiShardStore(await caches.open(name));
  }

  async get(key: string): Promise<Uint8Array | undefined> {
    const response = await this.cache.match(key);
    return response ? new Uint8Array(await response.arrayBuffer()) : undefined;
  }

  async put(key: string, bytes: Uint8Array): Promise<void> {
    await this.cache.put(key, new Response(bytes as Uint8Array<ArrayBuffer>, { headers: { "Content-Type": "application/octet-stream" } }));
  }

  async delete(key: string): Promise<void> {
    await this.cache.delete(key);
  }
}

/** The Origin Private File System: one file per shard in the folder "kiln-shards", named by sha256(key). */
export class OpfsShardStore implements ShardStore {
  private constructor(private readonly dir: DirectoryHandleLike) {}

  static async open(name = SHARD_CACHE_NAME): Promise<OpfsShardStore> {
    const storage = storageManager();
    if (!storage?.getDirectory) throw new LoadError("cache_unavailable", "the Origin Private File System is not available here (navigator.storage.getDirectory); use cache: \"cache-api\" or cache: \"none\"");
    const root = await storage.getDirectory();
    return new OpfsShardStore(await root.getDirectoryHandle(name, { create: true }));
  }

  private async fileName(key: string): Promise<string> {
    return hex(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(key))) + ".bin";
  }

  async get(key: string): Promise<Uint8Array | undefined> {
    let handle: FileHandleLike;
    try {
      handle = await this.dir.getFileHandle(await this.fileName(key));
    } catch (e) {
      if (errorName(e) === "NotFoundError") return undefined;
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
      if (errorName(e) !== "NotFoundError") throw e;
    }
  }
}

/** Delete every shard kiln has stored with a cache mode (e.g. to free space after rebuilds). */
export async function clearShardCache(cache: "cache-api" | "opfs"): Promise<void> {
  if (cache === "cache-api") {
    await cacheStorage()?.delete(SHARD_CACHE_NAME);
  } else {
    const root = await storageManager()?.getDirectory?.();
    await root?.removeEntry(SHARD_CACHE_NAME, { recursive: true }).catch((e: unknown) => {
      if (errorName(e) !== "NotFoundError") throw e;
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
