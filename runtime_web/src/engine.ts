// The engine: load a kiln bundle, pick a backend, and serve OpenAI-shaped chat.completions and
// completions requests one at a time (concurrent requests queue; none is dropped).

import type {
  ApiKind, ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ChatCompletions, ChatMessageParam, CompletionRequest,
  Completions, KilnEngine, RequestFields, RequestOptions, TextCompletion, TextCompletionChunk,
} from "./api_types";
import type { Backend, JsonObject, KilnConfig } from "./bundle_types";
import { chatPromptIds } from "./chat_prompt";
import { ChatMessage, ChatTemplateInput, chatTemplateTokens, renderChatTemplate } from "./chat_template";
import { AbortError, describeRuntimeFailure, EngineError, LoadError } from "./errors";
import { FinishReason, generate, GenerationRequest, KvTokens } from "./generate";
import { CacheMode, LoadProgress, openBundle } from "./loader";
import { KilnModel } from "./model";
import { chunkObject, completionObject, emptyStats, ReplyMeta, usageObject } from "./responses";
import { SamplingParams, validateSamplingParams } from "./sampler";
import { StopStringMatcher } from "./stop_strings";
import { Tokenizer } from "./tokenizer";
import type { TvmjsModule } from "./tvmjs_types";
import * as bundledTvmjs from "kiln-tvmjs";
import { defaultThreads, MAX_THREADS } from "./wasm_threads";

export interface EngineOptions {
  backend?: "auto" | Backend;
  cache?: CacheMode;
  onProgress?: (p: LoadProgress) => void;
  signal?: AbortSignal;
  /**
   * A weight shard download that receives no bytes for this long fails with LoadError "timeout"
   * (default 30000 ms); shards already verified into the cache are not downloaded again on retry.
   */
  stallTimeoutMs?: number;
  /**
   * Encode special-token strings inside chat messages (e.g. a pasted "<|im_end|>") as special
   * tokens, as the raw rendered prompt would be. Default false: only the chat template's own markup
   * produces special tokens, so message text cannot forge role boundaries.
   */
  allowSpecialTokensInContent?: boolean;
  /** A tvmjs runtime module to use instead of the one built into kiln (for testing a tvmjs build). */
  tvmjs?: TvmjsModule;
  /**
   * Threads for the WASM backend's kernels (default: navigator.hardwareConcurrency, at most 8; 1
   * where there is none, as in Node 20).
   * More than one needs a cross-origin-isolated page (COOP/COEP headers); elsewhere the engine runs
   * one thread and says why in `threadsReason`.
   */
  threads?: number;
}

/** A completion object, or the chunks of a streamed reply. */
export type EngineReply = ChatCompletion | TextCompletion | AsyncIterable<ChatCompletionChunk | TextCompletionChunk>;

/** What a GPUDevice owned by kiln needs: destroy() when done. */
interface Destroyable {
  destroy?(): void;
}

/** navigator.gpu, as far as kiln asks it. */
interface GpuLike {
  requestAdapter(options: { powerPreference: "high-performance" }): Promise<{ features: { has(feature: string): boolean } } | null>;
}

function navigatorGpu(): GpuLike | undefined {
  return (globalThis as { navigator?: { gpu?: GpuLike } }).navigator?.gpu;
}

export { EngineError };

const CHAT_FIELDS = new Set(["messages", "model", "stream", "temperature", "top_p", "top_k", "max_tokens", "stop",
  "seed", "frequency_penalty", "presence_penalty", "repetition_penalty", "logit_bias", "n", "stream_options"]);
const COMPLETION_FIELDS = new Set([...CHAT_FIELDS, "prompt"].filter((f) => f !== "messages"));

function invalid(field: string, why: string): never {
  throw new EngineError("invalid_request", `${field} ${why}`);
}

