// The OpenAI-shaped API of kiln's engines (Engine in the page, WorkerEngine over a Web Worker):
// request bodies, completion objects, stream chunks and usage. Field names and meanings are
// OpenAI's; kiln's additions are top_k, repetition_penalty and usage.extra. The engine still
// checks every request at run time (JavaScript callers pass anything): EngineError
// "invalid_request" names the field.

import type { Backend } from "./bundle_types";

export type FinishReason = "stop" | "length";

/** One message of a chat request. */
export interface ChatMessageParam {
  role: "system" | "user" | "assistant";
  content: string;
}

/** The fields chat and text completion requests share. */
export interface RequestFields {
  /** Accepted and ignored (an engine serves one model); responses carry the bundle's architecture. */
  model?: string;
  /** true: the reply is an async iterable of chunks. */
  stream?: boolean;
  /** Accepted and ignored: the last chunk of a stream always carries usage. */
  stream_options?: { include_usage?: boolean } | null;
  /** Default: until a stop token, or until the context window is full. */
  max_tokens?: number | null;
  /** Generation ends before the first occurrence of any of these strings. */
  stop?: string | string[] | null;
  /** [0, 2]; 0 decodes greedily. Default: the bundle's (the checkpoint's generation_config). */
  temperature?: number | null;
  /** (0, 1]. */
  top_p?: number | null;
  /** Integer >= 0; 0 (or -1) disables it. */
  top_k?: number | null;
  /** [-2, 2]. */
  frequency_penalty?: number | null;
  /** [-2, 2]. */
  presence_penalty?: number | null;
  /** > 0; 1 disables it. */
  repetition_penalty?: number | null;
  /** Token id -> bias in [-100, 100]. */
  logit_bias?: Record<string, number> | null;
  /** An integer: the same seed, request and bundle give the same reply. */
  seed?: number | null;
  /** One choice per request. */
  n?: 1;
}

export interface ChatCompletionRequest extends RequestFields {
  messages: ChatMessageParam[];
}

export interface CompletionRequest extends RequestFields {
  /** The raw prompt, special-token strings included (the caller's own formatting). */
  prompt: string;
}

/** Per-request options, as the second argument of OpenAI's client. */
export interface RequestOptions {
  signal?: AbortSignal;
}

export interface CompletionUsage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  /** kiln's: prompt tokens run through prefill (the rest reused the KV cache), speeds, and the
   * threads the kernels ran on. */
  extra: {
    prefill_tokens: number;
    prefill_tokens_per_s: number | null;
    decode_tokens_per_s: number | null;
    threads: number;
  };
}

interface ResponseFields {
  id: string;
  /** Unix seconds. */
  created: number;
  model: string;
}

export interface ChatCompletion extends ResponseFields {
  object: "chat.completion";
  choices: {
    index: number;
    message: { role: "assistant"; content: string };
    finish_reason: FinishReason;
    logprobs: null;
  }[];
  usage: CompletionUsage;
}

export interface TextCompletion extends ResponseFields {
  object: "text_completion";
  choices: { index: number; text: string; finish_reason: FinishReason; logprobs: null }[];
  usage: CompletionUsage;
}

/** A chunk of a streamed chat reply: the first has the role, the last finish_reason and usage. */
export interface ChatCompletionChunk extends ResponseFields {
  object: "chat.completion.chunk";
  choices: {
    index: number;
    delta: { role?: "assistant"; content?: string };
    finish_reason: FinishReason | null;
    logprobs: null;
  }[];
  usage?: CompletionUsage;
}

/** A chunk of a streamed text completion: the last has finish_reason and usage. */
export interface TextCompletionChunk extends ResponseFields {
  object: "text_completion";
  choices: { index: number; text: string; finish_reason: FinishReason | null; logprobs: null }[];
  usage?: CompletionUsage;
}

/** `create` of chat.completions: a completion, or with stream: true an async iterable of chunks. */
export interface ChatCompletions {
  create(request: ChatCompletionRequest & { stream: true }, options?: RequestOptions): Promise<AsyncIterable<ChatCompletionChunk>>;
  create(request: ChatCompletionRequest & { stream?: false }, options?: RequestOptions): Promise<ChatCompletion>;
  create(request: ChatCompletionRequest, options?: RequestOptions): Promise<ChatCompletion | AsyncIterable<ChatCompletionChunk>>;
}

/** `create` of completions (raw text prompts). */
export interface Completions {
  create(request: CompletionRequest & { stream: true }, options?: RequestOptions): Promise<AsyncIterable<TextCompletionChunk>>;
  create(request: CompletionRequest & { stream?: false }, options?: RequestOptions): Promise<TextCompletion>;
  create(request: CompletionRequest, options?: RequestOptions): Promise<TextCompletion | AsyncIterable<TextCompletionChunk>>;
}

/** Which API a request goes to: chat.completions ("chat") or completions ("text"). */
export type ApiKind = "chat" | "text";

/** What Engine and WorkerEngine have in common. */
export interface KilnEngine {
  readonly chat: { completions: ChatCompletions };
  readonly completions: Completions;
  readonly backend: Backend;
  /** Threads the kernels run on: 1 on WebGPU, and on WASM where the page is not cross-origin
   * isolated (see threadsReason). */
  readonly threads: number;
  /** Why `threads` is less than the engine was asked for; null when it is not. */
  readonly threadsReason: string | null;
  /** Drop the conversation (the KV cache); the next request starts from an empty cache. */
  resetChat(): void | Promise<void>;
  /** Free the model; later requests fail with EngineError "not_loaded". */
  unload(): void | Promise<void>;
}
