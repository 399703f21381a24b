// WebGPU pipelines at load. tvmjs can compile every shader of a library (asyncLoadWebGPUPipelines),
// but a kiln library carries kernels a chat never or rarely calls: the KV cache's tree-attention,
// MLA, debug and compaction kernels, the sliding-window variants of a model without a window, and
// the GPU sampling kernels other than the ones a plain reply uses (argsort alone is dozens of
// shaders), and the attention over cached pages with its merge, which only a prefill onto earlier
// tokens calls (a follow-up turn, or a prompt longer than a prefill chunk); kiln's prefill
// attention kernels are large (its ragged one alone took 2.3-2.5 s to compile on SwiftShader, the
// paged one is its size). Those are "deferred": the kernels a first
// reply calls are compiled first, all at once
// (createComputePipelineAsync), and the model is ready when they are; the deferred ones compile
// after that in the background. A deferred kernel called before its pipeline is ready is compiled
// on the spot by tvmjs, so the split only moves time, it never changes what runs.

import type { TvmDisposable, TvmInstance } from "./tvmjs_types";

interface ShaderInfo {
  name: string;
}

/** The tvmjs internals used here: the library module's shader table and the WebGPU context. */
interface ShaderModule {
  getFunction(name: string, queryImports?: boolean): (...args: unknown[]) => unknown;
}
interface WebGpuContext {
  createShaderAsync(info: ShaderInfo, code: string): Promise<unknown>;
}

/** Kernels (by device-function name) whose pipelines may wait until after load. */
export function deferredKernel(name: string, slidingWindow: boolean): boolean {
  if (/tree_attn|_mla|debug_get_kv|compact_kv_copy|copy_single_page|prefill_paged_kv|merge_state/.test(name)) return true;
  if (!slidingWindow && name.includes("sliding_window")) return true;
  // GPU sampling: the greedy and top-p paths' first kernels stay; the sort and the logit edits wait.
  return name.startsWith("kiln_sampling_") && !/argmax|softmax_with_temperature/.test(name);
}

export interface PipelineLoad {
  /** Pipelines compiled before the model was ready, and those left to the background. */
  compiled: number;
  deferred: number;
  /** Resolves when the deferred pipelines are compiled too (never rejects). */
  background: Promise<void>;
}

/**
 * Compile the pipelines of `module` (the VM's internal module), the needed ones before resolving.
 * `onProgress(done, total)` counts the needed ones.
 */
export async function compilePipelines(tvm: TvmInstance, module: unknown, slidingWindow: boolean,
                                       onProgress?: (done: number, total: number) => void): Promise<PipelineLoad> {
  const mod = module as ShaderModule;
  const context = (tvm as unknown as { lib: { webGPUContext?: WebGpuContext } }).lib.webGPUContext;
  if (!context) throw new Error("WebGPU is not initialised in this tvmjs instance");
  tvm.beginScope();
  const table = JSON.parse(mod.getFunction("webgpu.get_fmap", true)() as string) as Record<string, ShaderInfo>;
  const shaderOf = tvm.detachFromCurrentScope(mod.getFunction("webgpu.get_shader"));
  const install = tvm.detachFromCurrentScope(mod.getFunction("webgpu.update_prebuild"));
  tvm.endScope();
  const compile = async (name: string) => {
    const pipeline = await context.createShaderAsync(table[name], shaderOf(name) as string);
    tvm.beginScope();
    install(name, pipeline);
    tvm.endScope();
  };
  const names = Object.keys(table);
  const needed = names.filter((n) => !deferredKernel(n, slidingWindow));
  const later = names.filter((n) => deferredKernel(n, slidingWindow));
  let done = 0;
  onProgress?.(0, needed.length);
  await Promise.all(needed.map((n) => compile(n).then(() => onProgress?.(++done, needed.length))));
  const release = () => {
    for (const f of [shaderOf, install]) {
      try {
        (f as unknown as TvmDisposable).dispose();
      } catch {
        // The instance was disposed with the model first: nothing is left to free.
      }
    }
  };
  // One at a time: the first replies run meanwhile. A failure here only means tvmjs compiles
  // that kernel when it is first called, as it would without any of this.
  const background = later.reduce((chain, n) => chain.then(() => compile(n)).catch(() => {}), Promise.resolve())
    .then(release);
  return { compiled: needed.length, deferred: later.length, background };
}
