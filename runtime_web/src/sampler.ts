// CPU-side token sampling for kiln's web runtime. Longer than 400 lines: every step below is a few
// lines, but they share one buffer and one order, which splitting would hide.
//
// The engine copies the last position's logits (one float per vocabulary entry) from WebGPU or
// WASM memory into a Float32Array and asks a Sampler for the next token. The caller's array is
// never modified; the sampler works in its own Float64 buffer, allocated once per Sampler.
// On WebGPU a request that needs only steps 4, 6 and 7 below (deviceSamplable) is sampled on the
// device instead (device_sampler.ts), with the uniform number deviceDraw() takes from this
// sampler's PRNG: the same number sample() would draw, used in the same order of tokens.
//
// Order of operations (each step sees the previous step's output):
//   1. logit bias          logit[id] += logit_bias[id]   (OpenAI: additive, in [-100, 100]; -100
//                          effectively bans a token, +100 effectively forces it)
//   2. repetition penalty  HF/CTRL style, once per distinct token in the whole history (prompt +
//                          generated): a positive logit is divided by the penalty, a negative one
//                          multiplied by it. 1 disables it.
//   3. presence/frequency  OpenAI style, over the generated tokens only (history after
//                          promptLength): logit[id] -= count(id) * frequency_penalty
//                                                    + (count(id) > 0 ? presence_penalty : 0)
//   4. temperature         0 => greedy: the argmax of the processed logits, the first (lowest id)
//                          maximum on ties, like torch.argmax / transformers; steps 5-7 are skipped
//                          and no random number is drawn. Otherwise probabilities are
//                          softmax(logit / temperature).
//   5. top-k               keep the k tokens with the largest logits (ties broken towards the
//                          lower id); 0 or -1 disables it. Partial selection with a size-k heap,
//                          O(V log k): the vocabulary is never fully sorted.
//   6. top-p (nucleus)     of the remaining tokens in descending probability (renormalised after
//                          top-k), keep the smallest prefix whose cumulative probability reaches
//                          top_p; at least one token is always kept. 1 disables it. Without top-k
//                          this pops a max-heap built over the vocabulary in O(V), so the cost is
//                          O(V + m log V) for a nucleus of m tokens.
//   7. draw                one uniform double in [0, 1) from the seeded PRNG below, scaled by the
//                          kept tokens' total weight, then a cumulative scan of the kept tokens in
//                          descending probability (ties: lower id first). That is the order of the
//                          device's sample_with_top_p, so both pick the same token for the same
//                          number. Without top-k and top-p the scan pops a max-heap over the
//                          vocabulary until the running sum passes the number.
//
// NaN logits are treated as -Infinity; a +Infinity logit dominates (all +Infinity tokens share
// the mass equally). If every logit is -Infinity/NaN, sample() throws: that is an engine bug.

/** Sampling parameters with OpenAI names and semantics (top_k and repetition_penalty are the
 *  common extensions: vLLM / transformers semantics). */
export interface SamplingParams {
  /** [0, 2], default 1. 0 means greedy decoding. */
  temperature: number;
  /** (0, 1], default 1 (disabled). */
  top_p: number;
  /** Integer >= 0, default 0 (disabled); -1 is accepted as "disabled" too. */
  top_k: number;
  /** [-2, 2], default 0. Subtracted once per occurrence of a token in the generated text. */
  frequency_penalty: number;
  /** [-2, 2], default 0. Subtracted once from every token that occurs in the generated text. */
  presence_penalty: number;
  /** > 0, default 1 (disabled). HF/CTRL multiplicative penalty over prompt + generated tokens. */
  repetition_penalty: number;
  /** Token id -> bias in [-100, 100], added to the logit. Default {}. Keys may be strings (JSON). */
  logit_bias: Record<number, number>;
  /** Integer seed for reproducible sampling; absent => a random seed. */
  seed?: number;
}

