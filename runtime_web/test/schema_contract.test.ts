// The bundle contract: compiler/schema/*.schema.json are the source of truth; src/bundle_schema.ts
// (types + schema constants) is generated from them, and the runtime validates with them.
// - A schema edited without regenerating, or the generated file edited by hand, fails here.
// - The validator implements every keyword the schemas use, and says what is wrong in words that
//   name the field and the fix.
// Run: cd runtime_web && node build.mjs --tests && node --test .build/test/schema_contract.test.mjs
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { test } from "node:test";

import { KILN_CONFIG_SCHEMA, SITE_MODELS_SCHEMA, TENSOR_CACHE_SCHEMA } from "../src/bundle_schema";
import type { KilnConfig, SiteManifest, TensorCacheIndex } from "../src/bundle_types";
import { validateKilnConfig, validateTensorCache } from "../src/bundle_validate";
import { LoadError } from "../src/errors";
import { describeSchema, findIssue, SUPPORTED_KEYWORDS, unsupportedKeywords } from "../src/json_schema";

// This file runs as .build/test/schema_contract.test.mjs; the generator is runtime_web/scripts/.
const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const GENERATOR = `${ROOT}scripts/gen_schema_types.mjs`;

function node(args: string[]): { status: number | null; out: string } {
  const run = spawnSync(process.execPath, args, { cwd: ROOT, encoding: "utf8" });
  return { status: run.status, out: `${run.stdout}${run.stderr}` };
}

test("src/bundle_schema.ts is what the generator makes of compiler/schema/ (npm run gen-schema)", () => {
  const { status, out } = node([GENERATOR, "--check"]);
  assert.equal(status, 0, out);
});

test("the generator and the validator support the same keywords, and the schemas use no others", () => {
  const { status, out } = node(["--input-type=module", "-e",
    `import { SUPPORTED } from ${JSON.stringify(GENERATOR)}; console.log(JSON.stringify([...SUPPORTED].sort()));`]);
  assert.equal(status, 0, out);
  assert.deepEqual(JSON.parse(out), [...SUPPORTED_KEYWORDS].sort());
  for (const schema of [KILN_CONFIG_SCHEMA, TENSOR_CACHE_SCHEMA, SITE_MODELS_SCHEMA]) {
    assert.deepEqual(unsupportedKeywords(schema), [], schema.$id);
  }
});

// What kiln build writes (compiler/kiln_config.py), typed by the generated type.
function config(): KilnConfig {
  return {
    kiln_version: "0.1.0", format_version: 1, license: "apache-2.0", architecture: "LlamaForCausalLM", model_type: "llama",
    model_config: { hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2, num_attention_heads: 4,
                    num_key_value_heads: 2, head_dim: 16, vocab_size: 640, rms_norm_eps: 1e-5, rope_theta: 500000,
                    rope_scaling: { rope_type: "llama3", factor: 8 }, tie_word_embeddings: true, sliding_window: null },
    quantization: "q4f32_2", context_window_size: 2048, prefill_chunk_size: 512, sliding_window_size: -1,
    sampling: { temperature: 0.6, top_p: 0.9, top_k: 0, repetition_penalty: 1 },
    tokens: { bos_token_id: 1, eos_token_ids: [2, 3], stop_token_ids: [2, 3], pad_token_id: null },
    chat_template: "{{ messages }}", tokenizer_files: ["tokenizer.json", "tokenizer_config.json"],
    libraries: { webgpu: "model_webgpu.wasm", wasm: "model_wasm.wasm" }, tensor_cache: "tensor-cache.json",
    webgpu_features: [], estimated_memory_bytes: { weights: 10, kv_cache: 20, activations: 3, total: 33 },
    params: { count: 100, bytes: 10, bits_per_param: 0.8 },
  };
}

/** The message of the LoadError that validating `value` with `validate` throws. */
function problem(validate: (v: unknown) => void, value: unknown): string {
  try {
    validate(value);
  } catch (err) {
    assert.ok(err instanceof LoadError, String(err));
    assert.equal(err.code, "bad_bundle");
    assert.match(err.message, /; rebuild the bundle with `kiln build`/);
    return err.message;
  }
  assert.fail("no error");
}

test("kiln-config.json: a config as kiln build writes it passes; each break names the field", () => {
  validateKilnConfig(config());
  const cases: [(c: Record<string, any>) => void, string][] = [ // eslint-disable-line @typescript-eslint/no-explicit-any
    [(c) => delete c.architecture, "missing field architecture"],
    [(c) => delete c.model_config.rope_theta, "missing field model_config.rope_theta"],
    [(c) => { c.context_window_size = 0; }, "field context_window_size must be a positive integer below 2^31, got 0"],
    [(c) => { c.prefill_chunk_size = 2 ** 31; }, "field prefill_chunk_size must be a positive integer below 2^31, got 2147483648"],
    [(c) => { c.quantization = "q3f16_0"; }, 'field quantization must be one of "q0f32", "q0f16", "q4f32_1", "q4f16_1", "q4f32_2", "q4f16_2", got "q3f16_0"'],
    [(c) => { c.chat_template = 5; }, "field chat_template must be a string or null, got 5"],
    [(c) => { c.tokens.stop_token_ids = [2, "x"]; }, 'field tokens.stop_token_ids[1] must be an integer, got "x"'],
    [(c) => { c.sampling.top_p = 0; }, "field sampling.top_p must be a positive number at most 1, got 0"],
    [(c) => { c.libraries = {}; }, "field libraries must be an object with at least one of the fields webgpu, wasm, got {}"],
    [(c) => { c.libraries.wasm = "model.js"; }, 'field libraries.wasm must be a string matching /\\.wasm$/, got "model.js"'],
    [(c) => { c.libraries.cuda = "x.wasm"; }, "field libraries.cuda is not part of the bundle format this runtime reads"],
    [(c) => { c.tokenizer_files = ["vocab.json"]; }, 'field tokenizer_files must be an array of strings including "tokenizer.json", got ["vocab.json"]'],
    [(c) => { c.webgpu_features = ["subgroups"]; }, 'field webgpu_features[0] must be "shader-f16", got "subgroups"'],
    [(c) => { c.tensor_cache = "weights.json"; }, 'field tensor_cache must be "tensor-cache.json", got "weights.json"'],
    [(c) => { c.model_id = "x"; }, "field model_id is not part of the bundle format this runtime reads"],
    [(c) => { c.format_version = 2; }, "format_version 2 is not supported by this runtime (it reads 1)"],
    [(c) => { delete c.format_version; }, "missing field format_version"],
  ];
  for (const [edit, want] of cases) {
    const c = config();
    edit(c);
    assert.equal(problem(validateKilnConfig, c), `kiln-config.json: ${want}; rebuild the bundle with \`kiln build\` and upload the whole output folder`);
  }
  assert.match(problem(validateKilnConfig, [1]), /^kiln-config\.json: is not a JSON object;/);
});

