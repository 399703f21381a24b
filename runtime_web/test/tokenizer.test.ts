// Tokenizer ids, decoding and streaming detokenization against the Python `tokenizers` library
// (and transformers' AutoTokenizer), for every tiny test checkpoint. The reference data comes from
// tests/runtime_fixtures.py through KILN_FIXTURES; run through `pytest tests/test_runtime_unit.py`.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { findSpecials } from "../src/chat_prompt";
import { Tokenizer } from "../src/tokenizer";

interface TextCase {
  text: string;
  ids: number[];
  ids_no_special: number[];
  ids_special_as_text: number[];
  ids_transformers: number[];
  ids_no_special_transformers: number[];
  decoded: string;
  decoded_skip_special: string;
  decoded_transformers: string;
  stream: string[];
  stream_skip_special: string[];
  prefix_decodes?: string[];
}

interface DecodeCase {
  ids: number[];
  decoded: string;
  decoded_skip_special: string;
  stream: string[];
}

interface VariantFixtures {
  tokenizer_json: string;
  tokenizer_config: string;
  tokens: Record<string, number>;
  texts: TextCase[];
  decode_cases: DecodeCase[];
}

function loadFixtures(): { variants: Record<string, VariantFixtures> } | undefined {
  const path = process.env.KILN_FIXTURES;
  return path ? JSON.parse(readFileSync(path, "utf8")) : undefined;
}

function loadTokenizer(fx: VariantFixtures): Tokenizer {
  return Tokenizer.fromJSON(JSON.parse(readFileSync(fx.tokenizer_json, "utf8")),
                            JSON.parse(readFileSync(fx.tokenizer_config, "utf8")));
}

/** Every case where `actual(case)` differs from `expected(case)`, for one readable assertion. */
function mismatches<C, T>(cases: C[], actual: (c: C) => T, expected: (c: C) => T, label: (c: C) => unknown) {
  const out: { case: unknown; actual: T; expected: T }[] = [];
  for (const c of cases) {
    const [a, e] = [actual(c), expected(c)];
    if (JSON.stringify(a) !== JSON.stringify(e)) out.push({ case: label(c), actual: a, expected: e });
  }
  return out;
}

function streamAll(tokenizer: Tokenizer, ids: number[], skipSpecialTokens: boolean) {
  const decoder = tokenizer.createStreamDecoder({ skipSpecialTokens });
  const pushed = ids.map((id) => decoder.push(id));
  return { pushed, flushed: decoder.flush() };
}

const fixtures = loadFixtures();

if (fixtures === undefined) {
  test("tokenizer reference data", () => {
    assert.fail("KILN_FIXTURES is not set: these tests compare against Python reference data that "
      + "tests/runtime_fixtures.py writes; run them with `.venv/bin/python -m pytest tests/test_runtime_unit.py`");
  });
} else {
  for (const [variant, fx] of Object.entries(fixtures.variants)) {
    const tokenizer = loadTokenizer(fx);
    const byText = (c: TextCase) => c.text;

    test(`${variant}: encode gives the Python tokenizers ids`, () => {
      assert.ok(fx.texts.length > 20);
      assert.deepEqual(mismatches(fx.texts, (c) => tokenizer.encode(c.text), (c) => c.ids, byText), []);
      assert.deepEqual(mismatches(fx.texts, (c) => tokenizer.encode(c.text, { addSpecialTokens: false }),
                                  (c) => c.ids_no_special, byText), []);
    });

    test(`${variant}: encode gives transformers' AutoTokenizer ids`, () => {
      assert.deepEqual(mismatches(fx.texts, (c) => tokenizer.encode(c.text), (c) => c.ids_transformers, byText), []);
      assert.deepEqual(mismatches(fx.texts, (c) => tokenizer.encode(c.text, { addSpecialTokens: false }),
                                  (c) => c.ids_no_special_transformers, byText), []);
    });

    test(`${variant}: decode gives the Python text`, () => {
      assert.deepEqual(mismatches(fx.texts, (c) => tokenizer.decode(c.ids), (c) => c.decoded, byText), []);
      assert.deepEqual(mismatches(fx.texts, (c) => tokenizer.decode(c.ids, { skipSpecialTokens: true }),
                                  (c) => c.decoded_skip_special, byText), []);
      assert.deepEqual(mismatches(fx.texts, (c) => tokenizer.decode(c.ids), (c) => c.decoded_transformers, byText), []);
      // Model output that encode() never produces: partial characters, out-of-vocabulary ids.
      const byIds = (c: DecodeCase) => c.ids;
      assert.deepEqual(mismatches(fx.decode_cases, (c) => tokenizer.decode(c.ids), (c) => c.decoded, byIds), []);
      assert.deepEqual(mismatches(fx.decode_cases, (c) => tokenizer.decode(c.ids, { skipSpecialTokens: true }),
                                  (c) => c.decoded_skip_special, byIds), []);
      assert.equal(tokenizer.decode([]), "");
      assert.equal(tokenizer.decode(new Int32Array(fx.texts[0].ids)), fx.texts[0].decoded);
    });

    test(`${variant}: decode of every prefix (partial UTF-8 as U+FFFD, as Python)`, () => {
      const cases = fx.texts.filter((c) => c.prefix_decodes);
      assert.ok(cases.length > 0);
      for (const c of cases) {
        const actual = c.ids.map((_, k) => tokenizer.decode(c.ids.slice(0, k))).concat(tokenizer.decode(c.ids));
        assert.deepEqual(actual, c.prefix_decodes, c.text);
      }
    });

    test(`${variant}: the stream decoder emits what Python's DecodeStream does, and flush completes it`, () => {
      for (const [skip, expected, full] of [[false, "stream", "decoded"], [true, "stream_skip_special", "decoded_skip_special"]] as const) {
        assert.deepEqual(mismatches(fx.texts, (c) => streamAll(tokenizer, c.ids, skip).pushed, (c) => c[expected], byText), []);
        assert.deepEqual(mismatches(fx.texts, (c) => streamAll(tokenizer, c.ids, skip), (c) => ({ pushed: c[expected], flushed: "" }), byText), []);
        assert.deepEqual(mismatches(fx.texts, (c) => { const s = streamAll(tokenizer, c.ids, skip); return s.pushed.join("") + s.flushed; },
                                    (c) => c[full], byText), []);
      }
      for (const c of fx.decode_cases) {
        const { pushed, flushed } = streamAll(tokenizer, c.ids, false);
        assert.deepEqual(pushed, c.stream, JSON.stringify(c.ids));
        assert.equal(pushed.join("") + flushed, c.decoded, JSON.stringify(c.ids));
      }
    });

    test(`${variant}: the stream decoder never returns half a character`, () => {
      for (const c of fx.texts.filter((t) => !t.decoded.includes("\uFFFD"))) {
        let soFar = "";
        for (const chunk of streamAll(tokenizer, c.ids, false).pushed) {
          assert.ok(!chunk.includes("\uFFFD"), `${JSON.stringify(c.text)}: chunk ${JSON.stringify(chunk)}`);
          soFar += chunk;
          assert.ok(c.decoded.startsWith(soFar), `${JSON.stringify(c.text)}: ${JSON.stringify(soFar)}`);
        }
      }
    });

    test(`${variant}: idOf, tokenOf and isSpecial`, () => {
      for (const [token, id] of Object.entries(fx.tokens)) {
        assert.equal(tokenizer.idOf(token), id, token);
        assert.equal(tokenizer.tokenOf(id), token);
        assert.ok(tokenizer.isSpecial(id), token);
      }
      assert.equal(tokenizer.idOf("no such token \u{1F600}\u{1F600}"), undefined);
      const plain = fx.texts[0].ids_no_special[0];
      assert.equal(tokenizer.idOf(tokenizer.tokenOf(plain)!), plain);
      assert.equal(tokenizer.isSpecial(plain), false);
    });
  }
}

