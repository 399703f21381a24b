// The parts of tvmjs (TVM's web runtime, built by scripts/build_tvmjs.py) that kiln's runtime
// calls, typed structurally: tvmjs ships without declarations in kiln's build, and a page may pass
// a tvmjs build of its own (EngineOptions.tvmjs).

/** A packed function: arguments and result are tvmjs objects (tensors, shapes, scalars, modules). */
export type PackedFunc = (...args: unknown[]) => unknown;

export interface TvmDisposable {
  dispose(): void;
}

export interface TvmDevice {
  /** Waits until the device has run everything queued on it. */
  sync(): Promise<void>;
}

export interface TvmTensor extends TvmDisposable {
  readonly shape: number[];
  readonly dtype: string;
  copyFrom(data: TvmTensor | ArrayLike<number>): TvmTensor;
  copyFromRawBytes(bytes: Uint8Array): TvmTensor;
  view(shape: number[]): TvmTensor;
  toArray(): ArrayLike<number>;
}

/** A tuple of tvmjs objects (what a Relax function with several outputs returns). */
export interface TvmArray extends TvmDisposable {
  get(index: number): TvmTensor;
}

export interface TvmVirtualMachine extends TvmDisposable {
  getFunction(name: string): PackedFunc;
  getInternalModule(): unknown;
}

/** One instance of the runtime: its WebAssembly memory, devices and object scopes. */
export interface TvmInstance extends TvmDisposable {
  cpu(): TvmDevice;
  webgpu(): TvmDevice;
  initWebGPU(device: unknown): void;
  beginScope(): void;
  endScope(): void;
  detachFromCurrentScope<T>(obj: T): T;
  createVirtualMachine(device: TvmDevice): TvmVirtualMachine;
  asyncLoadWebGPUPipelines(module: unknown): Promise<void>;
  empty(shape: number[], dtype: string, device: TvmDevice): TvmTensor;
  tensorCacheUpdate(name: string, tensor: TvmTensor, override: boolean): void;
  getParamsFromCacheByName(names: string[]): TvmDisposable;
  makeShapeTuple(shape: number[]): unknown;
  scalar(value: number, dtype: string): unknown;
  getGlobalFunc(name: string): PackedFunc;
}

/** The GPU tvmjs picks: a GPUDevice and what the adapter says about itself. */
export interface TvmGpuDetection {
  device: unknown;
  adapterInfo?: { vendor?: string };
}

/** The tvmjs module (`import * as tvmjs`). */
export interface TvmjsModule {
  createPolyfillWASI(): unknown;
  instantiate(library: ArrayBuffer | Uint8Array, wasi: unknown, logger: (msg: string) => void): Promise<TvmInstance>;
  detectGPUDevice(): Promise<TvmGpuDetection | undefined>;
}