export const DEFAULT_SAMPLING_PARAMS: Readonly<SamplingParams> = Object.freeze({
  temperature: 1,
  top_p: 1,
  top_k: 0,
  frequency_penalty: 0,
  presence_penalty: 0,
  repetition_penalty: 1,
  logit_bias: Object.freeze({}) as Record<number, number>,
});

function describe(value: unknown): string {
  if (typeof value === "string") return JSON.stringify(value);
  if (typeof value === "number" || typeof value === "boolean" || typeof value === "bigint") {
    return String(value);
  }
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  return `a ${typeof value}`;
}

function numberField(obj: Record<string, unknown>, name: string, fallback: number): number {
  const v = obj[name];
  if (v === undefined || v === null) return fallback;
  if (typeof v !== "number" || Number.isNaN(v)) {
    throw new Error(`${name} must be a number, got ${describe(v)}`);
  }
  return v;
}

function checkRange(name: string, v: number, lo: number, hi: number, loOpen = false): void {
  if (!(loOpen ? v > lo : v >= lo) || !(v <= hi)) {
    throw new Error(`${name} must be in ${loOpen ? "(" : "["}${lo}, ${hi}], got ${v}`);
  }
}

/**
 * Checks the sampling fields of a request and returns complete SamplingParams, with OpenAI's
 * defaults for absent or null fields. Throws an Error whose message starts with the offending
 * field's name, e.g. "top_p must be in (0, 1], got 1.5". Fields it does not know are ignored (the
 * API layer rejects unknown fields). With vocabSize, logit_bias token ids are range-checked too.
 */
export function validateSamplingParams(obj: unknown, vocabSize?: number): SamplingParams {
  if (obj === undefined || obj === null) obj = {};
  if (typeof obj !== "object" || Array.isArray(obj)) {
    throw new Error(`sampling parameters must be an object, got ${describe(obj)}`);
  }
  const o = obj as Record<string, unknown>;
  const d = DEFAULT_SAMPLING_PARAMS;

  const temperature = numberField(o, "temperature", d.temperature);
  checkRange("temperature", temperature, 0, 2);
  const top_p = numberField(o, "top_p", d.top_p);
  checkRange("top_p", top_p, 0, 1, true);
  const top_k = numberField(o, "top_k", d.top_k);
  if (!Number.isInteger(top_k) || top_k < -1) {
    throw new Error(`top_k must be an integer >= 0 (0 or -1 disables it), got ${top_k}`);
  }
  const frequency_penalty = numberField(o, "frequency_penalty", d.frequency_penalty);
  checkRange("frequency_penalty", frequency_penalty, -2, 2);
  const presence_penalty = numberField(o, "presence_penalty", d.presence_penalty);
  checkRange("presence_penalty", presence_penalty, -2, 2);
  const repetition_penalty = numberField(o, "repetition_penalty", d.repetition_penalty);
  if (!(repetition_penalty > 0) || !Number.isFinite(repetition_penalty)) {
    throw new Error(`repetition_penalty must be a finite number > 0, got ${repetition_penalty}`);
  }

  const logit_bias: Record<number, number> = {};
  const lb = o.logit_bias;
  if (lb !== undefined && lb !== null) {
    if (typeof lb !== "object" || Array.isArray(lb)) {
      throw new Error(`logit_bias must be an object mapping token ids to numbers, got ${describe(lb)}`);
    }
    for (const [key, bias] of Object.entries(lb as Record<string, unknown>)) {
      if (!/^(0|[1-9][0-9]*)$/.test(key) || !Number.isSafeInteger(Number(key))) {
        throw new Error(`logit_bias keys must be token ids (non-negative integers), got ${JSON.stringify(key)}`);
      }
      const id = Number(key);
      if (vocabSize !== undefined && id >= vocabSize) {
        throw new Error(`logit_bias token id ${id} is out of range for a vocabulary of ${vocabSize} tokens`);
      }
      if (typeof bias !== "number" || Number.isNaN(bias)) {
        throw new Error(`logit_bias[${id}] must be a number, got ${describe(bias)}`);
      }
      checkRange(`logit_bias[${id}]`, bias, -100, 100);
      logit_bias[id] = bias;
    }
  }

  const params: SamplingParams = {
    temperature, top_p, top_k, frequency_penalty, presence_penalty, repetition_penalty, logit_bias,
  };
  const seed = o.seed;
  if (seed !== undefined && seed !== null) {
    if (typeof seed !== "number" || !Number.isSafeInteger(seed)) {
      throw new Error(`seed must be an integer, got ${describe(seed)}`);
    }
    params.seed = seed;
  }
  return params;
}

