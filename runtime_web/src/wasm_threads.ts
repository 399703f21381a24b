// Helper threads for a WASM CPU library (the C side is kiln_threads.c in the web runtime). Each
// helper is a Web Worker (a worker_threads Worker in Node) running thread_worker.ts: it
// instantiates the same compiled module on the same shared memory, moves its stack pointer to the
// stack the library set aside for it, and waits inside the library for parallel kernels.

/** The exports of a threaded library that the pool uses. */
interface ThreadExports {
  kiln_threads_prepare(helpers: number): number;
  kiln_thread_stack_top(index: number): number;
  kiln_threads_ready(): number;
  kiln_threads_use(helpers: number, canBlock: number): number;
  kiln_threads_helper_tasks(): number;
}

/** What the page sends a helper thread. */
export interface ThreadStart {
  module: WebAssembly.Module;
  memory: WebAssembly.Memory;
  index: number;
  stackTop: number;
}

/** Most threads kiln starts, whatever the machine has: past this, decode is bound by memory. */
export const MAX_THREADS = 8;
const START_TIMEOUT_MS = 10_000;

interface HelperHandle {
  terminate(): unknown;
}

/** Whether a library was linked with kiln's thread pool. */
export function hasThreadPool(exports: Record<string, unknown>): boolean {
  return ["kiln_threads_prepare", "kiln_thread_stack_top", "kiln_threads_ready", "kiln_threads_use",
          "kiln_threads_helper_tasks"]
    .every((name) => typeof exports[name] === "function");
}

/** The default thread count: the machine's cores, capped. */
export function defaultThreads(): number {
  const cores = (globalThis as { navigator?: { hardwareConcurrency?: number } }).navigator?.hardwareConcurrency;
  return Math.max(1, Math.min(MAX_THREADS, cores ?? 1));
}

async function spawnHelper(start: ThreadStart): Promise<HelperHandle> {
  const url = new URL("./kiln-thread.mjs", import.meta.url);
  if (typeof Worker === "function") {
    const worker = new Worker(url, { type: "module", name: `kiln-thread-${start.index}` });
    worker.postMessage(start);
    return worker;
  }
  // A computed specifier: bundlers and the browser build leave Node's module alone.
  const specifier = "node:worker_threads";
  const { Worker: NodeWorker } = (await import(specifier)) as {
    Worker: new (url: URL, options: { workerData: ThreadStart }) => HelperHandle & { unref(): void };
  };
  const worker = new NodeWorker(url, { workerData: start });
  worker.unref(); // a helper waits forever: it must not keep Node from exiting
  return worker;
}

export class ThreadPool {
  private constructor(private exports: ThreadExports, private helpers: HelperHandle[]) {}

  /** The threads kernels run on, the caller's included. */
  get threads(): number {
    return this.helpers.length + 1;
  }

  /**
   * Start `threads - 1` helpers for `exports` (a threaded library instantiated on the shared
   * `memory`). Throws if they do not all start within 10 s; none is left running then.
   */
  static async start(module: WebAssembly.Module, memory: WebAssembly.Memory, exports: Record<string, unknown>,
                     threads: number): Promise<ThreadPool> {
    const ex = exports as unknown as ThreadExports;
    const count = threads - 1;
    if (!ex.kiln_threads_prepare(count)) throw new Error(`the library cannot set up ${count} helper threads`);
    const helpers: HelperHandle[] = [];
    try {
      for (let index = 1; index <= count; index++) {
        helpers.push(await spawnHelper({ module, memory, index, stackTop: ex.kiln_thread_stack_top(index) }));
      }
      const deadline = Date.now() + START_TIMEOUT_MS;
      while (ex.kiln_threads_ready() < count) {
        if (Date.now() > deadline) throw new Error(`only ${ex.kiln_threads_ready()} of ${count} helper threads started`);
        await new Promise((resolve) => setTimeout(resolve, 2));
      }
      // A page's main thread may not block (Atomics.wait throws there); a worker and Node may.
      const canBlock = typeof (globalThis as { document?: unknown }).document === "undefined";
      if (!ex.kiln_threads_use(count, canBlock ? 1 : 0)) throw new Error("the library refused its helper threads");
      return new ThreadPool(ex, helpers);
    } catch (err) {
      for (const h of helpers) h.terminate();
      throw err;
    }
  }

  /** Kernel tasks the helpers have run so far (the tests' proof that they take part). */
  helperTasks(): number {
    return this.exports.kiln_threads_helper_tasks();
  }

  /** Back to one thread, and stop the helpers. */
  dispose(): void {
    this.exports.kiln_threads_use(0, 0);
    for (const h of this.helpers) h.terminate();
    this.helpers = [];
  }
}
