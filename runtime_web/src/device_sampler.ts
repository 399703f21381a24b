// Sampling on the WebGPU device with the sampling functions in every kiln bundle's library (their
// contract is in compiler/webllm/sampling_kernels.py): a greedy token is kiln_argmax of the
// logits, with no sort; a temperature/top-p token is softmax_with_temperature -> argsort_probs ->
// sample_with_top_p, drawn with the uniform number the CPU sampler would have used
// (Sampler.deviceDraw), so that both pick the same token. One token id (4 bytes) comes back to
// JavaScript instead of the logits. What these functions do not cover (logit bias, penalties,
// top-k) stays with the CPU sampler (sampler.ts).

import type { DeviceDraw } from "./sampler";
import type { TvmArray, TvmDevice, TvmInstance, TvmTensor, TvmVirtualMachine } from "./tvmjs_types";

/** kiln's greedy function; ARGMAX_FUNCTION in compiler/webllm/sampling_kernels.py. */
export const ARGMAX_FUNCTION = "kiln_argmax";
/** Every function sampleOnDevice calls. */
export const DEVICE_SAMPLING_FUNCTIONS: readonly string[] =
  [ARGMAX_FUNCTION, "softmax_with_temperature", "argsort_probs", "sample_with_top_p"];

/** The largest float32 below 1: sample_with_top_p takes its uniform number as a float32 in [0, 1). */
const MAX_UNIFORM_F32 = 1 - 2 ** -24;

/**
 * Whether `vm` has every function sampleOnDevice calls. A bundle built before kiln_argmax existed
 * lacks it; its model then samples on the CPU. Call it inside a tvmjs scope.
 */
export function hasDeviceSampling(vm: Pick<TvmVirtualMachine, "getFunction">): boolean {
  return DEVICE_SAMPLING_FUNCTIONS.every((name) => {
    try {
      return typeof vm.getFunction(name) === "function";
    } catch {
      return false; // the runtime throws for a name its module lacks
    }
  });
}

/**
 * The token `draw` picks from `logits` (float32 [1, 1, V] on the device): an int32 [1] tensor on
 * the device, made in the caller's tvmjs scope. Only the draw's few numbers are uploaded.
 */
export function sampleOnDevice(tvm: Pick<TvmInstance, "empty">, device: TvmDevice,
                               vm: Pick<TvmVirtualMachine, "getFunction">, logits: TvmTensor, draw: DeviceDraw): TvmTensor {
  if (draw.greedy) return vm.getFunction(ARGMAX_FUNCTION)(logits) as TvmTensor;
  const scalar = (value: number, dtype: "float32" | "int32") => tvm.empty([1], dtype, device).copyFrom([value]);
  const vocab = logits.shape[logits.shape.length - 1];
  const probs = vm.getFunction("softmax_with_temperature")(logits, scalar(draw.temperature, "float32")) as TvmTensor;
  const sorted = vm.getFunction("argsort_probs")(probs.view([1, vocab])) as TvmArray;
  // Rounding the draw's double to float32 moves it by at most 2^-25, far below the float32
  // rounding of the probabilities it is compared with; the clamp keeps it below 1. (The softmax
  // treats a temperature <= 1e-5 as greedy; the CPU sampler draws at it, which can differ only
  // between logits within ~1e-4 of the largest.)
  const uniform = Math.min(Math.fround(draw.uniform), MAX_UNIFORM_F32);
  return vm.getFunction("sample_with_top_p")(sorted.get(0), sorted.get(1), scalar(uniform, "float32"),
                                              scalar(0, "int32"), scalar(draw.topP, "float32")) as TvmTensor;
}