async function pickBackend(requested: "auto" | Backend, config: KilnConfig, tvmjs: TvmjsModule):
    Promise<{ backend: Backend; gpuDevice?: unknown; adapter?: string }> {
  const needs: string[] = config.webgpu_features ?? [];
  const hasWasm = Boolean(config.libraries?.wasm);
  const gpu = navigatorGpu();
  if (requested !== "wasm" && config.libraries?.webgpu && gpu) {
    const adapter = await gpu.requestAdapter({ powerPreference: "high-performance" });
    const missing = adapter ? needs.filter((f) => !adapter.features.has(f)) : needs;
    if (adapter && missing.length === 0) {
      const detected = await tvmjs.detectGPUDevice();
      if (detected) return { backend: "webgpu", gpuDevice: detected.device, adapter: detected.adapterInfo?.vendor };
    }
    if (requested === "webgpu") {
      const variant = String(config.quantization).replace("f16", "f32");
      throw new EngineError("webgpu_feature_missing", adapter
        ? `this WebGPU adapter lacks ${missing.join(", ")}, which the ${config.quantization} bundle needs; build the ${variant} variant (kiln build --quantization ${variant}) or use backend "wasm"`
        : "navigator.gpu gave no WebGPU adapter; use backend \"wasm\" or a browser with WebGPU");
    }
  } else if (requested === "webgpu") {
    throw new EngineError("webgpu_unavailable", config.libraries?.webgpu
      ? "WebGPU is not available here (no navigator.gpu); use backend \"wasm\" or a browser with WebGPU"
      : "this bundle has no WebGPU library; rebuild it with kiln build --targets webgpu,wasm");
  }
  if (!hasWasm) {
    throw new EngineError("no_backend", "no usable backend: WebGPU is unavailable and the bundle has no WASM library; rebuild it with kiln build --targets webgpu,wasm");
  }
  return { backend: "wasm" };
}

/** The request as the engine reads it: any JSON-ish object until checkFields has looked at it. */
type RawRequest = { [field: string]: unknown };

function checkFields(req: unknown, allowed: Set<string>): asserts req is RawRequest & RequestFields {
  if (req === null || typeof req !== "object") invalid("request", "must be an object");
  for (const key of Object.keys(req)) if (!allowed.has(key)) invalid(key, "is not a supported field");
  checkOptionalFields(req as RawRequest);
}

function checkOptionalFields(req: RawRequest): void {
  if (req.stream !== undefined && typeof req.stream !== "boolean") invalid("stream", "must be a boolean");
  if (req.n !== undefined && req.n !== 1) invalid("n", "must be 1 (one choice per request)");
  if (req.max_tokens !== undefined && req.max_tokens !== null &&
      (!Number.isInteger(req.max_tokens) || (req.max_tokens as number) < 1)) invalid("max_tokens", `must be a positive integer, got ${JSON.stringify(req.max_tokens)}`);
  if (req.stop !== undefined && req.stop !== null && typeof req.stop !== "string" &&
      !(Array.isArray(req.stop) && req.stop.every((s: unknown) => typeof s === "string"))) {
    invalid("stop", "must be a string or an array of strings");
  }
}

function checkMessages(messages: unknown): asserts messages is ChatMessageParam[] {
  if (!Array.isArray(messages) || messages.length === 0) invalid("messages", "must be a non-empty array");
  messages.forEach((m: { role?: unknown; content?: unknown } | null, i: number) => {
    if (!m || !["system", "user", "assistant"].includes(m.role as string)) invalid(`messages[${i}].role`, "must be system, user or assistant");
    if (typeof m.content !== "string") invalid(`messages[${i}].content`, "must be a string");
  });
}

export class Engine implements KilnEngine {
  // As in OpenAI's client, the second argument carries request options such as an AbortSignal.
  readonly chat: { completions: ChatCompletions } = {
    completions: { create: ((req: ChatCompletionRequest, opts?: RequestOptions) => this.create(req, "chat", opts?.signal)) as ChatCompletions["create"] },
  };
  readonly completions: Completions = {
    create: ((req: CompletionRequest, opts?: RequestOptions) => this.create(req, "text", opts?.signal)) as Completions["create"],
  };
  private queue: Promise<unknown> = Promise.resolve();
  private readonly kv = new KvTokens();
  private readonly template: string | null;
  private readonly templateTokens: Partial<ChatTemplateInput>;
  private unloaded = false;

