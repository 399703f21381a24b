// The messages between the page (worker_engine.ts, createWorkerEngine) and kiln's Web Worker
// (worker.ts, dist/kiln-worker.mjs); one worker holds at most one engine at a time.
//
// Every message is a plain object with a `type` and a numeric `id` that the page picks, unique
// per operation; only structured-cloneable data crosses.
//
//   page -> worker
//     {type: "load", id, url, backend, cache,   create the engine (url already absolute)
//      stallTimeoutMs?, allowSpecialTokensInContent?, threads?}
//     {type: "request", id, api, request}       api "chat" | "text"; request is the OpenAI-shaped body
//     {type: "abort", id}                       abort the load or request `id` (ignored once it ended)
//     {type: "resetChat", id}
//     {type: "unload", id}                      aborts running requests, waits for them, disposes
//   worker -> page (each names the id it answers)
//     {type: "progress", id, progress}          a LoadProgress event of load `id`
//     {type: "stream", id}                      request `id` is a stream and was accepted; chunks follow
//     {type: "chunk", id, chunk}                one chunk object, in order
//     {type: "result", id, value}               the end: load -> {backend, threads, threadsReason}; a non-streaming request ->
//                                               the completion object; a stream, resetChat, unload -> null
//     {type: "error", id, error}                the end, failed: {name, message, code?, url?, status?}
//
// Every id gets exactly one "result" or "error", after all its other replies.

import type {
  ApiKind, ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, CompletionRequest, TextCompletion,
  TextCompletionChunk,
} from "./api_types";
import type { Backend } from "./bundle_types";
import type { ErrorData } from "./errors";
import type { LoadProgress } from "./progress";
import type { CacheMode } from "./shard_store";

export type { ErrorData };

// ---------------------------------------------------------------------------------------------
// page -> worker

export interface LoadMessage {
  type: "load";
  id: number;
  /** The bundle URL, absolute (the page resolves it: a worker has another base URL). */
  url: string;
  backend: "auto" | Backend;
  cache?: CacheMode;
  stallTimeoutMs?: number;
  allowSpecialTokensInContent?: boolean;
  threads?: number;
}

export interface RequestMessage {
  type: "request";
  id: number;
  api: ApiKind;
  /** The OpenAI-shaped body, checked by the engine in the worker. */
  request: ChatCompletionRequest | CompletionRequest;
}

export interface AbortMessage {
  type: "abort";
  id: number;
}

export interface ResetChatMessage {
  type: "resetChat";
  id: number;
}

export interface UnloadMessage {
  type: "unload";
  id: number;
}

export type PageMessage = LoadMessage | RequestMessage | AbortMessage | ResetChatMessage | UnloadMessage;

/** A page message before its id is assigned (what the page's Link.call takes). */
export type PageCall = PageMessage extends unknown ? WithoutId<PageMessage> : never;
type WithoutId<M> = M extends unknown ? Omit<M, "id"> : never;

// ---------------------------------------------------------------------------------------------
// worker -> page

export interface ProgressReply {
  type: "progress";
  id: number;
  progress: LoadProgress;
}

export interface StreamReply {
  type: "stream";
  id: number;
}

export interface ChunkReply {
  type: "chunk";
  id: number;
  chunk: ChatCompletionChunk | TextCompletionChunk;
}

/** The value of a load's result. */
export interface LoadResult {
  backend: Backend;
  threads: number;
  threadsReason: string | null;
}

/** The value of a "result": see the table above. */
export type ResultValue = LoadResult | ChatCompletion | TextCompletion | null;

export interface ResultReply {
  type: "result";
  id: number;
  value: ResultValue;
}

export interface ErrorReply {
  type: "error";
  id: number;
  error: ErrorData;
}

/** Replies before the end of a call. */
export type InterimReply = ProgressReply | StreamReply | ChunkReply;

export type WorkerMessage = InterimReply | ResultReply | ErrorReply;
