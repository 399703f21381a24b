// Unit tests of the CPU sampler (src/sampler.ts). Run: cd runtime_web && npm test
// Longer than 400 lines: one file per module under test, with its reference softmax.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  DEFAULT_SAMPLING_PARAMS, DeviceDraw, Prng, Sampler, SamplingParams, validateSamplingParams,
} from "../src/sampler";

const f32 = (xs: number[]) => Float32Array.from(xs);

function softmax(xs: ArrayLike<number>, temperature = 1): number[] {
  const arr = Array.from(xs, (x) => x / temperature);
  const m = Math.max(...arr);
  const e = arr.map((x) => Math.exp(x - m));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / s);
}

function frequencies(s: Sampler, logits: Float32Array, draws: number, history: number[] = []): number[] {
  const counts = new Array(logits.length).fill(0);
  for (let i = 0; i < draws; i++) counts[s.sample(logits, history)]++;
  return counts.map((c) => c / draws);
}

function assertClose(actual: number[], expected: number[], tol: number, what: string) {
  assert.equal(actual.length, expected.length, `${what}: length`);
  actual.forEach((a, i) => {
    assert.ok(Math.abs(a - expected[i]) <= tol, `${what}[${i}]: ${a} vs ${expected[i]} (tol ${tol})`);
  });
}

/** Deterministic pseudo-normal logits (sum of uniforms), for large-vocabulary tests. */
function randomLogits(n: number, seed: number, scale = 3): Float32Array {
  const r = new Prng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (r.nextFloat() + r.nextFloat() + r.nextFloat() - 1.5) * 2 * scale;
  return out;
}