  /** `bundle` needs only `config` and `tokenizerConfig`; the engine keeps nothing else of it. */
  constructor(readonly model: KilnModel, readonly tokenizer: Tokenizer,
              bundle: { config: KilnConfig; tokenizerConfig?: JsonObject }, readonly backend: Backend,
              private readonly options: { allowSpecialTokensInContent?: boolean } = {}) {
    this.config = bundle.config;
    this.template = bundle.config.chat_template ?? null;
    this.templateTokens = chatTemplateTokens(bundle.tokenizerConfig ?? {});
  }

  /** kiln-config.json of the bundle. */
  readonly config: KilnConfig;

  get threads(): number {
    return this.model.threads;
  }

  get threadsReason(): string | null {
    return this.model.threadsReason;
  }

  resetChat(): void {
    this.model.reset();
    this.kv.tokens = [];
  }

  /**
   * Frees the model (WebAssembly memory, weights, KV cache, GPU device); running and queued
   * requests then fail, and new ones are refused with EngineError "not_loaded".
   */
  unload(): void {
    this.unloaded = true;
    this.kv.tokens = [];
    this.model.dispose();
  }

  private promptIds(req: RawRequest, kind: ApiKind): number[] {
    if (kind === "text") {
      if (typeof req.prompt !== "string") invalid("prompt", "must be a string");
      // A raw prompt is the caller's own formatting, special tokens included.
      return this.tokenizer.encode(req.prompt, { addSpecialTokens: true });
    }
    checkMessages(req.messages);
    const template = this.template;
    if (!template) throw new EngineError("no_chat_template", "this bundle has no chat template; use completions.create with a raw prompt");
    const render = (messages: ChatMessage[]) =>
      renderChatTemplate(template, { ...this.templateTokens, messages, addGenerationPrompt: true });
    return chatPromptIds(this.tokenizer, render, req.messages as ChatMessage[], this.options.allowSpecialTokensInContent === true, template);
  }

