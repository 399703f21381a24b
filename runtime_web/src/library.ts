// Instantiate a bundle's kernel library on tvmjs: its memory (shared where threads can run, see
// wasm_memory.ts), tvmjs's WASI provider, and for a WASM CPU library the helper threads.

import type { TvmInstance, TvmjsModule } from "./tvmjs_types";
import { prepareLibrary } from "./wasm_memory";
import { hasThreadPool, ThreadPool } from "./wasm_threads";

interface NodeProcessLike {
  listeners(event: string): unknown[];
  removeListener(event: string, listener: unknown): void;
}

const PROCESS_EVENTS = ["uncaughtException", "unhandledRejection"] as const;

/**
 * Runs `create` and removes the `process` listeners it added. tvmjs's emscripten glue, when it
 * runs in Node, installs an uncaughtException and an unhandledRejection listener per instance;
 * they rethrow everything (changing how the host process handles its own errors) and keep the
 * instance's WebAssembly memory reachable forever, so every load leaked its whole heap.
 */
function withoutProcessListeners<T>(create: () => T): T {
  const proc = (globalThis as { process?: Partial<NodeProcessLike> }).process;
  if (typeof proc?.listeners !== "function" || typeof proc?.removeListener !== "function") return create();
  const p = proc as NodeProcessLike;
  const before = PROCESS_EVENTS.map((event) => new Set(p.listeners(event)));
  try {
    return create();
  } finally {
    PROCESS_EVENTS.forEach((event, i) => {
      for (const listener of p.listeners(event)) if (!before[i].has(listener)) p.removeListener(event, listener);
    });
  }
}

/** The part of tvmjs's WASI provider (emcc's glue) that kiln touches. */
interface WasiProvider {
  imports: { env: Record<string, unknown> };
  start(instance: WebAssembly.Instance): void;
}

export interface LoadedLibrary {
  tvm: TvmInstance;
  /** The helper threads, null when the kernels run on the calling thread alone. */
  pool: ThreadPool | null;
  /** Why fewer threads run than were asked for; null when all run. */
  threadsReason: string | null;
}

/**
 * Instantiate `library` and, when `threads` > 1 and the library and the page allow it, start its
 * helper threads. Helpers that cannot start leave one thread running, with the reason.
 */
export async function instantiateLibrary(tvmjs: TvmjsModule, library: ArrayBuffer | Uint8Array, threads: number,
                                         log: (msg: string) => void): Promise<LoadedLibrary> {
  const prepared = prepareLibrary(library, threads > 1);
  const wasi = withoutProcessListeners(() => tvmjs.createPolyfillWASI()) as WasiProvider;
  let exports: Record<string, unknown> = {};
  if (prepared.memory !== null) {
    const memory = prepared.memory;
    wasi.imports.env.memory = memory;
    // The glue reads the memory from the instance's exports; a library that imports its memory
    // exports none, so the glue gets a view of the exports with the memory added.
    const start = wasi.start;
    wasi.start = (instance) => {
      exports = { ...instance.exports, memory };
      start({ exports } as unknown as WebAssembly.Instance);
    };
  }
  const tvm = await tvmjs.instantiate(prepared.bytes, wasi, log);
  if (threads <= 1) return { tvm, pool: null, threadsReason: null };
  let reason: string;
  if (prepared.memory === null || !hasThreadPool(exports)) {
    reason = "this bundle's WASM library has no thread pool; rebuild it with this version of kiln build";
  } else if (!prepared.shared) {
    reason = "the page is not cross-origin isolated, so it has no shared memory; serve it with the headers "
      + "Cross-Origin-Opener-Policy: same-origin and Cross-Origin-Embedder-Policy: require-corp";
  } else {
    try {
      const module = await WebAssembly.compile(prepared.bytes);
      return { tvm, pool: await ThreadPool.start(module, prepared.memory, exports, threads), threadsReason: null };
    } catch (err) {
      reason = `the helper threads did not start (${(err as Error)?.message ?? err})`;
    }
  }
  log(`kiln: running on 1 thread: ${reason}`);
  return { tvm, pool: null, threadsReason: reason };
}