// What compiler/tensor_cache.py writes.
function cache(): TensorCacheIndex {
  const sha = "ab".repeat(32);
  return {
    metadata: { ParamSize: 24, ParamBytes: 96, BitsPerParam: 32 },
    records: [{ dataPath: "params_shard_0.bin", format: "raw-shard", nbytes: 96, md5sum: "0".repeat(32), sha256: sha,
                records: [{ name: "w", shape: [4, 6], dtype: "float32", format: "raw", nbytes: 96, byteOffset: 0 }] }],
  };
}

test("tensor-cache.json: an index as kiln build writes it passes; each break names the shard and tensor", () => {
  validateTensorCache(cache());
  const cases: [(c: Record<string, any>) => void, string][] = [ // eslint-disable-line @typescript-eslint/no-explicit-any
    [(c) => delete c.records, "missing field records (the list of weight shards)"],
    [(c) => { c.records = []; }, "lists no weight shards"],
    [(c) => delete c.records[0].sha256, "shard 0 (params_shard_0.bin) has no sha256 to verify it against (a WebLLM/MLC tensor cache has only md5sum)"],
    [(c) => { c.records[0].sha256 = "abc"; }, 'shard 0 (params_shard_0.bin): sha256 must be 64 hex digits, got "abc"'],
    [(c) => { c.records[0].records[0].dtype = "float8"; }, 'shard 0 (params_shard_0.bin): tensor 0 (w): field dtype must be one of "float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint64", "uint32", "uint16", "uint8", got "float8"'],
    [(c) => { c.records[0].records[0].format = "f32-to-bf16"; }, 'shard 0 (params_shard_0.bin): tensor 0 (w): field format must be "raw", got "f32-to-bf16"'],
    [(c) => delete c.records[0].records[0].byteOffset, "shard 0 (params_shard_0.bin): tensor 0 (w): missing field byteOffset"],
    [(c) => { c.records[0].nbytes = -1; }, "shard 0 (params_shard_0.bin): field nbytes must be a non-negative integer, got -1"],
    [(c) => { c.records[0].records[0].nbytes = 97; }, "shard 0 (params_shard_0.bin): tensor w (bytes 0..97) lies outside the shard's 96 bytes"],
    [(c) => delete c.metadata.ParamBytes, "missing field metadata.ParamBytes"],
  ];
  for (const [edit, want] of cases) {
    const c = cache();
    edit(c);
    assert.equal(problem(validateTensorCache, c), `tensor-cache.json: ${want}; rebuild the bundle with \`kiln build\` and upload the whole output folder`);
  }
});

test("models.json: a manifest as kiln site writes it conforms; the schema catches a changed entry", () => {
  const manifest: SiteManifest = {
    models: [{ id: "SmolLM2-135M-Instruct-q4f32_2", name: "SmolLM2-135M-Instruct-q4f32_2",
               path: "models/SmolLM2-135M-Instruct-q4f32_2/", bytes: 123456, quantization: "q4f32_2",
               backends: ["webgpu", "wasm"], webgpu_features: [], context_window: 2048, params: 134515008, demo: false,
               license: "apache-2.0" }],
  };
  assert.equal(findIssue(SITE_MODELS_SCHEMA, manifest), null);
  assert.equal(findIssue(SITE_MODELS_SCHEMA, { models: [] }), null); // an empty site: the app says so
  const renamed = { models: [{ ...manifest.models[0], context_window_size: 2048 }] };
  assert.deepEqual(findIssue(SITE_MODELS_SCHEMA, renamed)?.path, ["models", 0, "context_window_size"]);
  const noPath = { models: [{ ...manifest.models[0], path: undefined }] };
  assert.equal(findIssue(SITE_MODELS_SCHEMA, JSON.parse(JSON.stringify(noPath)))?.kind, "missing");
});

test("schemas in words", () => {
  assert.equal(describeSchema({ type: "integer", minimum: 0 }), "a non-negative integer");
  assert.equal(describeSchema({ type: "number", exclusiveMinimum: 0 }), "a positive number");
  assert.equal(describeSchema({ type: "integer", minimum: 5, maximum: 9 }), "an integer of at least 5 and at most 9");
  assert.equal(describeSchema({ type: ["integer", "null"] }), "an integer or null");
  assert.equal(describeSchema({ type: "array", items: { enum: ["webgpu", "wasm"] }, minItems: 1 }),
               'a non-empty array of values among "webgpu", "wasm"');
  assert.equal(describeSchema({ type: "boolean" }), "true or false");
});
