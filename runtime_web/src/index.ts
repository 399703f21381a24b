// kiln's web runtime, one ES module: createEngine(bundleUrl, { tvmjs, backend, cache, onProgress })
// gives an OpenAI-shaped engine (chat.completions.create, completions.create) over a kiln bundle.
export { createEngine, Engine, EngineError, AbortError } from "./engine";
export { chatPromptIds } from "./chat_prompt";
export type { EngineOptions } from "./engine";
export { createWorkerEngine, WorkerEngine } from "./worker_engine";
export type { WorkerEngineOptions, WorkerLike } from "./worker_engine";
export { openBundle, LoadError, clearShardCache } from "./loader";
export type { CacheMode, LoadProgress, LoadedBundle } from "./loader";
export { KilnModel } from "./model";
export type { Backend, ModelConfig, TensorCacheIndex } from "./model";
export { Sampler, validateSamplingParams } from "./sampler";
export { StopStringMatcher } from "./stop_strings";
export { Tokenizer } from "./tokenizer";
export { renderChatTemplate } from "./chat_template";
export { installNodeWebGPU } from "./node_webgpu";