// ---------------------------------------------------------------------------------------------
// PRNG

/** The 32-bit finaliser of MurmurHash3: a bijection on uint32 with full avalanche. */
function mix32(x: number): number {
  x ^= x >>> 16;
  x = Math.imul(x, 0x85ebca6b);
  x ^= x >>> 13;
  x = Math.imul(x, 0xc2b2ae35);
  x ^= x >>> 16;
  return x >>> 0;
}

/**
 * A small seeded PRNG: a 32-bit Weyl sequence (state += 0x9E3779B9, the golden-ratio increment,
 * odd, so the state visits all 2^32 values before repeating) whose output goes through the
 * MurmurHash3 finaliser. Period 2^32 outputs; statistically plenty for token sampling (a
 * generation draws a few thousand numbers) and cheap, with no BigInt. Doubles take 53 bits from
 * two outputs, so even tokens with probability ~1e-12 keep their share.
 *
 * Same seed => same sequence, on every JS engine (only 32-bit integer arithmetic is used).
 * Any safe integer seed is accepted; its high and low 32-bit halves both feed the initial state.
 */
export class Prng {
  private state: number;

  constructor(seed: number) {
    if (!Number.isSafeInteger(seed)) throw new Error(`seed must be an integer, got ${seed}`);
    const lo = seed >>> 0; // ToUint32: seed mod 2^32 (negative seeds wrap)
    const hi = Math.floor(seed / 4294967296) >>> 0;
    this.state = mix32(lo ^ mix32(hi ^ 0x6a09e667));
  }

  /** Next uniform uint32. */
  nextUint32(): number {
    this.state = (this.state + 0x9e3779b9) >>> 0;
    return mix32(this.state);
  }

  /** Next uniform double in [0, 1), 53 random bits. */
  nextFloat(): number {
    const a = this.nextUint32() >>> 5; // 27 bits
    const b = this.nextUint32() >>> 6; // 26 bits
    return (a * 67108864 + b) / 9007199254740992; // (a * 2^26 + b) / 2^53
  }
}

/** A random seed for requests without one: WebCrypto where present (browsers, Node 20). */
export function randomSeed(): number {
  const c = (globalThis as { crypto?: { getRandomValues?: (a: Uint32Array) => Uint32Array } }).crypto;
  if (c && typeof c.getRandomValues === "function") return c.getRandomValues(new Uint32Array(1))[0];
  return Math.floor(Math.random() * 4294967296);
}

// ---------------------------------------------------------------------------------------------
// Sampler

/** One token's draw for a device sampler (Sampler.deviceDraw): the argmax, or a draw from
 *  softmax(logits / temperature) cut to the top_p nucleus, at `uniform` in [0, 1). */
export type DeviceDraw =
  | { greedy: true }
  | { greedy: false; temperature: number; topP: number; uniform: number };

/** The final distribution a Sampler draws from: token ids by descending probability. */
export interface Distribution {
  tokens: number[];
  probs: number[];
}

export class Sampler {
  readonly params: SamplingParams;
  readonly vocabSize: number;
  /** The seed actually used (the given one, or a random one). */
  readonly seed: number;

  private readonly rng: Prng;
  private readonly work: Float64Array; // processed logits
  private weights: Float64Array | null = null; // exp((l - max) / T), full-vocabulary paths
  private order: Int32Array | null = null; // heap of token ids (popBest), without top-k
  private seenStamp: Uint32Array | null = null; // repetition penalty: "seen at call #stamp"
  private stamp = 0;
  private readonly biasIds: Int32Array;
  private readonly biasValues: Float64Array;

