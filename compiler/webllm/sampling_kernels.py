"""The sampling functions WebLLM calls on a model library's Relax VM, and kiln's own greedy argmax,
added to a model IRModule.

WebLLM 0.2.86 (`LLMChatPipeline`) looks these six functions up with `vm.getFunction` when it loads
a model and calls them for every generated token, greedy decoding included. The contract below was
read from its compiled `lib/index.js` (`sampleFromRawLogits`); every tensor lives on the WebGPU
device, every shape is dynamic (WebLLM passes `logits.view([...])` of the model's output), and
`V` is `mlc-chat-config.json`'s `vocab_size`:

  softmax_with_temperature(logits f32[b, 1, V], temperature f32[b]) -> probs f32[b, 1, V]
      WebLLM passes max(temperature, 1e-6); a temperature <= 1e-5 means greedy, so the result is
      then one-hot at the first maximal logit (the token `transformers` picks greedily).
  argsort_probs(probs f32[b, V]) -> (sorted_probs f32[b, V], sorted_indices i32[b, V])
      descending; ties keep ascending token order (a stable sort).
  sample_with_top_p(sorted_probs f32[b, V], sorted_indices i32[b, V], uniform_samples f32[n],
                    sample_indices i32[n], top_p f32[b]) -> i32[n]
      sample i draws from row r = sample_indices[i] with u = uniform_samples[i] in [0, 1): the
      nucleus is the sorted prefix up to and including the first position whose cumulative
      probability c_k reaches top_p[r] (the whole row if none does); the result is
      sorted_indices[r, j] for the first j with u < c_j / c_k.
  apply_logit_bias_inplace(logits f32[b, V], pos2seq_id i32[t], token_ids i32[t],
                           logit_bias f32[t])
      logits[pos2seq_id[i], token_ids[i]] += logit_bias[i]
  apply_penalty_inplace(logits f32[b, V], seq_ids i32[s], pos2seq_id i32[t], token_ids i32[t],
                        token_cnt i32[t], penalties f32[s, 3])
      with row = seq_ids[pos2seq_id[i]] and (presence, frequency, repetition) =
      penalties[pos2seq_id[i]]: x = logits[row, token_ids[i]] - presence - token_cnt[i] * frequency,
      then x * repetition if x < 0 else x / repetition.
  apply_bitmask_inplace(logits f32[b, V], seq_ids i32[s], bitmask i32[b, ceil(V / 32)])
      logits[seq_ids[i], v] becomes the lowest float32 where bit v % 32 of
      bitmask[seq_ids[i], v // 32] is 0.

The three `*_inplace` functions change `logits` in place (and also return it; WebLLM ignores the
return value). WebLLM calls them with b = n = s = 1; the kernels take any sizes.

One more function is kiln's own, for greedy decoding without sorting the vocabulary (kiln's
runtime calls it, runtime_web/src/device_sampler.ts; a bundle built before it existed lacks it):

  kiln_argmax(logits f32[b, 1, V]) -> i32[b]
      the first index of the largest logit of each row: torch.argmax's choice, which is what
      `transformers` and kiln's CPU sampler pick greedily.

`add_sampling_functions(mod, target)` adds all seven to a model's IRModule, already lowered to
scheduled TIR for that target, so that they survive any Relax pipeline the model compiler runs:
hand-written GPU kernels for WebGPU (grid dimensions x and y only, at most 256 threads per
workgroup), plain loops for CPU targets (WASM, native LLVM for tests). The three element-wise
`*_inplace` kernels are written once as loops; for WebGPU a schedule splits them across workgroups.
The kernels are in sampling_gpu.py (WebGPU) and sampling_loops.py (CPU, and the in-place ones).
"""

from __future__ import annotations

from kiln.errors import UnsupportedError
from kiln.webllm.sampling_gpu import gpu_kernels
from kiln.webllm.sampling_loops import cpu_kernels, inplace_kernels

# The public names WebLLM looks up, in the order the module documents them.
WEBLLM_FUNCTION_NAMES = (
    "softmax_with_temperature",
    "argsort_probs",
    "sample_with_top_p",
    "apply_logit_bias_inplace",
    "apply_penalty_inplace",
    "apply_bitmask_inplace",
)
# kiln's own greedy function (its name is also in runtime_web/src/device_sampler.ts).
ARGMAX_FUNCTION = "kiln_argmax"
FUNCTION_NAMES = (*WEBLLM_FUNCTION_NAMES, ARGMAX_FUNCTION)
# Our TIR kernels are private functions with this name prefix.
KERNEL_PREFIX = "kiln_sampling_"

# Relax `op_pattern` value kOpaque: keeps FuseOps from fusing our kernels into something else.
_OPAQUE = 8


