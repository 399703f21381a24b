// A loaded kiln model on the tvmjs runtime: weights in the VM's tensor cache, one sequence in the
// paged KV cache, and the three steps the engine needs (prefill a prompt, decode one token, reset).
// A step returns the logits of its last token, or on WebGPU (samplesOnDevice) the token sampled
// from them on the device. The tvmjs module is passed in, so the same code serves Node and the
// browser.

import type { Backend, ModelConfig, TensorCacheIndex } from "./bundle_types";
import { hasDeviceSampling, sampleOnDevice } from "./device_sampler";
import { describeRuntimeFailure, EngineError } from "./errors";
import { instantiateLibrary } from "./library";
import { compilePipelines } from "./pipelines";
import type { DeviceDraw } from "./sampler";
import type { ThreadPool } from "./wasm_threads";
import type { TvmDevice, TvmDisposable, TvmInstance, TvmjsModule, TvmTensor, TvmArray, TvmVirtualMachine } from "./tvmjs_types";

export type { Backend, ModelConfig, TensorCacheIndex };
export type { ShardRecord, TensorRecord } from "./bundle_types";

/** What kiln does with a GPUDevice it owns: destroy it when done. */
interface Destroyable {
  destroy?(): void;
}

const PAGE_SIZE = 16;

/** What the steps have copied from the model's output to JavaScript so far. */
export interface Readback {
  /** Logits vectors (one float32 per vocabulary entry each), for the CPU sampler. */
  logits: number;
  /** Tokens sampled on the device (one int32 each). */
  deviceTokens: number;
  /** Bytes of both. */
  bytes: number;
}

export class KilnModel {
  /** Tokens in the KV cache, i.e. the length of the sequence so far. */
  length = 0;
  private kv: TvmDisposable | null = null;
  // Set to null by dispose(), so that an unloaded model that is still referenced (an Engine the
  // caller keeps) no longer holds the WebAssembly memory, the weights or the GPU device.
  private tvm: TvmInstance | null;
  private device: TvmDevice | null;
  private vm: TvmVirtualMachine | null;
  private params: TvmDisposable | null;
  private gpuDevice: Destroyable | null;
  private pool: ThreadPool | null;
  /** Threads the kernels run on (1 on WebGPU); fixed at load. */
  readonly threads: number;
  /** Whether the library has the device sampling functions; looked up on first use. */
  private deviceSampling: boolean | null = null;
  private readonly copied: Readback = { logits: 0, deviceTokens: 0, bytes: 0 };

  private constructor(tvm: TvmInstance, device: TvmDevice, vm: TvmVirtualMachine, params: TvmDisposable, gpuDevice: Destroyable | null,
                      pool: ThreadPool | null, readonly threadsReason: string | null,
                      readonly config: ModelConfig, readonly backend: Backend) {
    this.tvm = tvm;
    this.device = device;
    this.vm = vm;
    this.params = params;
    this.gpuDevice = gpuDevice;
    this.pool = pool;
    this.threads = pool?.threads ?? 1;
  }

