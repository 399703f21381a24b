// kiln's web runtime, one ES module: createEngine(bundleUrl, { tvmjs, backend, cache, onProgress })
// gives an OpenAI-shaped engine (chat.completions.create, completions.create) over a kiln bundle.
// Its declarations (npm run build writes dist/kiln.d.mts) give a page's editor the types below.
export { createEngine, Engine } from "./engine";
export type { EngineOptions, EngineReply } from "./engine";
export { AbortError, ChatTemplateError, EngineError, LoadError } from "./errors";
export type { ChatTemplateErrorCode, EngineErrorCode, ErrorData, KilnErrorCode, LoadErrorCode } from "./errors";
export type {
  ApiKind, ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ChatCompletions, ChatMessageParam,
  CompletionRequest, Completions, CompletionUsage, FinishReason, KilnEngine, RequestFields, RequestOptions,
  TextCompletion, TextCompletionChunk,
} from "./api_types";
export { chatPromptIds } from "./chat_prompt";
export { createWorkerEngine, WorkerEngine } from "./worker_engine";
export type { WorkerEngineOptions, WorkerLike } from "./worker_engine";
export type {
  AbortMessage, ChunkReply, ErrorReply, InterimReply, LoadMessage, LoadResult, PageMessage, ProgressReply,
  RequestMessage, ResetChatMessage, ResultReply, ResultValue, StreamReply, UnloadMessage, WorkerMessage,
} from "./worker_protocol";
export { openBundle, clearShardCache } from "./loader";
export type { CacheMode, LoadProgress, LoadedBundle, OpenBundleOptions, ShardStore } from "./loader";
export { KilnModel } from "./model";
export type { Readback } from "./model";
export { instantiateLibrary } from "./library";
export type { LoadedLibrary } from "./library";
export type {
  Backend, KilnConfig, ModelConfig, ShardRecord, SiteManifest, SiteModel, TensorCacheIndex, TensorRecord,
} from "./bundle_types";
export type { TvmjsModule } from "./tvmjs_types";
export { Sampler, validateSamplingParams } from "./sampler";
export type { DeviceDraw, SamplingParams } from "./sampler";
export { StopStringMatcher } from "./stop_strings";
export { Tokenizer } from "./tokenizer";
export { renderChatTemplate } from "./chat_template";
export type { ChatMessage, ChatTemplateInput } from "./chat_template";
export { installNodeWebGPU } from "./node_webgpu";