  /** Validates params (see validateSamplingParams; partial objects get the defaults). */
  constructor(params: Partial<SamplingParams> | Record<string, unknown>, vocabSize: number) {
    if (!Number.isSafeInteger(vocabSize) || vocabSize <= 0) {
      throw new Error(`vocabSize must be a positive integer, got ${vocabSize}`);
    }
    this.vocabSize = vocabSize;
    this.params = validateSamplingParams(params, vocabSize);
    this.seed = this.params.seed ?? randomSeed();
    this.rng = new Prng(this.seed);
    this.work = new Float64Array(vocabSize);
    const entries = Object.entries(this.params.logit_bias);
    this.biasIds = Int32Array.from(entries, ([k]) => Number(k));
    this.biasValues = Float64Array.from(entries, ([, v]) => v);
  }

  /** top_k as it applies: 0 when disabled (0, -1, or at least the vocabulary). */
  private get topK(): number {
    const k = this.params.top_k;
    return k > 0 && k < this.vocabSize ? k : 0;
  }

  /**
   * Whether a device sampler can pick this request's tokens: it needs no logit bias, no penalty
   * and no top-k (greedy ignores top-k). Then deviceDraw() gives what it needs per token.
   */
  get deviceSamplable(): boolean {
    const p = this.params;
    return this.biasIds.length === 0 && p.repetition_penalty === 1 && p.frequency_penalty === 0 &&
      p.presence_penalty === 0 && (p.temperature === 0 || this.topK === 0);
  }

  /**
   * The next token's draw for a device sampler, which then picks the token sample() would pick
   * from the same logits (up to float rounding): it takes the PRNG's next number exactly when
   * sample() would (every token but greedy ones). Only for a deviceSamplable request.
   */
  deviceDraw(): DeviceDraw {
    if (!this.deviceSamplable) {
      throw new Error("this request's logit_bias, penalties or top_k need the CPU sampler");
    }
    const p = this.params;
    if (p.temperature === 0) return { greedy: true };
    return { greedy: false, temperature: p.temperature, topP: p.top_p, uniform: this.rng.nextFloat() };
  }

  /**
   * Picks the next token. `history` is the prompt tokens followed by the generated tokens; the
   * first `promptLength` of them are the prompt (default 0: all of history counts as generated).
   * The repetition penalty looks at all of history, presence/frequency penalties only at the
   * generated part, as in OpenAI's API.
   */
  sample(logits: Float32Array, history: ArrayLike<number> = [], promptLength = 0): number {
    this.prepare(logits, history, promptLength);
    if (this.params.temperature === 0) return this.argmax();
    const c = this.candidates();
    const target = this.rng.nextFloat() * c.total;
    if (c.ids === null) {
      // The whole vocabulary, best first: pop until the running sum passes the target.
      const V = this.vocabSize;
      let first = V - this.popBest(c.weights, target, false);
      const heap = this.order!;
      // Only through rounding does the sum never pass the target: then the last positive weight.
      while (first < V - 1 && !(c.weights[heap[first]] > 0)) first++;
      return heap[first];
    }
    let cum = 0;
    let last = -1;
    for (let i = 0; i < c.count; i++) {
      const id = c.ids[i];
      const w = c.weights[id];
      if (w <= 0) continue;
      cum += w;
      last = id;
      if (target < cum) return id;
    }
    return last; // only reached through rounding in the cumulative sum
  }

  /** The distribution sample() would draw from (after all filtering), by descending probability
   *  (ties: lower id first), zero-probability tokens omitted. For tests and diagnostics: it does
   *  not advance the PRNG. */
  distribution(logits: Float32Array, history: ArrayLike<number> = [], promptLength = 0): Distribution {
    this.prepare(logits, history, promptLength);
    if (this.params.temperature === 0) return { tokens: [this.argmax()], probs: [1] };
    const c = this.candidates();
    const tokens: number[] = [];
    const probs: number[] = [];
    for (let i = 0; i < c.count; i++) {
      const id = c.ids === null ? i : c.ids[i];
      const w = c.ids === null ? c.weights[i] : c.weights[id];
      if (w > 0) {
        tokens.push(id);
        probs.push(w / c.total);
      }
    }
    if (c.ids === null) {
      const idx = tokens.map((_, i) => i).sort((a, b) => probs[b] - probs[a] || tokens[a] - tokens[b]);
      return { tokens: idx.map((i) => tokens[i]), probs: idx.map((i) => probs[i]) };
    }
    return { tokens, probs };
  }

