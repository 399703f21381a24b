// The page side of kiln's engine in a dedicated Web Worker: createWorkerEngine gives the API of
// createEngine (chat.completions.create, completions.create, resetChat, unload, backend) while the
// model runs in the worker that dist/kiln-worker.mjs starts, so generation never blocks the page.
// The message protocol is described and typed in worker_protocol.ts.
//
//   const worker = new Worker(new URL("./kiln-worker.mjs", import.meta.url), { type: "module" });
//   const engine = await createWorkerEngine(worker, "bundles/my-model/", { onProgress: console.log });

import type {
  ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ChatCompletions, CompletionRequest, Completions,
  KilnEngine, RequestOptions, TextCompletion, TextCompletionChunk,
} from "./api_types";
import type { Backend } from "./bundle_types";
import { AbortError, EngineError, EngineErrorCode, ErrorData, LoadError, LoadErrorCode } from "./errors";
import type { LoadProgress } from "./progress";
import type { CacheMode } from "./shard_store";
import type { InterimReply, LoadResult, PageCall, ResultValue, WorkerMessage } from "./worker_protocol";

export interface WorkerEngineOptions {
  backend?: "auto" | Backend;
  cache?: CacheMode;
  /** Called on the page for each load progress event the worker forwards. */
  onProgress?: (p: LoadProgress) => void;
  /** Aborts loading (createWorkerEngine then rejects with LoadError "aborted"). */
  signal?: AbortSignal;
  /** As in createEngine: a shard download silent this long fails with LoadError "timeout". */
  stallTimeoutMs?: number;
  /** As in createEngine: special-token strings in messages become special tokens (default false). */
  allowSpecialTokensInContent?: boolean;
  /** As in createEngine: threads for the WASM kernels (the worker's page must be cross-origin isolated). */
  threads?: number;
}

/** Structural type of what createWorkerEngine needs of a Worker (a DOM Worker fits). */
export interface WorkerLike {
  postMessage(message: unknown): void;
  addEventListener(type: string, listener: (event: MessageEvent) => void): void;
  removeEventListener(type: string, listener: (event: MessageEvent) => void): void;
}

interface Call {
  /** Replies other than the final result / error (progress, stream, chunk). */
  onReply?: (msg: InterimReply) => void;
  resolve: (value: ResultValue) => void;
  reject: (err: Error) => void;
}

type Chunk = ChatCompletionChunk | TextCompletionChunk;

// Ids are unique across the whole page, so engines on different workers never mix up replies.
let lastId = 0;

/** An error of the same class, name, code and message as the one thrown in the worker. */
function reviveError(data: ErrorData | undefined): Error {
  if (data?.name === "LoadError") {
    return new LoadError(data.code as LoadErrorCode, data.message, { url: data.url, status: data.status });
  } else if (data?.name === "EngineError") {
    return new EngineError(data.code as EngineErrorCode, data.message);
  } else if (data?.name === "AbortError") {
    const err = new AbortError();
    err.message = data.message;
    return err;
  }
  const err: Error & { code?: string } = new Error(data?.message ?? String(data));
  err.name = data?.name ?? "Error";
  if (data?.code !== undefined) err.code = data.code;
  return err;
}

/** One engine's conversation with its worker: calls by id, each ended by one result or error. */
class Link {
  private readonly calls = new Map<number, Call>();
  private detached = false;
  private readonly onMessage = (event: MessageEvent) => {
    const msg = event.data as WorkerMessage | null; // a message of this protocol when an id of ours matches
    const call = this.calls.get(msg?.id as number);
    if (!msg || !call) return;
    if (msg.type === "result") {
      this.calls.delete(msg.id);
      call.resolve(msg.value);
    } else if (msg.type === "error") {
      this.calls.delete(msg.id);
      call.reject(reviveError(msg.error));
    } else {
      call.onReply?.(msg);
    }
  };
  // A worker whose script fails to load or throws outside a call reports only here; without this a
  // pending call would wait forever.
  private readonly onError = (event: { message?: string; type?: string } | null) => {
    const why = event?.message || (event?.type === "messageerror" ? "a message could not be deserialized" : "the worker failed");
    const err = new EngineError("worker_failed", `kiln's worker failed: ${why}`);
    for (const call of this.calls.values()) call.reject(err);
    this.calls.clear();
  };

  constructor(private readonly worker: WorkerLike) {
    worker.addEventListener("message", this.onMessage);
    worker.addEventListener("error", this.onError);
    worker.addEventListener("messageerror", this.onError);
  }

  detach(): void {
    this.detached = true;
    this.worker.removeEventListener("message", this.onMessage);
    this.worker.removeEventListener("error", this.onError);
    this.worker.removeEventListener("messageerror", this.onError);
  }

  /**
   * Send `msg` under a fresh id. `signal` aborting sends {type: "abort", id}; the call still ends
   * with what the worker answers (an AbortError unless it had already finished).
   */
  call(msg: PageCall, signal?: AbortSignal, onReply?: (msg: InterimReply) => void): { id: number; done: Promise<ResultValue> } {
    const id = ++lastId;
    const abort = () => this.send({ type: "abort", id });
    const done = new Promise<ResultValue>((resolve, reject) => {
      if (this.detached) {
        reject(new EngineError("not_loaded", "this engine was unloaded"));
        return;
      }
      this.calls.set(id, { onReply, resolve, reject });
      try {
        this.worker.postMessage({ ...msg, id });
      } catch (err) { // DataCloneError: something in msg cannot cross to the worker
        this.calls.delete(id);
        reject(new EngineError("invalid_request", `the request cannot be sent to the worker: ${(err as Error | null)?.message ?? err}`));
        return;
      }
      if (signal?.aborted) abort();
      signal?.addEventListener("abort", abort);
    });
    done.catch(() => undefined).finally(() => signal?.removeEventListener("abort", abort));
    return { id, done };
  }