  /**
   * Instantiate the library and upload the weights. `shardBytes(i)` returns shard i of the tensor
   * cache (already verified by the loader); `gpuDevice` is a GPUDevice for the webgpu backend, which
   * the model owns from then on (dispose() destroys it). A failure inside the runtime (a tvmjs exit or
   * abort, e.g. a KV cache too large for memory) is EngineError "model_init_failed"; errors of
   * `shardBytes` (LoadErrors) pass through unchanged. Either way nothing stays allocated.
   * `threads` (WASM only) is how many threads the kernels may use; `threadsReason` of the model
   * says why it got fewer.
   */
  static async load(opts: {
    tvmjs: TvmjsModule;
    library: ArrayBuffer | Uint8Array;
    config: ModelConfig;
    tensorCache: TensorCacheIndex;
    shardBytes: (index: number) => Promise<Uint8Array>;
    backend: Backend;
    gpuDevice?: unknown;
    onShardUploaded?: (index: number) => void;
    /** WebGPU: pipelines compiled so far of those the model waits for (pipelines.ts). */
    onPipelines?: (done: number, total: number) => void;
    log?: (msg: string) => void;
    threads?: number;
  }): Promise<KilnModel> {
    const { tvmjs, backend } = opts;
    let tvm: TvmInstance | null = null;
    let pool: ThreadPool | null = null;
    let stage = "instantiating the kernel library";
    try {
      const loaded = await instantiateLibrary(tvmjs, opts.library, backend === "wasm" ? opts.threads ?? 1 : 1,
                                              opts.log ?? (() => {}));
      ({ tvm, pool } = loaded);
      let device = tvm.cpu();
      if (backend === "webgpu") {
        stage = "initialising WebGPU";
        tvm.initWebGPU(opts.gpuDevice);
        device = tvm.webgpu();
      }
      tvm.beginScope();
      stage = "creating the virtual machine";
      const vm = tvm.detachFromCurrentScope(tvm.createVirtualMachine(device));
      // The pipelines compile while the weights upload; the model waits for both.
      const pipelines = backend === "webgpu"
        ? compilePipelines(tvm, vm.getInternalModule(), opts.config.sliding_window_size > 0, opts.onPipelines)
        : null;
      pipelines?.catch(() => {}); // awaited below; an upload failure must not leave it unobserved
      const names: string[] = [];
      for (let i = 0; i < opts.tensorCache.records.length; i++) {
        const shard = opts.tensorCache.records[i];
        const bytes = await opts.shardBytes(i);
        stage = `uploading the weights of ${shard.dataPath}`;
        for (const rec of shard.records) {
          const tensor = tvm.detachFromCurrentScope(tvm.empty(rec.shape, rec.dtype, device));
          tensor.copyFromRawBytes(bytes.subarray(rec.byteOffset, rec.byteOffset + rec.nbytes));
          tvm.tensorCacheUpdate(rec.name, tensor, false);
          names.push(rec.name);
        }
        if (backend === "webgpu") await device.sync();
        opts.onShardUploaded?.(i);
      }
      if (pipelines) {
        stage = "compiling the WebGPU pipelines";
        await pipelines;
      }
      stage = "collecting the weights";
      const params = tvm.detachFromCurrentScope(tvm.getParamsFromCacheByName(names));
      tvm.endScope();
      const model = new KilnModel(tvm, device, vm, params, (opts.gpuDevice ?? null) as Destroyable | null, pool,
                                  loaded.threadsReason, opts.config, backend);
      stage = `creating the KV cache for a context window of ${opts.config.context_window_size} tokens`;
      model.reset();
      return model;
    } catch (err) {
      pool?.dispose();
      try {
        tvm?.dispose();
      } catch {
        // An instance that exited or aborted may fail to dispose; it is dropped all the same.
      }
      (opts.gpuDevice as Destroyable | undefined)?.destroy?.();
      if (err instanceof Error && typeof (err as { code?: unknown }).code === "string") throw err; // LoadError, EngineError
      const hint = stage.startsWith("creating the KV cache")
        ? "the context window may not fit in memory: rebuild the bundle with a smaller --context-window"
        : "the bundle's kernel library may be damaged or built for another runtime: rebuild it with kiln build";
      throw new EngineError("model_init_failed",
        `setting up the model on ${backend} failed while ${stage}: ${describeRuntimeFailure(err)}; ${hint}`, { cause: err });
    }
  }

  /** Kernel tasks run by helper threads so far (0 on one thread). */
  helperTasks(): number {
    return this.pool?.helperTasks() ?? 0;
  }

  /** What the steps have copied to JavaScript so far (a copy). */
  readback(): Readback {
    return { ...this.copied };
  }

  /**
   * Whether prefillAndSample/decodeAndSample can run: on WebGPU, with a library that has the
   * device sampling functions (one built before kiln_argmax lacks it). On WASM the logits are in
   * host memory already, and the CPU sampler reads them there.
   */
  get samplesOnDevice(): boolean {
    if (this.backend !== "webgpu") return false;
    if (this.deviceSampling === null) {
      const { tvm, vm } = this.live();
      tvm.beginScope();
      try {
        this.deviceSampling = hasDeviceSampling(vm);
      } finally {
        tvm.endScope();
      }
    }
    return this.deviceSampling;
  }

