// Every error class of kiln's runtime and their codes, in one module (model.ts, loader.ts and
// engine.ts all throw them, and the worker protocol carries them as plain data). Each failure a
// caller can act on has a stable `code` from the unions below; the message says what to do.

/** Codes of LoadError: fetching, verifying and validating a bundle. */
export type LoadErrorCode =
  | "fetch_failed"       // network error or HTTP status other than 2xx
  | "integrity"          // a shard failed sha256 verification twice
  | "quota"              // the store is full
  | "cache_failed"       // the store failed otherwise
  | "cache_unavailable"  // the requested cache mode does not exist here
  | "bad_bundle"         // a bundle file is missing a field, malformed, or not what it should be
  | "bad_url"            // the bundle URL cannot be resolved
  | "bad_option"         // an invalid openBundle or createEngine option
  | "timeout"            // a download received nothing for stallTimeoutMs
  | "aborted";           // the signal aborted

/** Codes of EngineError: choosing a backend, setting the model up, and serving requests. */
export type EngineErrorCode =
  | "invalid_request"           // a request field is missing, unknown or out of range
  | "context_window_exceeded"   // the prompt (plus max_tokens) does not fit the context window
  | "no_chat_template"          // chat.completions on a bundle without a chat template
  | "special_tokens_in_content" // a message holds a special token the template's rewriting hides
  | "no_backend"                // neither WebGPU nor the bundle's WASM library can run here
  | "webgpu_unavailable"        // backend "webgpu" asked for where there is none (or no library)
  | "webgpu_feature_missing"    // the adapter lacks a feature the bundle needs (shader-f16)
  | "model_init_failed"         // the runtime failed while setting the model up
  | "model_failed"              // the runtime failed while generating
  | "load_failed"               // createEngine failed otherwise
  | "not_loaded"                // the engine (or the worker's engine) was unloaded
  | "already_loaded"            // the worker already holds an engine
  | "worker_failed"             // the worker's script failed, or threw outside a call
  | "bad_message";              // the worker received a message it does not know

/** The code of ChatTemplateError. */
export type ChatTemplateErrorCode = "chat_template_error";

/** Every code a kiln error can carry. */
export type KilnErrorCode = LoadErrorCode | EngineErrorCode | ChatTemplateErrorCode;

export class EngineError extends Error {
  constructor(readonly code: EngineErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "EngineError";
  }
}

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

/** A request stopped by its AbortSignal (or by unload); as fetch's, its name is "AbortError". */
export class AbortError extends Error {
  constructor() {
    super("the request was aborted");
    this.name = "AbortError";
  }
}

/** A template that failed to parse, or that raised an exception (raise_exception) while rendering. */
export class ChatTemplateError extends Error {
  readonly code: ChatTemplateErrorCode = "chat_template_error";
  constructor(message: string) {
    super(message);
    this.name = "ChatTemplateError";
  }
}

/** An error as plain data (what crosses from the worker to the page): the page rebuilds it. */
export interface ErrorData {
  name: string;
  message: string;
  code?: string;
  url?: string;
  status?: number;
}

/** What a thrown value looks like to code that only inspects it (it may be anything). */
interface Inspected {
  name?: unknown;
  message?: unknown;
  status?: unknown;
}

/**
 * A short description of a failure thrown from inside the tvmjs runtime. The emscripten glue ends
 * a failed call with `exit(n)` (an ExitStatus object, not an Error) or an abort (a
 * WebAssembly.RuntimeError); TVM's own checks throw Errors whose message carries TVM's text.
 */
export function describeRuntimeFailure(err: unknown): string {
  const e = (err ?? undefined) as Inspected | undefined;
  if (e?.name === "ExitStatus") return `the WebAssembly runtime exited (${e.message ?? `exit(${e.status})`})`;
  if (err instanceof WebAssembly.RuntimeError) return `the WebAssembly runtime aborted (${err.message})`;
  const text = err instanceof Error ? err.message : String(err);
  return text.length > 400 ? `${text.slice(0, 400)}…` : text;
}