/** Reference nucleus/top-k by full sort (ties: lower id first). */
function referenceKept(logits: Float32Array, topK: number, topP: number, temperature: number): number[] {
  const ids = Array.from(logits, (_, i) => i).sort((a, b) => logits[b] - logits[a] || a - b);
  const kept = topK > 0 ? ids.slice(0, topK) : ids;
  if (topP >= 1) return kept;
  const probs = softmax(kept.map((i) => logits[i]), temperature);
  let cum = 0;
  const out: number[] = [];
  for (let j = 0; j < kept.length; j++) {
    out.push(kept[j]);
    cum += probs[j];
    if (cum >= topP) break;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// greedy

test("temperature 0 is greedy argmax", () => {
  const s = new Sampler({ temperature: 0, seed: 1 }, 6);
  assert.equal(s.sample(f32([0.1, -2, 3.5, 3.4, 0, 1])), 2);
  assert.equal(s.sample(f32([-5, -4, -3, -2, -1, -0.5])), 5);
  assert.equal(s.sample(f32([9, 1, 2, 3, 4, 5])), 0);
});

test("greedy ties pick the first maximum (like torch.argmax)", () => {
  const s = new Sampler({ temperature: 0 }, 5);
  assert.equal(s.sample(f32([1, 5, 5, 2, 5])), 1);
  assert.equal(s.sample(f32([7, 7, 7, 7, 7])), 0);
  assert.equal(s.sample(f32([-Infinity, 0, 0, -Infinity, 0])), 1);
  assert.deepEqual(s.distribution(f32([1, 5, 5, 2, 5])), { tokens: [1], probs: [1] });
});

test("greedy ignores top_k / top_p and the seed", () => {
  const logits = randomLogits(1000, 7);
  const argmax = Array.from(logits).reduce((b, x, i, a) => (x > a[b] ? i : b), 0);
  for (const seed of [1, 2, 3]) {
    const s = new Sampler({ temperature: 0, top_k: 3, top_p: 0.1, seed }, 1000);
    for (let i = 0; i < 5; i++) assert.equal(s.sample(logits), argmax);
  }
});

test("top_k 1 and tiny top_p reduce to argmax under sampling", () => {
  const logits = f32([0.5, 2, 1.9, -1]);
  for (const p of [{ top_k: 1 }, { top_p: 1e-9 }]) {
    const s = new Sampler({ temperature: 1.5, seed: 3, ...p }, 4);
    for (let i = 0; i < 500; i++) assert.equal(s.sample(logits), 1, JSON.stringify(p));
  }
});

// ---------------------------------------------------------------------------------------------
// temperature

test("distribution() is softmax(logits / temperature)", () => {
  const logits = f32([1, 2, 3, 0, -1]);
  for (const t of [0.25, 0.5, 1, 1.7, 2]) {
    const d = new Sampler({ temperature: t }, 5).distribution(logits);
    const ref = softmax(logits, t);
    const byId = new Array(5).fill(0);
    d.tokens.forEach((id, j) => (byId[id] = d.probs[j]));
    assertClose(byId, ref, 1e-12, `T=${t}`);
  }
});

test("empirical frequencies of seeded draws follow softmax(logits / T)", () => {
  const logits = f32([1, 2, 3, 0]);
  const draws = 20000;
  const maxProb: number[] = [];
  for (const t of [0.5, 1, 2]) {
    const freq = frequencies(new Sampler({ temperature: t, seed: 1234 }, 4), logits, draws);
    const ref = softmax(logits, t);
    // std of a frequency <= sqrt(0.25 / 20000) = 0.0035; 0.015 is > 4 sigma
    assertClose(freq, ref, 0.015, `T=${t}`);
    maxProb.push(freq[2]);
  }
  // lower temperature sharpens, higher flattens
  assert.ok(maxProb[0] > maxProb[1] && maxProb[1] > maxProb[2], `${maxProb}`);
  assert.ok(maxProb[0] > 0.85 && maxProb[2] < 0.55, `${maxProb}`);
});

// ---------------------------------------------------------------------------------------------
// top-k

test("top_k keeps exactly the k largest logits, renormalised", () => {
  const V = 1000;
  const logits = randomLogits(V, 11);
  for (const k of [1, 2, 5, 40, 999]) {
    const s = new Sampler({ top_k: k, temperature: 0.8 }, V);
    const d = s.distribution(logits);
    const ref = referenceKept(logits, k, 1, 0.8);
    assert.equal(d.tokens.length, k, `k=${k}`);
    assert.deepEqual(d.tokens, ref, `k=${k}`);
    assertClose(d.probs, softmax(ref.map((i) => logits[i]), 0.8), 1e-12, `k=${k}`);
  }
});

test("top_k draws only the k candidates, and all of them", () => {
  const V = 1000;
  const logits = randomLogits(V, 12, 1);
  const top5 = referenceKept(logits, 5, 1, 1);
  const s = new Sampler({ top_k: 5, temperature: 2, seed: 5 }, V);
  const seen = new Set<number>();
  for (let i = 0; i < 3000; i++) seen.add(s.sample(logits));
  assert.deepEqual([...seen].sort((a, b) => a - b), [...top5].sort((a, b) => a - b));
});

test("top_k ties at the boundary keep the lower ids; 0, -1 and k >= V disable it", () => {
  const logits = f32([1, 3, 3, 3, 0]);
  assert.deepEqual(new Sampler({ top_k: 2 }, 5).distribution(logits).tokens, [1, 2]);
  assert.deepEqual(new Sampler({ top_k: 4 }, 5).distribution(logits).tokens, [1, 2, 3, 0]);
  for (const k of [0, -1, 5, 100]) {
    assert.equal(new Sampler({ top_k: k }, 5).distribution(logits).tokens.length, 5, `k=${k}`);
  }
});

// ---------------------------------------------------------------------------------------------
// top-p

// probabilities 0.05, 0.5, 0.1, 0.2, 0.15 (shuffled so that order != id order)
const nucleusProbs = [0.05, 0.5, 0.1, 0.2, 0.15];
const nucleusLogits = f32(nucleusProbs.map(Math.log));

test("top_p keeps the smallest set whose cumulative probability reaches top_p", () => {
  const kept = (top_p: number) => new Sampler({ top_p }, 5).distribution(nucleusLogits).tokens;
  assert.deepEqual(kept(0.4), [1]);          // 0.5 >= 0.4
  assert.deepEqual(kept(0.5), [1]);          // exactly 0.5: one token suffices
  assert.deepEqual(kept(0.51), [1, 3]);      // 0.7
  assert.deepEqual(kept(0.7), [1, 3]);       // exactly 0.7
  assert.deepEqual(kept(0.71), [1, 3, 4]);   // 0.85
  assert.deepEqual(kept(0.9), [1, 3, 4, 2]); // 0.95
  assert.deepEqual(kept(0.99), [1, 3, 4, 2, 0]);
  assert.deepEqual(kept(1), [1, 3, 4, 2, 0]);
  assert.deepEqual(kept(1e-9), [1]);         // always at least one token: the argmax
  const d = new Sampler({ top_p: 0.8 }, 5).distribution(nucleusLogits);
  assertClose(d.probs, [0.5 / 0.85, 0.2 / 0.85, 0.15 / 0.85], 1e-6, "renormalised");
});

test("top_p draws follow the renormalised nucleus", () => {
  const s = new Sampler({ top_p: 0.6, seed: 77 }, 5);
  const freq = frequencies(s, nucleusLogits, 20000);
  assertClose(freq, [0, 0.5 / 0.7, 0, 0.2 / 0.7, 0], 0.015, "freq");
  assert.equal(freq[0] + freq[2] + freq[4], 0);
});

test("top_p exactly at a cumulative sum keeps that prefix (rounding does not add a token)", () => {
  const r = new Prng(5);
  for (let trial = 0; trial < 300; trial++) {
    const V = 8;
    const logits = Float32Array.from({ length: V }, () => r.nextFloat() * 6 - 3);
    const ref = referenceKept(logits, 0, 1, 1);
    const probs = softmax(ref.map((i) => logits[i]));
    const j = trial % (V - 1);
    let top_p = 0;
    for (let i = 0; i <= j; i++) top_p += probs[i];
    const d = new Sampler({ top_p: Math.min(top_p, 1) }, V).distribution(logits);
    assert.deepEqual(d.tokens, ref.slice(0, j + 1), `trial ${trial}, top_p ${top_p}`);
  }
});

test("top_p on equal probabilities keeps the lower ids", () => {
  const d = new Sampler({ top_p: 0.35 }, 10).distribution(new Float32Array(10));
  assert.deepEqual(d.tokens, [0, 1, 2, 3]); // 0.4 >= 0.35 > 0.3
});

test("top_k then top_p, and top_p alone, match a full-sort reference on a large vocabulary", () => {
  const V = 32000;
  const logits = randomLogits(V, 21, 4);
  for (const [top_k, top_p, temperature] of [
    [0, 0.5, 1], [0, 0.9, 0.7], [0, 0.999, 1.3], [50, 0.8, 1], [1000, 0.95, 0.6], [7, 1, 1], [7, 0.3, 2],
  ]) {
    const d = new Sampler({ top_k, top_p, temperature }, V).distribution(logits);
    const ref = referenceKept(logits, top_k, top_p, temperature);
    assert.deepEqual(d.tokens, ref, `top_k=${top_k} top_p=${top_p} T=${temperature}`);
    const refProbs = softmax(ref.map((i) => logits[i]), temperature);
    assertClose(d.probs, refProbs, 1e-9, `probs top_k=${top_k} top_p=${top_p}`);
  }
});

// ---------------------------------------------------------------------------------------------
// penalties and logit bias

test("repetition, presence and frequency penalties on a hand example", () => {
  // prompt [0], generated [1, 3, 3]
  const logits = f32([2, -1, 0.5, 3]);
  const s = new Sampler(
    { repetition_penalty: 2, presence_penalty: 0.5, frequency_penalty: 0.25, temperature: 1 }, 4);
  // repetition (prompt + generated, once per distinct token): 2/2 = 1, -1*2 = -2, 3/2 = 1.5
  // presence/frequency (generated only): t1: -2 - 0.5 - 0.25*1 = -2.75; t3: 1.5 - 0.5 - 0.25*2 = 0.5
  assert.deepEqual(Array.from(s.processLogits(logits, [0, 1, 3, 3], 1)), [1, -2.75, 0.5, 0.5]);
  // without promptLength, token 0 counts as generated: 1 - 0.5 - 0.25 = 0.25
  assert.deepEqual(Array.from(s.processLogits(logits, [0, 1, 3, 3])), [0.25, -2.75, 0.5, 0.5]);
  const d = s.distribution(logits, [0, 1, 3, 3], 1);
  const ref = softmax([1, -2.75, 0.5, 0.5]);
  assert.deepEqual(d.tokens, [0, 2, 3, 1]);
  assertClose(d.probs, [ref[0], ref[2], ref[3], ref[1]], 1e-12, "probs");
});

test("each penalty alone, and defaults leave logits untouched", () => {
  const logits = f32([2, -1, 0.5, 3]);
  const hist = [3, 3, 3, 1];
  const pl = (p: Partial<SamplingParams>) => Array.from(new Sampler(p, 4).processLogits(logits, hist));
  assert.deepEqual(pl({}), [2, -1, 0.5, 3]);
  assert.deepEqual(pl({ repetition_penalty: 1.5 }), [2, -1.5, 0.5, 2]); // once, not 3 times
  assert.deepEqual(pl({ presence_penalty: 1 }), [2, -2, 0.5, 2]);
  assert.deepEqual(pl({ frequency_penalty: 1 }), [2, -2, 0.5, 0]);
  assert.deepEqual(pl({ presence_penalty: -0.5 }), [2, -0.5, 0.5, 3.5]); // negative encourages
  assert.deepEqual(pl({ repetition_penalty: 0.5 }), [2, -0.5, 0.5, 6]); // < 1 encourages
});

test("penalties change greedy choices", () => {
  const logits = f32([1, 1.2, 0.95]);
  const s = new Sampler({ temperature: 0, repetition_penalty: 1.3 }, 3);
  assert.equal(s.sample(logits, []), 1);
  assert.equal(s.sample(logits, [1]), 0);       // 1.2 / 1.3 = 0.92 < 1
  assert.equal(s.sample(logits, [1, 0]), 2);    // 1 / 1.3 = 0.77, 0.92 < 0.95
  const f = new Sampler({ temperature: 0, frequency_penalty: 0.1 }, 3);
  assert.equal(f.sample(logits, [1]), 1);       // 1.1 > 1
  assert.equal(f.sample(logits, [1, 1, 1]), 0); // 0.9 < 1
});

test("logit_bias -100 bans a token and +100 forces one", () => {
  const logits = f32([0.5, 4, 3.9, 1, -2]);
  const ban = new Sampler({ logit_bias: { 1: -100 }, seed: 9 }, 5);
  for (let i = 0; i < 3000; i++) assert.notEqual(ban.sample(logits), 1);
  assert.equal(new Sampler({ temperature: 0, logit_bias: { 1: -100 } }, 5).sample(logits), 2);
  // keys as they arrive from JSON
  const force = new Sampler({ logit_bias: { "4": 100 }, seed: 9, temperature: 2 } as never, 5);
  for (let i = 0; i < 3000; i++) assert.equal(force.sample(logits), 4);
  // a small bias shifts the distribution by exactly exp(bias)
  const d = new Sampler({ logit_bias: { 0: 1 } }, 5).distribution(logits);
  const ref = softmax(Array.from(logits, (x, i) => (i === 0 ? x + 1 : x)));
  assert.ok(Math.abs(d.probs[d.tokens.indexOf(0)] - ref[0]) < 1e-12);
});

test("the caller's logits are not modified", () => {
  const logits = f32([1, 2, 3]);
  const s = new Sampler({ repetition_penalty: 2, presence_penalty: 1, logit_bias: { 0: 5 }, seed: 1 }, 3);
  s.sample(logits, [0, 1, 2]);
  assert.deepEqual(Array.from(logits), [1, 2, 3]);
});

// ---------------------------------------------------------------------------------------------
// seeds and the PRNG

test("the same seed gives the same tokens; different seeds differ", () => {
  const V = 50;
  const logits = randomLogits(V, 3, 0.5);
  const run = (seed?: number) => {
    const s = new Sampler({ seed, temperature: 1, top_p: 0.95 }, V);
    return Array.from({ length: 300 }, () => s.sample(logits));
  };
  assert.deepEqual(run(42), run(42));
  assert.notDeepEqual(run(42), run(43));
  assert.notDeepEqual(run(42), run(42 + 2 ** 32)); // high bits of the seed count
  assert.notDeepEqual(run(-1), run(0xffffffff));
  assert.notDeepEqual(run(), run()); // no seed: random seeds
  const a = new Sampler({}, V);
  const b = new Sampler({}, V);
  assert.ok(Number.isInteger(a.seed) && a.seed !== b.seed);
});

test("Prng: pinned sequence, range and rough uniformity", () => {
  const r = new Prng(42);
  const first = [r.nextUint32(), r.nextUint32(), r.nextUint32()];
  // Pinned so that seeded outputs stay the same across releases.
  assert.deepEqual(first, PINNED_42);
  const g = new Prng(7);
  const buckets = new Array(16).fill(0);
  let sum = 0;
  const n = 160000;
  for (let i = 0; i < n; i++) {
    const x = g.nextFloat();
    assert.ok(x >= 0 && x < 1);
    sum += x;
    buckets[Math.floor(x * 16)]++;
  }
  assert.ok(Math.abs(sum / n - 0.5) < 0.005, `mean ${sum / n}`);
  const chi2 = buckets.reduce((a, c) => a + (c - n / 16) ** 2 / (n / 16), 0);
  assert.ok(chi2 < 40, `chi2 ${chi2} over 15 degrees of freedom`); // p ~ 5e-4
  assert.throws(() => new Prng(1.5), /seed/);
});
const PINNED_42 = [1235409946, 4282023600, 4181149316];

// ---------------------------------------------------------------------------------------------
// the device path: what it may take, and the same tokens for the same seed

test("deviceSamplable: temperature and top-p only; logit_bias, penalties and top-k need the CPU", () => {
  const V = 100;
  const device = (p: Partial<SamplingParams>) => new Sampler({ seed: 1, ...p }, V).deviceSamplable;
  for (const p of [{}, { temperature: 0 }, { temperature: 0.5, top_p: 0.3 }, { top_k: 0 }, { top_k: -1 },
                   { top_k: V }, { temperature: 0, top_k: 5 }]) {
    assert.equal(device(p), true, JSON.stringify(p));
  }
  for (const p of [{ top_k: 5 }, { logit_bias: { 3: 0 } }, { temperature: 0, logit_bias: { 3: -100 } },
                   { repetition_penalty: 1.1 }, { presence_penalty: 0.5 }, { frequency_penalty: -0.5 },
                   { temperature: 0, repetition_penalty: 1.2 }]) {
    assert.equal(device(p), false, JSON.stringify(p));
    assert.throws(() => new Sampler({ seed: 1, ...p }, V).deviceDraw(), /need the CPU sampler/);
  }
});

test("deviceDraw takes the PRNG's numbers exactly when sample() would", () => {
  const greedy = new Sampler({ temperature: 0, seed: 4 }, 10);
  assert.deepEqual([greedy.deviceDraw(), greedy.deviceDraw()], [{ greedy: true }, { greedy: true }]);
  const draws = new Sampler({ temperature: 0.8, top_p: 0.95, seed: 4 }, 10);
  const prng = new Prng(4);
  for (let i = 0; i < 5; i++) {
    assert.deepEqual(draws.deviceDraw(), { greedy: false, temperature: 0.8, topP: 0.95, uniform: prng.nextFloat() });
  }
});

/**
 * What the device picks for `draw` (compiler/webllm/sampling_kernels.py): the first maximum if
 * greedy, else softmax(logits / temperature) -> stable descending argsort -> the nucleus up to the
 * first cumulative probability c_k >= top_p -> the first position j with u < c_j / c_k. In float64.
 */
function deviceReference(logits: Float32Array, draw: DeviceDraw): number {
  if (draw.greedy) return logits.indexOf(Math.max(...logits));
  const probs = softmax(logits, draw.temperature);
  const order = probs.map((_, i) => i).sort((a, b) => probs[b] - probs[a] || a - b);
  const cum: number[] = [];
  for (const id of order) cum.push((cum.at(-1) ?? 0) + probs[id]);
  const reach = cum.findIndex((c) => c >= draw.topP);
  const cut = reach < 0 ? order.length - 1 : reach;
  const j = cum.findIndex((c, k) => k <= cut && draw.uniform < c / cum[cut]);
  return order[j < 0 ? cut : j];
}

test("the CPU sampler picks the token the device picks from the same seed", () => {
  const V = 1000;
  for (const [temperature, top_p] of [[1, 1], [0.7, 0.9], [1.3, 0.5], [2, 1], [0, 1]]) {
    for (const seed of [1, 2, 3]) {
      const cpu = new Sampler({ temperature, top_p, seed }, V);
      const device = new Sampler({ temperature, top_p, seed }, V);
      const tokens = new Set<number>();
      for (let step = 0; step < 40; step++) {
        const logits = randomLogits(V, seed * 1000 + step, 1);
        const token = cpu.sample(logits);
        assert.equal(token, deviceReference(logits, device.deviceDraw()), `T ${temperature}, top_p ${top_p}, seed ${seed}, step ${step}`);
        tokens.add(token);
      }
      if (temperature > 0) assert.ok(tokens.size > 10, "the draws spread over many tokens");
    }
  }
});

// ---------------------------------------------------------------------------------------------
// validation and errors

test("validateSamplingParams fills OpenAI defaults; null means default", () => {
  assert.deepEqual(validateSamplingParams({}), { ...DEFAULT_SAMPLING_PARAMS, logit_bias: {} });
  assert.deepEqual(validateSamplingParams(undefined), { ...DEFAULT_SAMPLING_PARAMS, logit_bias: {} });
  const p = validateSamplingParams({ temperature: null, top_p: 0.5, seed: 7, logit_bias: { "12": -3 }, stop: "x" });
  assert.equal(p.temperature, 1);
  assert.equal(p.top_p, 0.5);
  assert.equal(p.seed, 7);
  assert.deepEqual(p.logit_bias, { 12: -3 });
  assert.equal("stop" in p, false);
  assert.equal("seed" in validateSamplingParams({}), false);
});

test("validateSamplingParams names the offending field", () => {
  const bad: [Record<string, unknown>, RegExp, number?][] = [
    [{ top_p: 1.5 }, /^top_p must be in \(0, 1\], got 1\.5$/],
    [{ top_p: 0 }, /^top_p must be in \(0, 1\], got 0$/],
    [{ temperature: -0.1 }, /^temperature must be in \[0, 2\], got -0\.1$/],
    [{ temperature: 2.5 }, /^temperature /],
    [{ temperature: "hot" }, /^temperature must be a number, got "hot"$/],
    [{ temperature: NaN }, /^temperature must be a number, got NaN$/],
    [{ top_k: 2.5 }, /^top_k must be an integer/],
    [{ top_k: -2 }, /^top_k /],
    [{ top_k: "5" }, /^top_k must be a number/],
    [{ frequency_penalty: 3 }, /^frequency_penalty must be in \[-2, 2\], got 3$/],
    [{ presence_penalty: -2.1 }, /^presence_penalty must be in \[-2, 2\]/],
    [{ repetition_penalty: 0 }, /^repetition_penalty must be a finite number > 0, got 0$/],
    [{ repetition_penalty: Infinity }, /^repetition_penalty /],
    [{ logit_bias: [1, 2] }, /^logit_bias must be an object/],
    [{ logit_bias: "x" }, /^logit_bias must be an object/],
    [{ logit_bias: { abc: 1 } }, /^logit_bias keys must be token ids.*"abc"/],
    [{ logit_bias: { "-1": 1 } }, /^logit_bias keys/],
    [{ logit_bias: { 5: 101 } }, /^logit_bias\[5\] must be in \[-100, 100\], got 101$/],
    [{ logit_bias: { 5: "1" } }, /^logit_bias\[5\] must be a number/],
    [{ logit_bias: { 10: 1 } }, /^logit_bias token id 10 is out of range/, 10],
    [{ seed: 1.5 }, /^seed must be an integer, got 1\.5$/],
    [{ seed: "42" }, /^seed must be an integer, got "42"$/],
  ];
  for (const [obj, re, vocab] of bad) {
    assert.throws(() => validateSamplingParams(obj, vocab), { message: re }, JSON.stringify(obj));
  }
  assert.throws(() => validateSamplingParams("x"), /must be an object/);
  assert.throws(() => new Sampler({ top_p: 1.5 }, 10), { message: /^top_p must be in/ });
  for (const ok of [{ top_p: 1 }, { temperature: 0 }, { temperature: 2 }, { top_k: -1 }, { seed: -5 },
    { frequency_penalty: -2 }, { logit_bias: { 9: -100 } }]) {
    assert.doesNotThrow(() => new Sampler(ok, 10), JSON.stringify(ok));
  }
});

test("bad inputs to sample() give clear errors", () => {
  const s = new Sampler({ seed: 1, repetition_penalty: 1.1 }, 4);
  assert.throws(() => s.sample(f32([1, 2, 3])), /logits has 3 entries.*vocabulary of 4/);
  assert.throws(() => s.sample(f32([1, 2, 3, 4]), [0, 4]), /history\[1\] = 4/);
  assert.throws(() => s.sample(f32([1, 2, 3, 4]), [0], 2), /promptLength/);
  const allBanned = f32([-Infinity, -Infinity, NaN, -Infinity]);
  assert.throws(() => s.sample(allBanned), /-Infinity/);
  assert.throws(() => new Sampler({ temperature: 0 }, 4).sample(allBanned), /-Infinity/);
  assert.throws(() => new Sampler({}, 0), /vocabSize/);
  // NaN never wins, +Infinity dominates
  assert.equal(new Sampler({ temperature: 0 }, 3).sample(f32([NaN, 1, 0])), 1);
  const inf = new Sampler({ seed: 2 }, 3);
  for (let i = 0; i < 100; i++) assert.equal(inf.sample(f32([0, Infinity, 5])), 1);
});

// ---------------------------------------------------------------------------------------------
// speed at Llama-3 vocabulary size

test("128k vocabulary: top-k, nucleus and plain sampling are fast", () => {
  const V = 128256;
  const logits = randomLogits(V, 99, 4);
  const times: string[] = [];
  for (const p of [{ top_k: 40 }, { top_p: 0.9 }, { top_k: 40, top_p: 0.9 }, {}, { temperature: 0 }]) {
    const s = new Sampler({ ...p, seed: 1, repetition_penalty: 1.1, frequency_penalty: 0.2 }, V);
    const history = Array.from({ length: 2000 }, (_, i) => (i * 7919) % V);
    s.sample(logits, history); // warm-up
    const n = 20;
    const t0 = performance.now();
    for (let i = 0; i < n; i++) s.sample(logits, history, 1000);
    const ms = (performance.now() - t0) / n;
    times.push(`${JSON.stringify(p)} ${ms.toFixed(2)} ms`);
    assert.ok(ms < 100, `${JSON.stringify(p)}: ${ms} ms per token`);
  }
  console.log(`sampler, V=${V}, per token: ${times.join("; ")}`);
});