  send(msg: { type: "abort"; id: number }): void {
    try {
      this.worker.postMessage(msg);
    } catch {
      // Only plain data is sent here; a worker that is gone shows up through onError.
    }
  }
}

/** The page's end of a streamed reply: one async iterator over the chunks the worker sends. */
class ChunkStream implements AsyncIterableIterator<Chunk, undefined> {
  private readonly chunks: Chunk[] = [];
  private finished = false;
  private failure: Error | null = null;
  private wake: (() => void) | null = null;

  constructor(private readonly cancel: () => void) {}

  push(chunk: Chunk): void {
    if (this.finished) return;
    this.chunks.push(chunk);
    this.wake?.();
  }

  end(failure: Error | null): void {
    if (this.finished) return;
    this.finished = true;
    this.failure = failure;
    this.wake?.();
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  async next(): Promise<IteratorResult<Chunk, undefined>> {
    while (this.chunks.length === 0 && !this.finished) await new Promise<void>((r) => { this.wake = r; });
    this.wake = null;
    if (this.chunks.length) return { value: this.chunks.shift()!, done: false };
    const failure = this.failure;
    this.failure = null;
    if (failure) throw failure;
    return { value: undefined, done: true };
  }

  /** A consumer that stops early (break in for await): stop generating in the worker too. */
  async return(): Promise<IteratorResult<Chunk, undefined>> {
    if (!this.finished) this.cancel();
    this.finished = true;
    this.chunks.length = 0;
    this.failure = null;
    return { value: undefined, done: true };
  }
}

export class WorkerEngine implements KilnEngine {
  // As in Engine (and OpenAI's client), the second argument carries request options.
  readonly chat: { completions: ChatCompletions } = {
    completions: { create: ((req: ChatCompletionRequest, opts?: RequestOptions) => this.create(req, "chat", opts?.signal)) as ChatCompletions["create"] },
  };
  readonly completions: Completions = {
    create: ((req: CompletionRequest, opts?: RequestOptions) => this.create(req, "text", opts?.signal)) as Completions["create"],
  };

  constructor(private readonly link: Link, readonly backend: Backend, readonly threads: number,
              readonly threadsReason: string | null) {}

  /** Resolves once the worker has dropped the conversation; requests sent after it see the reset. */
  resetChat(): Promise<void> {
    return this.link.call({ type: "resetChat" }).done as Promise<unknown> as Promise<void>; // resolves to null
  }

  /** Aborts running requests, frees the model in the worker. The Worker itself is the caller's. */
  async unload(): Promise<void> {
    try {
      await this.link.call({ type: "unload" }).done;
    } finally {
      this.link.detach();
    }
  }

  /**
   * A completion object, or for stream: true an async iterable of chunk objects, like Engine.
   * Validation errors reject the returned promise; errors during a stream are thrown by the iterator.
   */
  private create(req: ChatCompletionRequest | CompletionRequest, api: "chat" | "text", signal?: AbortSignal):
      Promise<ChatCompletion | TextCompletion | AsyncIterable<Chunk>> {
    return new Promise((resolve, reject) => {
      let stream: ChunkStream | null = null;
      const { id, done } = this.link.call({ type: "request", api, request: req }, signal, (msg) => {
        if (msg.type === "stream") {
          stream = new ChunkStream(() => this.link.send({ type: "abort", id }));
          resolve(stream);
        } else if (msg.type === "chunk") {
          stream?.push(msg.chunk);
        }
      });
      done.then((value) => (stream ? stream.end(null) : resolve(value as ChatCompletion | TextCompletion)),
                (err) => (stream ? stream.end(err) : reject(err)));
    });
  }
}

function absoluteUrl(url: string): string {
  try {
    return new URL(url, (globalThis as { location?: { href: string } }).location?.href).href;
  } catch {
    return url; // the worker's loader reports it as LoadError "bad_url"
  }
}

/**
 * Load the bundle at `bundleUrl` in `worker` (a module Worker running dist/kiln-worker.mjs) and
 * give an engine with the API of createEngine. A relative bundleUrl is resolved against the page.
 * Errors are the engine's and loader's, rebuilt on the page, plus EngineError "worker_failed" (the
 * worker's script failed or threw outside a call), "not_loaded" (after unload) and
 * "already_loaded" (the worker holds an engine already).
 */
export async function createWorkerEngine(worker: WorkerLike, bundleUrl: string,
                                         options: WorkerEngineOptions = {}): Promise<WorkerEngine> {
  const link = new Link(worker);
  const onReply = (msg: InterimReply) => { if (msg.type === "progress") options.onProgress?.(msg.progress); };
  try {
    const { done } = link.call({ type: "load", url: absoluteUrl(bundleUrl), backend: options.backend ?? "auto",
                                 cache: options.cache, stallTimeoutMs: options.stallTimeoutMs,
                                 allowSpecialTokensInContent: options.allowSpecialTokensInContent,
                                 threads: options.threads },
                               options.signal, onReply);
    const { backend, threads, threadsReason } = (await done) as LoadResult;
    return new WorkerEngine(link, backend, threads, threadsReason);
  } catch (err) {
    link.detach();
    throw err;
  }
}