def add_sampling_functions(mod, target="webgpu", *, vocab_size: int | None = None,
                           dtype: str = "float32"):
    """Return a copy of `mod` with the seven sampling functions added for `target`.

    `target` is "webgpu", "wasm", "llvm" or a `tvm.target.Target`; GPU kernel kinds get the
    workgroup kernels, everything else the CPU loops. `vocab_size=None` keeps the vocabulary
    dimension symbolic (WebLLM passes views of whatever the model returns); an int fixes it.
    Logits must be float32 (WebLLM hands float32 temperatures, biases and penalties to these
    functions, and MLC models return float32 logits).
    """
    functions = sampling_module(target, vocab_size=vocab_size, dtype=dtype)
    clashes = sorted(gv.name_hint for gv in functions.get_global_vars()
                     if any(gv.name_hint == other.name_hint for other in mod.get_global_vars()))
    if clashes:
        raise UnsupportedError(
            f"the model module already defines {', '.join(clashes)}; remove them before adding "
            "kiln's sampling functions."
        )
    out = mod.clone()
    out.update(functions)
    return out


def sampling_module(target="webgpu", *, vocab_size: int | None = None, dtype: str = "float32"):
    """An IRModule holding only the seven sampling functions (and their kernels) for `target`."""
    from tvm import relax, tirx

    if dtype != "float32":
        raise UnsupportedError(
            f"sampling functions for {dtype} logits are not supported; WebLLM passes float32 "
            "logits, so make the model return float32 logits."
        )
    gpu = _is_gpu_target(target)
    kernels = {**(gpu_kernels() if gpu else cpu_kernels()), **inplace_kernels(gpu)}

    batch = tirx.Var("batch_size", "int64")
    vocab = tirx.Var("vocab_size", "int64") if vocab_size is None else int(vocab_size)
    num_samples = tirx.Var("num_samples", "int64")
    num_tokens = tirx.Var("num_tokens", "int64")
    num_seqs = tirx.Var("num_seqs", "int64")

    def tensor(name, shape, dt="float32"):
        return relax.Var(name, relax.TensorType(shape, dt))

    bb = relax.BlockBuilder()
    gvs = {}
    for name, func in kernels.items():
        func = func.with_attr("tirx.is_scheduled", True).with_attr("op_pattern", _OPAQUE)
        gvs[name] = bb.add_func(func, KERNEL_PREFIX + name)

    logits3 = tensor("logits", (batch, 1, vocab))
    temperature = tensor("temperature", (batch,))
    with bb.function("softmax_with_temperature", [logits3, temperature]):
        probs = bb.emit(relax.call_tir(gvs["softmax_with_temperature"], [logits3, temperature],
                                       out_ty=relax.TensorType((batch, 1, vocab), "float32")))
        bb.emit_func_output(probs)

    probs2 = tensor("probs", (batch, vocab))
    with bb.function("argsort_probs", [probs2]):
        result = bb.emit(relax.call_tir(
            gvs["argsort_probs"], [probs2],
            out_ty=[relax.TensorType((batch, vocab), "float32"),
                    relax.TensorType((batch, vocab), "int32")]))
        bb.emit_func_output(result)

    sorted_probs = tensor("sorted_probs", (batch, vocab))
    sorted_indices = tensor("sorted_indices", (batch, vocab), "int32")
    uniform_samples = tensor("uniform_samples", (num_samples,))
    sample_indices = tensor("sample_indices", (num_samples,), "int32")
    top_p = tensor("top_p", (batch,))
    params = [sorted_probs, sorted_indices, uniform_samples, sample_indices, top_p]
    with bb.function("sample_with_top_p", params):
        tokens = bb.emit(relax.call_tir(gvs["sample_with_top_p"], params,
                                        out_ty=relax.TensorType((num_samples,), "int32")))
        bb.emit_func_output(tokens)

    def inplace(name, params):
        with bb.function(name, params):
            out = bb.emit(relax.call_tir_inplace(gvs[name], params, inplace_indices=[0],
                                                 out_ty=params[0].ty))
            bb.emit_func_output(out)

    logits2 = tensor("logits", (batch, vocab))
    inplace("apply_logit_bias_inplace", [
        logits2, tensor("pos2seq_id", (num_tokens,), "int32"),
        tensor("token_ids", (num_tokens,), "int32"), tensor("logit_bias", (num_tokens,))])
    logits2 = tensor("logits", (batch, vocab))
    inplace("apply_penalty_inplace", [
        logits2, tensor("seq_ids", (num_seqs,), "int32"),
        tensor("pos2seq_id", (num_tokens,), "int32"), tensor("token_ids", (num_tokens,), "int32"),
        tensor("token_cnt", (num_tokens,), "int32"), tensor("penalties", (num_seqs, 3))])
    logits2 = tensor("logits", (batch, vocab))
    inplace("apply_bitmask_inplace", [
        logits2, tensor("seq_ids", (num_seqs,), "int32"),
        tensor("bitmask", (batch, (vocab + 31) // 32), "int32")])

    logits3 = tensor("logits", (batch, 1, vocab))
    with bb.function(ARGMAX_FUNCTION, [logits3]):
        tokens = bb.emit(relax.call_tir(gvs["argmax"], [logits3],
                                        out_ty=relax.TensorType((batch,), "int32")))
        bb.emit_func_output(tokens)
    return bb.get()


def _is_gpu_target(target) -> bool:
    import tvm

    if isinstance(target, str):
        if target == "webgpu":
            return True
        if target in ("wasm", "llvm"):
            return False
        target = tvm.target.Target(target)
    return "gpu" in target.keys
