// kiln's engine inside a dedicated Web Worker: the entry of dist/kiln-worker.mjs. The page side is
// createWorkerEngine (worker_engine.ts); one worker holds at most one engine at a time. The
// messages are described and typed in worker_protocol.ts.

import type { ChatCompletionRequest, CompletionRequest } from "./api_types";
import { createEngine, Engine, EngineError } from "./engine";
import { ErrorData, LoadError } from "./errors";
import type {
  ChunkReply, LoadMessage, LoadResult, PageMessage, RequestMessage, ResultValue, WorkerMessage,
} from "./worker_protocol";

/** The dedicated worker's global scope, as far as this file uses it. */
interface WorkerScope {
  postMessage(message: WorkerMessage): void;
  addEventListener(type: "message", listener: (event: MessageEvent<unknown>) => void): void;
}

const scope = globalThis as unknown as WorkerScope;
let engine: Engine | null = null;
let loading = false;
let unloading = false;
/** Abort controllers of the loads and requests still running, by id. */
const controllers = new Map<number, AbortController>();
const running = new Set<Promise<void>>();

function post(msg: WorkerMessage): void {
  scope.postMessage(msg);
}

/** The error as plain data: the page rebuilds an error of the same name, code and message. */
function errorData(err: unknown): ErrorData {
  if (err instanceof Error) {
    const e = err as Error & Partial<Record<"code" | "url" | "status", unknown>>;
    const out: ErrorData = { name: e.name, message: e.message };
    if (e.code !== undefined) out.code = e.code as string;
    if (e.url !== undefined) out.url = e.url as string;
    if (e.status !== undefined) out.status = e.status as number;
    return out;
  }
  return { name: "Error", message: String(err) };
}

/** Run one operation; its outcome becomes the id's single "result" or "error" message. */
function settle(id: number, job: () => Promise<unknown>): void {
  const done = job().then(
    (value) => {
      try {
        post({ type: "result", id, value: (value ?? null) as ResultValue });
      } catch (err) { // a value that cannot be cloned: still end the id
        post({ type: "error", id, error: errorData(err) });
      }
    },
    (err) => post({ type: "error", id, error: errorData(err) }));
  running.add(done);
  done.finally(() => running.delete(done));
}

function loaded(): Engine {
  if (!engine) throw new EngineError("not_loaded", "no engine is loaded in this worker (it failed to load or was unloaded)");
  return engine;
}

async function load(id: number, msg: LoadMessage): Promise<LoadResult> {
  if (engine || loading) throw new EngineError("already_loaded", "this worker already holds an engine; unload it first or use another Worker");
  loading = true;
  const controller = new AbortController();
  controllers.set(id, controller);
  try {
    const e = await createEngine(msg.url, { backend: msg.backend, cache: msg.cache, signal: controller.signal,
      stallTimeoutMs: msg.stallTimeoutMs, allowSpecialTokensInContent: msg.allowSpecialTokensInContent,
      threads: msg.threads, onProgress: (progress) => post({ type: "progress", id, progress }) });
    if (unloading) { // the abort came too late to stop loading
      e.unload();
      throw new LoadError("aborted", "the engine was unloaded while it loaded");
    }
    engine = e;
    return { backend: e.backend, threads: e.threads, threadsReason: e.threadsReason };
  } finally {
    loading = false;
    controllers.delete(id);
  }
}

async function request(id: number, msg: RequestMessage): Promise<unknown> {
  const e = loaded();
  const controller = new AbortController();
  controllers.set(id, controller);
  try {
    // The engine checks the request itself (it is whatever the page sent), whichever api it names.
    const out = msg.api === "text"
      ? await e.completions.create(msg.request as CompletionRequest, { signal: controller.signal })
      : await e.chat.completions.create(msg.request as ChatCompletionRequest, { signal: controller.signal });
    if (!out || typeof (out as Partial<AsyncIterable<unknown>>)[Symbol.asyncIterator] !== "function") return out;
    post({ type: "stream", id });
    for await (const chunk of out as AsyncIterable<ChunkReply["chunk"]>) post({ type: "chunk", id, chunk });
    return null;
  } finally {
    controllers.delete(id);
  }
}

async function unload(): Promise<null> {
  const e = engine;
  engine = null; // refuse new requests from here on
  unloading = true;
  try {
    for (const controller of controllers.values()) controller.abort();
    // The operations started before this one (not itself: settle adds it after this call returns).
    await Promise.allSettled([...running]);
    e?.unload();
  } finally {
    unloading = false;
  }
  return null;
}

scope.addEventListener("message", (event: MessageEvent<unknown>) => {
  // Anything may arrive: only objects with a numeric id are answered.
  const msg = event.data as PageMessage | null;
  const id = msg?.id;
  if (!msg || typeof id !== "number") return;
  switch (msg.type) {
    case "load": return settle(id, () => load(id, msg));
    case "request": return settle(id, () => request(id, msg));
    case "abort": controllers.get(id)?.abort(); return;
    case "resetChat": return settle(id, async () => { loaded().resetChat(); return null; });
    case "unload": return settle(id, unload);
    default:
      post({ type: "error", id, error: { name: "EngineError", code: "bad_message", message: `unknown message type ${JSON.stringify((msg as { type?: unknown }).type)}` } });
  }
});