  /** The logits after steps 1-3 (bias, repetition, presence/frequency), as a fresh copy. */
  processLogits(logits: Float32Array, history: ArrayLike<number> = [], promptLength = 0): Float64Array {
    this.prepare(logits, history, promptLength);
    return this.work.slice();
  }

  // Steps 1-3 into this.work.
  private prepare(logits: Float32Array, history: ArrayLike<number>, promptLength: number): void {
    const V = this.vocabSize;
    if (logits.length !== V) {
      throw new Error(`logits has ${logits.length} entries, the sampler was made for a vocabulary of ${V}`);
    }
    if (!Number.isInteger(promptLength) || promptLength < 0 || promptLength > history.length) {
      throw new Error(`promptLength must be an integer in [0, ${history.length}], got ${promptLength}`);
    }
    for (let i = 0; i < history.length; i++) {
      const t = history[i];
      if (!Number.isInteger(t) || t < 0 || t >= V) {
        throw new Error(`history[${i}] = ${t} is not a token id of a vocabulary of ${V}`);
      }
    }
    const w = this.work;
    w.set(logits);
    const p = this.params;

    // 1. logit bias
    for (let i = 0; i < this.biasIds.length; i++) w[this.biasIds[i]] += this.biasValues[i];

    // 2. repetition penalty, once per distinct token of prompt + generated
    if (p.repetition_penalty !== 1 && history.length > 0) {
      if (this.seenStamp === null) this.seenStamp = new Uint32Array(V);
      if (++this.stamp === 0xffffffff) { this.seenStamp.fill(0); this.stamp = 1; }
      const seen = this.seenStamp;
      const r = p.repetition_penalty;
      for (let i = 0; i < history.length; i++) {
        const t = history[i];
        if (seen[t] === this.stamp) continue;
        seen[t] = this.stamp;
        w[t] = w[t] > 0 ? w[t] / r : w[t] * r;
      }
    }

    // 3. presence / frequency penalties over the generated tokens
    if ((p.frequency_penalty !== 0 || p.presence_penalty !== 0) && history.length > promptLength) {
      const counts = new Map<number, number>();
      for (let i = promptLength; i < history.length; i++) {
        const t = history[i];
        counts.set(t, (counts.get(t) ?? 0) + 1);
      }
      for (const [t, n] of counts) w[t] -= n * p.frequency_penalty + p.presence_penalty;
    }

    // NaN (e.g. from a broken kernel, or Infinity - Infinity above) never wins.
    for (let i = 0; i < V; i++) if (w[i] !== w[i]) w[i] = -Infinity;
  }

  private argmax(): number {
    const w = this.work;
    let best = 0;
    for (let i = 1; i < w.length; i++) if (w[i] > w[best]) best = i;
    if (w[best] === -Infinity) throw new Error("sampler: every logit is -Infinity or NaN");
    return best;
  }

