// The OpenAI-shaped objects of one reply (api_types.ts): the completion, stream chunks and usage,
// made from what the generation produced.

import type {
  ApiKind, ChatCompletion, ChatCompletionChunk, CompletionUsage, TextCompletion, TextCompletionChunk,
} from "./api_types";
import type { FinishReason, GenerationStats } from "./generate";

/** What every object of one reply shares. */
export interface ReplyMeta {
  id: string;
  created: number;
  model: string;
  kind: ApiKind;
}

export function emptyStats(threads: number): GenerationStats {
  return { promptTokens: 0, prefillTokens: 0, completionTokens: 0, prefillSeconds: 0, decodeSeconds: 0, threads };
}

export function usageObject(s: GenerationStats): CompletionUsage {
  return {
    prompt_tokens: s.promptTokens,
    completion_tokens: s.completionTokens,
    total_tokens: s.promptTokens + s.completionTokens,
    extra: {
      prefill_tokens: s.prefillTokens,
      prefill_tokens_per_s: s.prefillSeconds > 0 ? s.prefillTokens / s.prefillSeconds : null,
      decode_tokens_per_s: s.decodeSeconds > 0 ? s.completionTokens / s.decodeSeconds : null,
      threads: s.threads,
    },
  };
}

export function completionObject(meta: ReplyMeta, text: string, finish: FinishReason, stats: GenerationStats): ChatCompletion | TextCompletion {
  const { id, created, model } = meta;
  if (meta.kind === "chat") {
    return { id, object: "chat.completion", created, model,
             choices: [{ index: 0, message: { role: "assistant", content: text }, finish_reason: finish, logprobs: null }],
             usage: usageObject(stats) };
  }
  return { id, object: "text_completion", created, model,
           choices: [{ index: 0, text, finish_reason: finish, logprobs: null }], usage: usageObject(stats) };
}

/** A chunk of `meta`'s reply; `delta` is text (or, for chat, the delta object itself). */
export function chunkObject(meta: ReplyMeta, delta: string | ChatCompletionChunk["choices"][number]["delta"],
                     finish: FinishReason | null): ChatCompletionChunk | TextCompletionChunk {
  const { id, created, model } = meta;
  if (meta.kind === "chat") {
    return { id, object: "chat.completion.chunk", created, model,
             choices: [{ index: 0, delta: typeof delta === "string" ? { content: delta } : delta, finish_reason: finish, logprobs: null }] };
  }
  return { id, object: "text_completion", created, model,
           choices: [{ index: 0, text: delta as string, finish_reason: finish, logprobs: null }] };
}
