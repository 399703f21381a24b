// kiln's engine inside a dedicated Web Worker: the entry of dist/kiln-worker.mjs. The page side is
// createWorkerEngine (worker_engine.ts); one worker holds at most one engine at a time.
//
// Protocol. Every message is a plain object with a `type` and a numeric `id` that the page picks,
// unique per operation; only structured-cloneable data crosses.
//
//   page -> worker
//     {type: "load", id, url, backend, cache,   create the engine (url already absolute)
//      stallTimeoutMs?, allowSpecialTokensInContent?}
//     {type: "request", id, api, request}       api "chat" | "text"; request is the OpenAI-shaped body
//     {type: "abort", id}                       abort the load or request `id` (ignored once it ended)
//     {type: "resetChat", id}
//     {type: "unload", id}                      aborts running requests, waits for them, disposes
//   worker -> page (each names the id it answers)
//     {type: "progress", id, progress}          a LoadProgress event of load `id`
//     {type: "stream", id}                      request `id` is a stream and was accepted; chunks follow
//     {type: "chunk", id, chunk}                one chunk object, in order
//     {type: "result", id, value}               the end: load -> {backend}; a non-streaming request ->
//                                               the completion object; a stream, resetChat, unload -> null
//     {type: "error", id, error}                the end, failed: {name, message, code?, url?, status?}
//
// Every id gets exactly one "result" or "error", after all its other replies.

import { createEngine, Engine, EngineError } from "./engine";
import { LoadError } from "./loader";

/* eslint-disable @typescript-eslint/no-explicit-any */

const scope = globalThis as any;
let engine: Engine | null = null;
let loading = false;
let unloading = false;
/** Abort controllers of the loads and requests still running, by id. */
const controllers = new Map<number, AbortController>();
const running = new Set<Promise<void>>();

function post(msg: any): void {
  scope.postMessage(msg);
}

/** The error as plain data: the page rebuilds an error of the same name, code and message. */
function errorData(err: unknown): any {
  if (err instanceof Error) {
    const e = err as any;
    const out: any = { name: e.name, message: e.message };
    for (const key of ["code", "url", "status"]) if (e[key] !== undefined) out[key] = e[key];
    return out;
  }
  return { name: "Error", message: String(err) };
}

/** Run one operation; its outcome becomes the id's single "result" or "error" message. */
function settle(id: number, job: () => Promise<unknown>): void {
  const done = job().then(
    (value) => {
      try {
        post({ type: "result", id, value: value ?? null });
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

async function load(id: number, msg: any): Promise<unknown> {
  if (engine || loading) throw new EngineError("already_loaded", "this worker already holds an engine; unload it first or use another Worker");
  loading = true;
  const controller = new AbortController();
  controllers.set(id, controller);
  try {
    const e = await createEngine(msg.url, { backend: msg.backend, cache: msg.cache, signal: controller.signal,
      stallTimeoutMs: msg.stallTimeoutMs, allowSpecialTokensInContent: msg.allowSpecialTokensInContent,
      onProgress: (progress) => post({ type: "progress", id, progress }) });
    if (unloading) { // the abort came too late to stop loading
      e.unload();
      throw new LoadError("aborted", "the engine was unloaded while it loaded");
    }
    engine = e;
    return { backend: e.backend };
  } finally {
    loading = false;
    controllers.delete(id);
  }
}

async function request(id: number, msg: any): Promise<unknown> {
  const e = loaded();
  const controller = new AbortController();
  controllers.set(id, controller);
  try {
    const api = msg.api === "text" ? e.completions : e.chat.completions;
    const out = await api.create(msg.request, { signal: controller.signal });
    if (!out || typeof out[Symbol.asyncIterator] !== "function") return out;
    post({ type: "stream", id });
    for await (const chunk of out) post({ type: "chunk", id, chunk });
    return null;
  } finally {
    controllers.delete(id);
  }
}

async function unload(): Promise<unknown> {
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

scope.addEventListener("message", (event: MessageEvent) => {
  const msg = event.data;
  const id = msg?.id;
  if (typeof id !== "number") return;
  switch (msg.type) {
    case "load": return settle(id, () => load(id, msg));
    case "request": return settle(id, () => request(id, msg));
    case "abort": controllers.get(id)?.abort(); return;
    case "resetChat": return settle(id, async () => { loaded().resetChat(); return null; });
    case "unload": return settle(id, unload);
    default:
      post({ type: "error", id, error: { name: "EngineError", code: "bad_message", message: `unknown message type ${JSON.stringify(msg.type)}` } });
  }
});