  // Steps 4-6. Returns the kept tokens and their unnormalised weights exp((l - max) / T): either
  // ids === null (the whole vocabulary, weights indexed by id, in id order) or a list of ids by
  // descending weight (weights still indexed by id).
  private candidates(): { ids: Int32Array | null; count: number; weights: Float64Array; total: number } {
    const V = this.vocabSize;
    const l = this.work;
    const p = this.params;
    const invT = 1 / p.temperature;
    let max = -Infinity;
    for (let i = 0; i < V; i++) if (l[i] > max) max = l[i];
    if (max === -Infinity) throw new Error("sampler: every logit is -Infinity or NaN");
    const weight = max === Infinity
      ? (x: number) => (x === Infinity ? 1 : 0)
      : (x: number) => Math.exp((x - max) * invT);
    if (this.weights === null) this.weights = new Float64Array(V);
    const wts = this.weights;

    const k = this.topK;
    if (k > 0) {
      // 5. top-k: a min-heap (worst candidate at the root) of the k best logits seen so far.
      const ids = topK(l, k);
      let total = 0;
      for (let i = 0; i < k; i++) total += (wts[ids[i]] = weight(l[ids[i]]));
      if (p.top_p >= 1) return { ids, count: k, weights: wts, total };
      // 6. top-p over the (already sorted) top-k candidates, renormalised
      const need = p.top_p * total * (1 - 1e-12);
      let cum = 0;
      let count = 0;
      while (count < k) {
        cum += wts[ids[count++]];
        if (cum >= need) break;
      }
      return { ids, count, weights: wts, total: cum };
    }

    let total = 0;
    for (let i = 0; i < V; i++) total += (wts[i] = weight(l[i]));
    if (p.top_p >= 1) return { ids: null, count: V, weights: wts, total };

    // 6. top-p without top-k: pop a max-heap over the whole vocabulary until the nucleus is full.
    const count = this.popBest(wts, p.top_p * total * (1 - 1e-12), true);
    const heap = this.order!;
    const ids = new Int32Array(count);
    let cum = 0;
    for (let i = 0; i < count; i++) cum += wts[(ids[i] = heap[V - 1 - i])];
    return { ids, count, weights: wts, total: cum };
  }

  // Pops token ids off a max-heap over the whole vocabulary (larger weight first, then lower id)
  // until their weights add up to `limit` (sum >= limit if `inclusive`, else sum > limit) or none
  // are left. Returns how many it popped: they are this.order[V - count .. V), best last.
  private popBest(weights: Float64Array, limit: number, inclusive: boolean): number {
    const V = this.vocabSize;
    if (this.order === null) this.order = new Int32Array(V);
    const heap = this.order;
    for (let i = 0; i < V; i++) heap[i] = i;
    const before = (a: number, b: number) => weights[a] > weights[b] || (weights[a] === weights[b] && a < b);
    for (let i = (V >> 1) - 1; i >= 0; i--) siftDown(heap, i, V, before);
    let size = V;
    let sum = 0;
    while (size > 0) {
      const top = heap[0];
      size--;
      heap[0] = heap[size];
      heap[size] = top;
      siftDown(heap, 0, size, before);
      sum += weights[top];
      if (inclusive ? sum >= limit : sum > limit) break;
    }
    return V - size;
  }
}

/** Binary-heap sift-down: `before(a, b)` is true when a belongs nearer the root than b. */
function siftDown(heap: Int32Array, i: number, size: number, before: (a: number, b: number) => boolean): void {
  const x = heap[i];
  for (;;) {
    let c = 2 * i + 1;
    if (c >= size) break;
    if (c + 1 < size && before(heap[c + 1], heap[c])) c++;
    if (!before(heap[c], x)) break;
    heap[i] = heap[c];
    i = c;
  }
  heap[i] = x;
}

/** Ids of the k largest values (ties: lower id wins), sorted best first. O(V log k). */
function topK(values: Float64Array, k: number): Int32Array {
  // Min-heap on "goodness": the root is the worst kept candidate.
  const worse = (a: number, b: number) => values[a] < values[b] || (values[a] === values[b] && a > b);
  const heap = new Int32Array(k);
  for (let i = 0; i < k; i++) heap[i] = i;
  for (let i = (k >> 1) - 1; i >= 0; i--) siftDown(heap, i, k, worse);
  for (let i = k; i < values.length; i++) {
    // i has a higher id than everything kept, so it enters only with a strictly larger value.
    if (values[i] > values[heap[0]]) {
      heap[0] = i;
      siftDown(heap, 0, k, worse);
    }
  }
  return heap.sort((a, b) => values[b] - values[a] || a - b);
}
