// Names for the bundle's JSON files and their parts. The types themselves are generated from the
// JSON Schemas in compiler/schema/ (src/bundle_schema.ts); this module only names pieces of them.

import type { KilnConfig, SiteManifest, TensorCacheIndex } from "./bundle_schema";

export type { KilnConfig, SiteManifest, TensorCacheIndex };

/** A backend a bundle can have a kernel library for (a key of kiln-config.json's libraries). */
export type Backend = keyof KilnConfig["libraries"];

/** One weight shard of tensor-cache.json. */
export type ShardRecord = TensorCacheIndex["records"][number];

/** One tensor of a shard. */
export type TensorRecord = ShardRecord["records"][number];

/** One model of a site's models.json (what `kiln site` writes and the demo app lists). */
export type SiteModel = SiteManifest["models"][number];

/** The part of kiln-config.json the model needs. */
export type ModelConfig = Pick<KilnConfig, "context_window_size" | "prefill_chunk_size" | "sliding_window_size"> & {
  model_config: Pick<KilnConfig["model_config"], "vocab_size" | "hidden_size">;
};

/** Any JSON object (tokenizer.json, tokenizer_config.json: read by the tokenizers library). */
export type JsonObject = { [key: string]: unknown };

/** tokenizer.json: the tokenizers library's file; the loader checks only that it has a model. */
export interface TokenizerJson {
  model: JsonObject;
  [key: string]: unknown;
}