  /** The tvmjs instance, or EngineError "not_loaded" after dispose(). */
  private live(): { tvm: TvmInstance; device: TvmDevice; vm: TvmVirtualMachine; params: TvmDisposable } {
    const { tvm, device, vm, params } = this;
    if (tvm === null || device === null || vm === null || params === null) {
      throw new EngineError("not_loaded", "this model was unloaded; create a new engine to run it again");
    }
    return { tvm, device, vm, params };
  }

  private get window(): number {
    return this.config.sliding_window_size > 0 ? this.config.sliding_window_size : 0;
  }

  /** Drop the conversation: a fresh KV cache holding one empty sequence. */
  reset(): void {
    const { tvm, vm } = this.live();
    tvm.beginScope();
    this.kv?.dispose();
    const window = this.window;
    const create = vm.getFunction("create_tir_paged_kv_cache");
    const shape = (n: number) => tvm.makeShapeTuple([n]);
    this.kv = tvm.detachFromCurrentScope(create(shape(1), shape(this.config.context_window_size),
      shape(this.config.prefill_chunk_size), shape(PAGE_SIZE), shape(window ? 1 : 0)) as TvmDisposable);
    tvm.getGlobalFunc("vm.builtin.kv_state_add_sequence")(this.kv, tvm.scalar(0, "int64"));
    if (window) {
      // The cache attends over what it holds plus the new token: hold W - 1 tokens.
      tvm.getGlobalFunc("vm.builtin.attention_kv_cache_enable_sliding_window_for_seq")(
        this.kv, tvm.scalar(0, "int64"), tvm.scalar(window - 1, "int32"), tvm.scalar(0, "int32"));
    }
    tvm.endScope();
    this.length = 0;
  }

  /**
   * Drop the last `n` tokens from the KV cache (to reuse a shared prefix). Not possible once a
   * sliding window has evicted tokens: then the caller resets instead.
   */
  canRollBack(n: number): boolean {
    return n <= this.length && (!this.window || this.length < this.window);
  }

  rollBack(n: number): void {
    if (n === 0) return;
    if (!this.canRollBack(n)) throw new Error(`cannot roll back ${n} of ${this.length} tokens`);
    const { tvm } = this.live();
    tvm.beginScope();
    try {
      tvm.getGlobalFunc("vm.builtin.kv_state_popn")(this.kv, tvm.scalar(0, "int64"), tvm.scalar(n, "int32"));
    } finally {
      tvm.endScope();
    }
    this.length -= n;
  }

  /**
   * The longest prefill chunk that is exact now. Attention inside a chunk is causal over the whole
   * chunk, so with a sliding window W the cached tokens plus the chunk must stay within W.
   */
  chunkLimit(): number {
    const chunk = this.config.prefill_chunk_size;
    const window = this.window;
    if (!window) return chunk;
    const cached = Math.min(this.length, window - 1);
    return Math.max(1, Math.min(chunk, window - cached));
  }

  /** Append `ids` to the sequence; returns the logits after the last one. */
  async prefill(ids: number[]): Promise<Float32Array> {
    return this.run(ids, (logits) => this.readLogits(logits));
  }

  async decode(id: number): Promise<Float32Array> {
    return this.prefill([id]);
  }

  /**
   * prefill(ids), but returns the next token, picked on the device as `draw` says (see
   * device_sampler.ts): one token id is read back instead of the logits. Needs samplesOnDevice.
   */
  async prefillAndSample(ids: number[], draw: DeviceDraw): Promise<number> {
    if (!this.samplesOnDevice) throw new Error(`this model cannot sample on the device (${this.backend} backend)`);
    return this.run(ids, (logits) => this.readDeviceToken(logits, draw));
  }

  async decodeAndSample(id: number, draw: DeviceDraw): Promise<number> {
    return this.prefillAndSample([id], draw);
  }