// ---------------------------------------------------------------------------------------------
// special-token strings as text (what chat messages get by default)

if (fixtures !== undefined) {
  for (const [variant, fx] of Object.entries(fixtures.variants)) {
    test(`${variant}: encodeWithSpecialSpans encodes special-token strings as text, as Python's encode_special_tokens`, () => {
      const tokenizer = loadTokenizer(fx);
      const specials = tokenizer.specialTokens();
      assert.ok(specials.length >= 3);
      assert.deepEqual(mismatches(fx.texts, (c) => tokenizer.encodeWithSpecialSpans(c.text, []), (c) => c.ids_special_as_text,
                                  (c) => c.text), []);
      // With every special token marked as markup, the ids are those of a plain encode.
      assert.deepEqual(mismatches(fx.texts, (c) => tokenizer.encodeWithSpecialSpans(c.text, findSpecials(c.text, specials)),
                                  (c) => c.ids_no_special, (c) => c.text), []);
      for (const token of specials) {
        const ids = tokenizer.encodeWithSpecialSpans(token.content, []);
        assert.ok(!ids.includes(token.id) && ids.length > 1, `${token.content} as text: ${ids}`);
      }
    });
  }
}

test("encodeWithSpecialSpans with Metaspace prepend_scheme first: only the text at the start gets the prefix", () => {
  const chars = ["\u2581", ..."abcdefghijklmnopqrstuvwxyz<>/|[]"];
  const vocab: Record<string, number> = { "<unk>": 0 };
  chars.forEach((c, i) => { vocab[c] = i + 1; });
  const special = (content: string, id: number, extra = {}) =>
    ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true, ...extra });
  const json = {
    version: "1.0", truncation: null, padding: null, normalizer: null, post_processor: null,
    added_tokens: [special("<unk>", 0), special("<s>", 100), special("</s>", 101), special("[INST]", 102, { rstrip: true })],
    pre_tokenizer: { type: "Metaspace", replacement: "\u2581", prepend_scheme: "first", split: false },
    decoder: { type: "Metaspace", replacement: "\u2581", prepend_scheme: "first", split: false },
    model: { type: "BPE", dropout: null, unk_token: "<unk>", continuing_subword_prefix: null, end_of_word_suffix: null,
             fuse_unk: true, byte_fallback: false, ignore_merges: false, vocab, merges: [] },
  };
  const tokenizer = Tokenizer.fromJSON(json, {});
  const specials = tokenizer.specialTokens();
  for (const text of ["ab c", "<s>ab c</s>", "x <s> y", "[INST]  hi [INST]x</s>", "a<s>b</s>c", "<s>", " lead"]) {
    assert.deepEqual(tokenizer.encodeWithSpecialSpans(text, findSpecials(text, specials)),
                     tokenizer.encode(text, { addSpecialTokens: false }), text);
  }
  const asText = tokenizer.encodeWithSpecialSpans("<s>x", []);
  assert.ok(!asText.includes(100), String(asText));
  assert.equal(asText[0], vocab["\u2581"], "text at the start gets the prefix");
  assert.deepEqual(tokenizer.encodeWithSpecialSpans("a<s>b", [{ start: 1, end: 4 }]), [vocab["\u2581"], vocab.a, 100, vocab.b]);
  assert.throws(() => tokenizer.encodeWithSpecialSpans("a<s>b", [{ start: 0, end: 2 }]), /not a special token/);
});
