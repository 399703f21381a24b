// kiln's web runtime, one ES module. The engine API (createEngine, chat.completions) is being built
// on these pieces.
export { KilnModel } from "./model";
export type { Backend, ModelConfig, TensorCacheIndex } from "./model";
export { Sampler, validateSamplingParams } from "./sampler";
export { StopStringMatcher } from "./stop_strings";