  /**
   * Runs `ids` through the model in chunks of at most chunkLimit() tokens and returns what `read`
   * makes of the last chunk's logits (a device tensor, valid during the call).
   */
  private async run<T>(ids: number[], read: (logits: TvmTensor) => Promise<T>): Promise<T> {
    if (ids.length === 0) throw new Error("prefill needs at least one token");
    if (this.length + ids.length > this.config.context_window_size && !this.window) {
      throw new Error(
        `the conversation needs ${this.length + ids.length} tokens but the context window holds ` +
        `${this.config.context_window_size}; start a new chat or shorten the prompt`);
    }
    const { tvm, device } = this.live();
    for (let start = 0; ;) {
      const chunk = ids.slice(start, start + this.chunkLimit());
      start += chunk.length;
      const last = start === ids.length;
      tvm.beginScope();
      try {
        const logits = this.forward(chunk);
        // Only the last chunk's logits are read; the others' passes are waited for.
        const result = last ? await read(logits) : await device.sync();
        this.length += chunk.length;
        if (last) return result as T;
      } finally {
        tvm.endScope();
      }
    }
  }

  /** One forward pass (`decode` for a single token, `prefill` for more): the logits of its last
   *  token, float32 [1, 1, V] on the device, in the caller's scope. */
  private forward(ids: number[]): TvmTensor {
    const { tvm, device, vm, params } = this.live();
    const hidden = this.config.model_config.hidden_size;
    const idsHost = tvm.empty([ids.length], "int32", tvm.cpu()).copyFrom(Int32Array.from(ids));
    const idsDev = tvm.empty([ids.length], "int32", device).copyFrom(idsHost);
    const embed = vm.getFunction("embed")(idsDev, params) as TvmTensor;
    const input = embed.view([1, ids.length, hidden]);
    tvm.getGlobalFunc("vm.builtin.kv_state_begin_forward")(
      this.kv, tvm.makeShapeTuple([0]), tvm.makeShapeTuple([ids.length]));
    const out = vm.getFunction(ids.length === 1 ? "decode" : "prefill")(input, this.kv, params) as TvmArray;
    tvm.getGlobalFunc("vm.builtin.kv_state_end_forward")(this.kv);
    return out.get(0);
  }

  private async readLogits(logits: TvmTensor): Promise<Float32Array> {
    const host = Float32Array.from(await this.copyToHost(logits) as Float32Array);
    this.copied.logits++;
    this.copied.bytes += host.byteLength;
    return host;
  }

  private async readDeviceToken(logits: TvmTensor, draw: DeviceDraw): Promise<number> {
    const { tvm, device, vm } = this.live();
    const token = (await this.copyToHost(sampleOnDevice(tvm, device, vm, logits, draw)))[0];
    this.copied.deviceTokens++;
    this.copied.bytes += Int32Array.BYTES_PER_ELEMENT;
    return token;
  }

  /** The values of `tensor`, once the device has run everything queued before the copy. */
  private async copyToHost(tensor: TvmTensor): Promise<ArrayLike<number>> {
    const { tvm, device } = this.live();
    const host = tvm.empty(tensor.shape, tensor.dtype, tvm.cpu()).copyFrom(tensor);
    await device.sync();
    return host.toArray();
  }

  /** Whether dispose() has run. */
  get disposed(): boolean {
    return this.tvm === null;
  }

  /**
   * Frees everything the model holds: the KV cache, weights, VM and tvmjs instance (with its
   * WebAssembly memory), and destroys the GPU device. Safe to call twice.
   */
  dispose(): void {
    const { tvm, kv, params, vm, gpuDevice, pool } = this;
    if (tvm === null) return;
    this.tvm = this.device = this.vm = this.params = this.kv = this.gpuDevice = this.pool = null;
    this.length = 0;
    try {
      pool?.dispose();
      kv?.dispose();
      params?.dispose();
      vm?.dispose();
      tvm.dispose();
    } finally {
      gpuDevice?.destroy?.();
    }
  }
}