  /** Validation errors reject the returned promise, as OpenAI's client does. */
  private create(req: unknown, kind: ApiKind, signal?: AbortSignal): Promise<EngineReply> {
    try {
      return this.start(req, kind, signal);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  private start(req: unknown, kind: ApiKind, signal?: AbortSignal): Promise<EngineReply> {
    if (this.unloaded) throw new EngineError("not_loaded", "this engine was unloaded; create a new one with createEngine");
    checkFields(req, kind === "chat" ? CHAT_FIELDS : COMPLETION_FIELDS);
    const config = this.config;
    // Everything a request can get wrong is checked here, before it queues or prefills: the
    // sampler (logit_bias ids against the model's vocabulary) and the stop strings.
    let sampling: SamplingParams;
    try {
      sampling = validateSamplingParams({ ...config.sampling, ...pick(req, ["temperature", "top_p", "top_k",
        "frequency_penalty", "presence_penalty", "repetition_penalty", "logit_bias", "seed"]) },
        config.model_config.vocab_size);
    } catch (err) {
      throw new EngineError("invalid_request", (err as Error).message);
    }
    if (signal != null && typeof (signal as { addEventListener?: unknown }).addEventListener !== "function") invalid("signal", "must be an AbortSignal");
    const promptIds = this.promptIds(req, kind);
    const window = config.context_window_size;
    // Without a sliding window the KV cache holds at most `window` tokens: a prompt or a max_tokens
    // that cannot fit is refused up front (as OpenAI does), so a reply never runs off the cache.
    // Without max_tokens, generation ends with finish_reason "length" when the cache is full.
    const bounded = config.sliding_window_size <= 0;
    if (bounded && promptIds.length + 1 > window) {
      throw new EngineError("context_window_exceeded", `the prompt has ${promptIds.length} tokens but the context window holds ${window}; shorten the conversation or start a new chat`);
    }
    if (bounded && req.max_tokens != null && promptIds.length + req.max_tokens > window) {
      throw new EngineError("context_window_exceeded", `max_tokens ${req.max_tokens} plus the prompt's ${promptIds.length} tokens exceed the context window of ${window}; lower max_tokens to at most ${window - promptIds.length} or start a new chat`);
    }
    const maxTokens = req.max_tokens ?? (bounded ? window - promptIds.length : window);
    const stop: string[] = req.stop == null ? [] : typeof req.stop === "string" ? [req.stop] : req.stop;
    try {
      new StopStringMatcher(stop); // eslint-disable-line no-new
    } catch (err) {
      throw new EngineError("invalid_request", (err as Error).message);
    }
    const genReq: GenerationRequest = { promptIds, sampling, maxTokens, stop, stopTokenIds: config.tokens.stop_token_ids,
                                        signal };
    // kiln-config.json names no model beyond its architecture (the schema has no model id).
    const meta: ReplyMeta = { id: `kiln-${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`,
                              created: Math.floor(Date.now() / 1000), model: config.architecture, kind };
    if (req.stream) return Promise.resolve(this.stream(genReq, meta));
    return this.serialize(async () => {
      const stats = emptyStats(this.model.threads);
      let text = "";
      const it = generate(this.model, this.tokenizer, this.kv, genReq, stats);
      let step = await it.next();
      while (!step.done) { text += step.value; step = await it.next(); }
      return completionObject(meta, text, step.value, stats);
    });
  }

  /**
   * A streamed reply: an async iterable whose iterator is also its own iterable. Generation starts
   * when iteration starts. Leaving a `for await` early (break, return, throw) calls return(), which
   * stops generating at the next token and frees the engine for the next request.
   */
  private stream(genReq: GenerationRequest, meta: ReplyMeta): AsyncIterable<ChatCompletionChunk | TextCompletionChunk> {
    type Chunk = ChatCompletionChunk | TextCompletionChunk;
    const engine = this;
    return {
      [Symbol.asyncIterator]: () => {
        const chunks: Chunk[] = [];
        let done = false;
        let wake: (() => void) | null = null;
        let failure: unknown = null;
        // The request's own signal, or the consumer leaving early, stops generation.
        const stop = new AbortController();
        const onAbort = () => stop.abort();
        genReq.signal?.addEventListener("abort", onAbort);
        if (genReq.signal?.aborted) stop.abort();
        let returned = false;
        const push = (c: Chunk) => { if (!returned) chunks.push(c); wake?.(); };
        engine.serialize(async () => {
          const stats = emptyStats(engine.model.threads);
          const it = generate(engine.model, engine.tokenizer, engine.kv, { ...genReq, signal: stop.signal }, stats);
          if (meta.kind === "chat") push(chunkObject(meta, { role: "assistant", content: "" }, null));
          let step = await it.next();
          while (!step.done) { push(chunkObject(meta, step.value, null)); step = await it.next(); }
          push({ ...chunkObject(meta, meta.kind === "chat" ? {} : "", step.value as FinishReason), usage: usageObject(stats) });
        }).catch((err) => { failure = err; }).finally(() => {
          done = true;
          genReq.signal?.removeEventListener("abort", onAbort);
          wake?.();
        });
        const iterator = {
          async next(): Promise<IteratorResult<Chunk, undefined>> {
            while (chunks.length === 0 && !done) await new Promise<void>((r) => { wake = r; });
            wake = null;
            if (chunks.length) return { value: chunks.shift()!, done: false };
            const err = failure;
            failure = null;
            if (err) throw err;
            return { value: undefined, done: true };
          },
          async return(): Promise<IteratorResult<Chunk, undefined>> {
            // The consumer is gone: stop generating (the AbortError that ends the job is nobody's).
            returned = true;
            if (!done) stop.abort();
            chunks.length = 0;
            failure = null;
            return { value: undefined, done: true };
          },
          [Symbol.asyncIterator]() { return iterator; },
        };
        return iterator;
      },
    };
  }

  /** Run one request at a time, in arrival order; a failure inside the runtime becomes an EngineError. */
  private serialize<T>(job: () => Promise<T>): Promise<T> {
    const guarded = () => job().catch((err) => { throw this.runtimeError(err); });
    const run = this.queue.then(guarded, guarded);
    this.queue = run.catch(() => undefined);
    return run;
  }

  private runtimeError(err: unknown): unknown {
    if (err instanceof AbortError || err instanceof EngineError || err instanceof LoadError) return err;
    if (this.unloaded) return new EngineError("not_loaded", "this engine was unloaded while the request ran; create a new one with createEngine");
    return new EngineError("model_failed", `the model failed while generating: ${describeRuntimeFailure(err)}; unload the engine and create a new one`, { cause: err });
  }
}

function pick(obj: RawRequest, keys: string[]): RawRequest {
  const out: RawRequest = {};
  for (const k of keys) if (obj[k] !== undefined && obj[k] !== null) out[k] = obj[k];
  return out;
}

/**
 * Load the bundle at `bundleUrl` and give an engine. Every failure is a LoadError (fetching,
 * verifying or validating the bundle; "aborted" on options.signal) or an EngineError with a code
 * (no usable backend, a WebGPU adapter lacking a feature, "model_init_failed" when the runtime
 * cannot set the model up). Nothing stays allocated after a failure.
 */
export async function createEngine(bundleUrl: string, options: EngineOptions = {}): Promise<Engine> {
  let gpuDevice: Destroyable | undefined;
  let model: KilnModel | undefined;
  const threads = options.threads;
  if (threads !== undefined && !(Number.isInteger(threads) && threads >= 1 && threads <= MAX_THREADS)) {
    throw new LoadError("bad_option", `threads must be a whole number from 1 to ${MAX_THREADS}; got ${threads}`);
  }
  try {
    const tvmjs: TvmjsModule = options.tvmjs ?? (bundledTvmjs as TvmjsModule);
    const bundle = await openBundle(bundleUrl, { cache: options.cache, onProgress: options.onProgress,
                                                signal: options.signal, stallTimeoutMs: options.stallTimeoutMs });
    let tokenizer: Tokenizer;
    try {
      tokenizer = Tokenizer.fromJSON(bundle.tokenizerJson, bundle.tokenizerConfig);
    } catch (err) {
      throw new LoadError("bad_bundle", `tokenizer.json of ${bundle.url} cannot be read: ${(err as Error)?.message ?? err}; rebuild the bundle with \`kiln build\``, { cause: err });
    }
    const picked = await pickBackend(options.backend ?? "auto", bundle.config, tvmjs);
    gpuDevice = picked.gpuDevice as Destroyable | undefined;
    const library = await bundle.library(picked.backend);
    if (options.signal?.aborted) throw new LoadError("aborted", "loading the bundle was aborted");
    const owned = gpuDevice;
    gpuDevice = undefined; // KilnModel.load owns it from here, and destroys it if it fails
    model = await KilnModel.load({
      tvmjs, library, config: bundle.config,
      tensorCache: bundle.tensorCache, shardBytes: (i) => bundle.shardBytes(i), backend: picked.backend, gpuDevice: owned,
      onShardUploaded: (i) => bundle.shardUploaded(i), threads: threads ?? defaultThreads(),
      onPipelines: (done, total) => options.onProgress?.({
        phase: "compile", bytesDone: done, bytesTotal: total, mbPerSecond: 0, etaSeconds: done === total ? 0 : null }),
    });
    return new Engine(model, tokenizer, bundle, picked.backend,
                      { allowSpecialTokensInContent: options.allowSpecialTokensInContent });
  } catch (err) {
    gpuDevice?.destroy?.();
    model?.dispose();
    if (err instanceof LoadError || err instanceof EngineError) throw err;
    throw new EngineError("load_failed", `creating the engine failed: ${describeRuntimeFailure(err)}`, { cause: err });
  }
}

export { AbortError };
