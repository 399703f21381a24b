// One generation on a loaded model: reuse the KV cache's shared prefix, prefill the rest, then
// decode token by token with the sampler, stop tokens, stop strings and max_tokens. It yields
// text deltas as they become final; the API layer shapes them into OpenAI objects. Tokens are
// sampled on the device where the model can and the request allows (Sampler.deviceSamplable),
// else by the CPU sampler from the logits.

import { AbortError } from "./errors";
import { KilnModel } from "./model";
import { Sampler, SamplingParams } from "./sampler";
import { StopStringMatcher } from "./stop_strings";
import { Tokenizer } from "./tokenizer";

export type FinishReason = "stop" | "length";

export interface GenerationStats {
  promptTokens: number;
  /** Prompt tokens actually run through prefill (the rest came from the reused KV cache). */
  prefillTokens: number;
  completionTokens: number;
  /** The prompt's forward passes and the pick of the first token. */
  prefillSeconds: number;
  /** The rest: a decode step and a pick per further token. */
  decodeSeconds: number;
  /** Threads the kernels ran on. */
  threads: number;
}

export interface GenerationRequest {
  promptIds: number[];
  sampling: SamplingParams;
  maxTokens: number;
  stop: string[];
  stopTokenIds: number[];
  signal?: AbortSignal;
}

export { AbortError };

/**
 * One macrotask turn. The WASM backend computes synchronously and its awaits resolve as microtasks,
 * so without this a whole reply would run before the page (or a worker) could paint a token or read
 * an abort. setTimeout(0) is not used: nested timers are clamped to 4 ms.
 */
function nextTask(): Promise<void> {
  return new Promise((resolve) => {
    const channel = new MessageChannel();
    channel.port1.onmessage = () => { channel.port1.close(); resolve(); };
    channel.port2.postMessage(null);
  });
}

const now = () => (globalThis.performance ?? Date).now() / 1000;

/** Tokens whose KV is in the model's cache, in order: what the next request can reuse. */
export class KvTokens {
  tokens: number[] = [];

  /** Bring the cache to the longest prefix shared with `ids`, keeping at least one token to run. */
  reuse(model: KilnModel, ids: number[]): number {
    let shared = 0;
    while (shared < this.tokens.length && shared < ids.length - 1 && this.tokens[shared] === ids[shared]) shared++;
    const drop = this.tokens.length - shared;
    if (model.canRollBack(drop)) {
      model.rollBack(drop);
    } else {
      model.reset();
      shared = 0;
    }
    this.tokens = ids.slice(0, shared);
    return shared;
  }
}

export async function* generate(model: KilnModel, tokenizer: Tokenizer, kv: KvTokens, req: GenerationRequest,
                                stats: GenerationStats): AsyncGenerator<string, FinishReason> {
  const check = () => { if (req.signal?.aborted) throw new AbortError(); };
  check();
  const ids = req.promptIds;
  const shared = kv.reuse(model, ids);
  stats.promptTokens = ids.length;
  stats.prefillTokens = ids.length - shared;
  const sampler = new Sampler(req.sampling, model.config.model_config.vocab_size);
  const history = ids.slice();
  const onDevice = model.samplesOnDevice && sampler.deviceSamplable;
  let started = now();
  let token = onDevice
    ? await model.prefillAndSample(ids.slice(shared), sampler.deviceDraw())
    : sampler.sample(await model.prefill(ids.slice(shared)), history, ids.length);
  kv.tokens = ids.slice();
  stats.prefillSeconds = now() - started;

  const decoder = tokenizer.createStreamDecoder({ skipSpecialTokens: true });
  const stops = new StopStringMatcher(req.stop);
  started = now();
  try {
    for (let n = 0; n < req.maxTokens; n++) {
      check();
      stats.completionTokens = n + 1;
      if (req.stopTokenIds.includes(token)) return "stop";
      history.push(token);
      const { emit, stopped } = stops.push(decoder.push(token));
      if (emit) yield emit;
      if (stopped) return "stop";
      if (n + 1 === req.maxTokens) break;
      if (model.length >= model.config.context_window_size && model.config.sliding_window_size <= 0) break;
      await nextTask();
      check();
      const last = token;
      token = onDevice
        ? await model.decodeAndSample(last, sampler.deviceDraw())
        : sampler.sample(await model.decode(last), history, ids.length);
      kv.tokens.push(last);
    }
    const tail = stops.push(decoder.flush()).emit + stops.flush();
    if (tail) yield tail;
    return "length";
  } finally {
    stats.decodeSeconds = now() - started;
  }
}
