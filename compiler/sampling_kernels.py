"""The sampling functions WebLLM calls on a model library's Relax VM, added to a model IRModule.

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

`add_sampling_functions(mod, target)` adds them to a model's IRModule, already lowered to
scheduled TIR for that target, so that they survive any Relax pipeline the model compiler runs:
hand-written GPU kernels for WebGPU (grid dimensions x and y only, at most 256 threads per
workgroup), plain loops for CPU targets (WASM, native LLVM for tests). The three element-wise
`*_inplace` kernels are written once as loops; for WebGPU a schedule splits them across workgroups.
"""

from __future__ import annotations

from .errors import UnsupportedError

# The public names WebLLM looks up, in the order the module documents them.
FUNCTION_NAMES = (
    "softmax_with_temperature",
    "argsort_probs",
    "sample_with_top_p",
    "apply_logit_bias_inplace",
    "apply_penalty_inplace",
    "apply_bitmask_inplace",
)
# Our TIR kernels are private functions with this name prefix.
KERNEL_PREFIX = "kiln_sampling_"

# A temperature at or below this is greedy decoding (WebLLM sends 1e-6 for temperature 0).
GREEDY_TEMPERATURE = 1e-5

# GPU launch shape: WebGPU guarantees 256 invocations per workgroup (SwiftShader allows no more).
THREADS = 256
LOG_THREADS = 8
# The bitonic argsort sorts blocks of this many elements in workgroup memory (8 KiB of keys and
# indices), then merges with one global pass per remaining stride.
SORT_BLOCK = 1024
LOG_SORT_BLOCK = 10

# Relax `op_pattern` value kOpaque: keeps FuseOps from fusing our kernels into something else.
_OPAQUE = 8


def add_sampling_functions(mod, target="webgpu", *, vocab_size: int | None = None,
                           dtype: str = "float32"):
    """Return a copy of `mod` with WebLLM's six sampling functions added for `target`.

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
    """An IRModule holding only the six sampling functions (and their kernels) for `target`."""
    from tvm import relax, tirx

    if dtype != "float32":
        raise UnsupportedError(
            f"sampling functions for {dtype} logits are not supported; WebLLM passes float32 "
            "logits, so make the model return float32 logits."
        )
    gpu = _is_gpu_target(target)
    kernels = {**(_gpu_kernels() if gpu else _cpu_kernels()), **_inplace_kernels(gpu)}

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


# --------------------------------------------------------------------------------------------
# WebGPU kernels of softmax, argsort and top-p sampling (workgroup reductions and a bitonic
# sort, unlike their CPU loops). Every index is int32 (WGSL has no 64-bit integers); launches use
# blockIdx.x/y and threadIdx.x only.


def _gpu_kernels() -> dict:
    from tvm.script import tirx as T

    TX = THREADS
    L = SORT_BLOCK
    LOG_L = LOG_SORT_BLOCK
    LOWEST = _lowest_float32()
    NO_INDEX = 2147483647  # index of the padding elements of a partial sort block: sorts last

    @T.prim_func(private=True, s_tir=True)
    def softmax_with_temperature(var_logits: T.handle, var_temperature: T.handle,
                                 var_probs: T.handle):
        T.func_attr({"tirx.noalias": True})
        batch, vocab = T.int32(), T.int32()
        logits = T.match_buffer(var_logits, (batch, 1, vocab), "float32")
        temperature = T.match_buffer(var_temperature, (batch,), "float32")
        probs = T.match_buffer(var_probs, (batch, 1, vocab), "float32")
        # One workgroup per row: max (and first argmax), then the sum of exponentials, then write.
        # Each thread reduces a strided slice; thread 0 combines the TX partial results in order.
        for row in T.thread_binding(batch, thread="blockIdx.x"):
            for tx in T.thread_binding(TX, thread="threadIdx.x"):
                with T.sblock("softmax"):
                    T.reads()
                    T.writes()
                    part_max = T.sblock_alloc_buffer((TX,), "float32", scope="shared")
                    part_arg = T.sblock_alloc_buffer((TX,), "int32", scope="shared")
                    part_sum = T.sblock_alloc_buffer((TX,), "float32", scope="shared")
                    row_max = T.sblock_alloc_buffer((1,), "float32", scope="shared")
                    row_arg = T.sblock_alloc_buffer((1,), "int32", scope="shared")
                    row_sum = T.sblock_alloc_buffer((1,), "float32", scope="shared")
                    best = T.sblock_alloc_buffer((1,), "float32", scope="local")
                    best_at = T.sblock_alloc_buffer((1,), "int32", scope="local")
                    total = T.sblock_alloc_buffer((1,), "float32", scope="local")
                    temp: T.let[T.float32] = temperature[row]
                    best[0] = LOWEST
                    best_at[0] = vocab
                    for k in T.serial(T.ceildiv(vocab, TX)):
                        i: T.let[T.int32] = k * TX + tx
                        if i < vocab:
                            if logits[row, 0, i] > best[0] or best_at[0] == vocab:
                                best[0] = logits[row, 0, i]
                                best_at[0] = i
                    part_max[tx] = best[0]
                    part_arg[tx] = best_at[0]
                    T.tvm_storage_sync("shared")
                    if tx == 0:
                        for t in T.serial(TX):
                            value: T.let[T.float32] = part_max[t]
                            at: T.let[T.int32] = part_arg[t]
                            # Larger value wins; on a tie the smaller index (the first maximum).
                            if at < vocab and (value > best[0] or best_at[0] == vocab
                                               or (value == best[0] and at < best_at[0])):
                                best[0] = value
                                best_at[0] = at
                        row_max[0] = best[0]
                        row_arg[0] = best_at[0]
                    T.tvm_storage_sync("shared")
                    top: T.let[T.float32] = row_max[0]
                    top_at: T.let[T.int32] = row_arg[0]
                    total[0] = T.float32(0)
                    if temp > T.float32(GREEDY_TEMPERATURE):
                        for k in T.serial(T.ceildiv(vocab, TX)):
                            i: T.let[T.int32] = k * TX + tx
                            if i < vocab:
                                total[0] += T.exp((logits[row, 0, i] - top) / temp)
                    part_sum[tx] = total[0]
                    T.tvm_storage_sync("shared")
                    if tx == 0:
                        total[0] = T.float32(0)
                        for t in T.serial(TX):
                            total[0] += part_sum[t]
                        row_sum[0] = total[0]
                    T.tvm_storage_sync("shared")
                    norm: T.let[T.float32] = row_sum[0]
                    for k in T.serial(T.ceildiv(vocab, TX)):
                        i: T.let[T.int32] = k * TX + tx
                        if i < vocab:
                            if temp > T.float32(GREEDY_TEMPERATURE):
                                probs[row, 0, i] = T.exp((logits[row, 0, i] - top) / temp) / norm
                            else:
                                probs[row, 0, i] = T.Select(i == top_at, T.float32(1),
                                                            T.float32(0))

    @T.macro
    def compare_swap(keys, ids, row, lo, hi):
        # One comparator of a global step: element `lo` must come first (larger probability, or
        # equal probability and lower index). T.Or is spelled out because a macro sees `T` only
        # through names its body evaluates.
        key_lo: T.let[T.float32] = keys[row, lo]
        key_hi: T.let[T.float32] = keys[row, hi]
        id_lo: T.let[T.int32] = ids[row, lo]
        id_hi: T.let[T.int32] = ids[row, hi]
        if T.Or(key_hi > key_lo, key_hi == key_lo and id_hi < id_lo):
            keys[row, lo] = key_hi
            ids[row, lo] = id_hi
            keys[row, hi] = key_lo
            ids[row, hi] = id_lo

    @T.macro
    def sort_block(sorted_probs, sorted_indices, vocab, row, blk, tx, keys, ids, first_stage):
        # Load block `blk` of L elements into workgroup memory, run bitonic stages on it and
        # write it back. first_stage == 1 sorts the block (stages 1..LOG_L; stage s is one flip
        # step of width 2^s, then half-cleaners of strides 2^(s-2)..1); first_stage == LOG_L
        # runs only half-cleaners of strides L/2..1 (the tail of a global stage). Padding beyond
        # `vocab` sorts last and is never stored. Every step reads its pairs, waits for the
        # workgroup, then writes: TVM's barrier planner needs that shape.
        swap_lo = T.sblock_alloc_buffer((L // 2 // TX,), "float32", scope="local")
        swap_hi = T.sblock_alloc_buffer((L // 2 // TX,), "float32", scope="local")
        swap_id_lo = T.sblock_alloc_buffer((L // 2 // TX,), "int32", scope="local")
        swap_id_hi = T.sblock_alloc_buffer((L // 2 // TX,), "int32", scope="local")
        for e in T.serial(L // TX):
            p: T.let[T.int32] = e * TX + tx
            g: T.let[T.int32] = blk * L + p
            keys[p] = T.if_then_else(g < vocab, sorted_probs[row, g], LOWEST)
            ids[p] = T.if_then_else(g < vocab, sorted_indices[row, g], NO_INDEX)
        T.tvm_storage_sync("shared")
        for s0 in T.serial(LOG_L + 1 - first_stage):
            stage: T.let[T.int32] = first_stage + s0
            for step in T.serial(stage):
                # Step 0 of a sorting stage is the flip on bit stage-1; the other steps are
                # half-cleaners on bit stage-1-step.
                bit: T.let[T.int32] = stage - 1 - step
                flip: T.let[T.bool] = step == 0 and first_stage == 1
                for e in T.serial(L // 2 // TX):
                    c: T.let[T.int32] = e * TX + tx
                    lo: T.let[T.int32] = T.shift_left(T.shift_right(c, bit), bit + 1) + T.bitwise_and(
                        c, T.shift_left(1, bit) - 1)
                    hi: T.let[T.int32] = T.Select(flip, T.bitwise_xor(lo, T.shift_left(2, bit) - 1),
                                                  lo + T.shift_left(1, bit))
                    key_lo: T.let[T.float32] = keys[lo]
                    key_hi: T.let[T.float32] = keys[hi]
                    id_lo: T.let[T.int32] = ids[lo]
                    id_hi: T.let[T.int32] = ids[hi]
                    # `hi` goes first if it has the larger probability, or the same and a lower index.
                    swap: T.let[T.bool] = T.Or(key_hi > key_lo, key_hi == key_lo and id_hi < id_lo)
                    swap_lo[e] = T.Select(swap, key_hi, key_lo)
                    swap_hi[e] = T.Select(swap, key_lo, key_hi)
                    swap_id_lo[e] = T.Select(swap, id_hi, id_lo)
                    swap_id_hi[e] = T.Select(swap, id_lo, id_hi)
                T.tvm_storage_sync("shared")
                for e in T.serial(L // 2 // TX):
                    c: T.let[T.int32] = e * TX + tx
                    lo: T.let[T.int32] = T.shift_left(T.shift_right(c, bit), bit + 1) + T.bitwise_and(
                        c, T.shift_left(1, bit) - 1)
                    hi: T.let[T.int32] = T.Select(flip, T.bitwise_xor(lo, T.shift_left(2, bit) - 1),
                                                  lo + T.shift_left(1, bit))
                    keys[lo] = swap_lo[e]
                    keys[hi] = swap_hi[e]
                    ids[lo] = swap_id_lo[e]
                    ids[hi] = swap_id_hi[e]
                T.tvm_storage_sync("shared")
        for e in T.serial(L // TX):
            p: T.let[T.int32] = e * TX + tx
            g: T.let[T.int32] = blk * L + p
            if g < vocab:
                sorted_probs[row, g] = keys[p]
                sorted_indices[row, g] = ids[p]

    @T.prim_func(private=True, s_tir=True)
    def argsort_probs(var_probs: T.handle, var_sorted_probs: T.handle,
                      var_sorted_indices: T.handle):
        T.func_attr({"tirx.noalias": True})
        batch, vocab = T.int32(), T.int32()
        probs = T.match_buffer(var_probs, (batch, vocab), "float32")
        sorted_probs = T.match_buffer(var_sorted_probs, (batch, vocab), "float32")
        sorted_indices = T.match_buffer(var_sorted_indices, (batch, vocab), "int32")
        # 0. Copy the probabilities and their indices into the outputs, which are sorted in place.
        for row in T.thread_binding(batch, thread="blockIdx.y"):
            for bx in T.thread_binding(T.ceildiv(vocab, TX), thread="blockIdx.x"):
                for tx in T.thread_binding(TX, thread="threadIdx.x"):
                    with T.sblock("init"):
                        T.reads()
                        T.writes()
                        if bx * TX + tx < vocab:
                            sorted_probs[row, bx * TX + tx] = probs[row, bx * TX + tx]
                            sorted_indices[row, bx * TX + tx] = bx * TX + tx
        # 1. Sort every block of L elements in workgroup memory (stages 1..LOG_L).
        for row in T.thread_binding(batch, thread="blockIdx.y"):
            for blk in T.thread_binding(T.ceildiv(vocab, L), thread="blockIdx.x"):
                for tx in T.thread_binding(TX, thread="threadIdx.x"):
                    with T.sblock("block_sort"):
                        T.reads()
                        T.writes()
                        keys = T.sblock_alloc_buffer((L,), "float32", scope="shared")
                        ids = T.sblock_alloc_buffer((L,), "int32", scope="shared")
                        sort_block(sorted_probs, sorted_indices, vocab, row, blk, tx, keys, ids, 1)
        # 2. Stages LOG_L+1.. while 2^(stage-1) < vocab: global steps for strides >= L, then the
        #    strides below L in workgroup memory. The network is that of the next power of two;
        #    positions past `vocab` hold virtual last elements, so comparators that reach them
        #    never swap and are skipped.
        for stage in T.serial(LOG_L + 1, 32):
            if T.shift_left(1, stage - 1) < vocab:
                for step in T.serial(stage - LOG_L):
                    bit: T.let[T.int32] = stage - 1 - step
                    # Comparators whose lower element lies in a block of 2^(bit+1) that starts
                    # before `vocab`.
                    pairs: T.let[T.int32] = T.shift_left(
                        T.shift_right(vocab - 1, bit + 1) + 1, bit)
                    for row in T.thread_binding(batch, thread="blockIdx.y"):
                        for bx in T.thread_binding(T.ceildiv(pairs, TX), thread="blockIdx.x"):
                            for tx in T.thread_binding(TX, thread="threadIdx.x"):
                                with T.sblock("global_step"):
                                    T.reads()
                                    T.writes()
                                    c: T.let[T.int32] = bx * TX + tx
                                    lo: T.let[T.int32] = T.shift_left(
                                        T.shift_right(c, bit), bit + 1) + T.bitwise_and(
                                        c, T.shift_left(1, bit) - 1)
                                    hi: T.let[T.int32] = T.Select(
                                        step == 0,
                                        T.bitwise_xor(lo, T.shift_left(2, bit) - 1),
                                        lo + T.shift_left(1, bit))
                                    if c < pairs and hi < vocab:
                                        compare_swap(sorted_probs, sorted_indices, row, lo, hi)
                for row in T.thread_binding(batch, thread="blockIdx.y"):
                    for blk in T.thread_binding(T.ceildiv(vocab, L), thread="blockIdx.x"):
                        for tx in T.thread_binding(TX, thread="threadIdx.x"):
                            with T.sblock("block_merge"):
                                T.reads()
                                T.writes()
                                keys = T.sblock_alloc_buffer((L,), "float32", scope="shared")
                                ids = T.sblock_alloc_buffer((L,), "int32", scope="shared")
                                sort_block(sorted_probs, sorted_indices, vocab, row, blk, tx,
                                           keys, ids, LOG_L)

    @T.prim_func(private=True, s_tir=True)
    def sample_with_top_p(var_sorted_probs: T.handle, var_sorted_indices: T.handle,
                          var_uniform: T.handle, var_sample_indices: T.handle,
                          var_top_p: T.handle, var_out: T.handle):
        T.func_attr({"tirx.noalias": True})
        batch, vocab, num_samples = T.int32(), T.int32(), T.int32()
        sorted_probs = T.match_buffer(var_sorted_probs, (batch, vocab), "float32")
        sorted_indices = T.match_buffer(var_sorted_indices, (batch, vocab), "int32")
        uniform = T.match_buffer(var_uniform, (num_samples,), "float32")
        sample_indices = T.match_buffer(var_sample_indices, (num_samples,), "int32")
        top_p = T.match_buffer(var_top_p, (batch,), "float32")
        out = T.match_buffer(var_out, (num_samples,), "int32")
        # One workgroup per sample. Thread t owns the contiguous slice [t*C, (t+1)*C) of the
        # sorted row; the cumulative probability at position j of that slice is
        # offset[t] + (running sum inside the slice), so a slice's last value is exactly the next
        # slice's offset and the sequence is monotone.
        for s in T.thread_binding(num_samples, thread="blockIdx.x"):
            for tx in T.thread_binding(TX, thread="threadIdx.x"):
                with T.sblock("sample"):
                    T.reads()
                    T.writes()
                    part = T.sblock_alloc_buffer((TX,), "float32", scope="shared")
                    offset = T.sblock_alloc_buffer((TX + 1,), "float32", scope="shared")
                    cut = T.sblock_alloc_buffer((1,), "int32", scope="shared")
                    renorm = T.sblock_alloc_buffer((1,), "float32", scope="shared")
                    chosen = T.sblock_alloc_buffer((1,), "int32", scope="shared")
                    acc = T.sblock_alloc_buffer((1,), "float32", scope="local")
                    done = T.sblock_alloc_buffer((1,), "int32", scope="local")
                    row: T.let[T.int32] = sample_indices[s]
                    p: T.let[T.float32] = top_p[row]
                    u: T.let[T.float32] = uniform[s]
                    chunk: T.let[T.int32] = T.ceildiv(vocab, TX)
                    begin: T.let[T.int32] = tx * chunk
                    acc[0] = T.float32(0)
                    for k in T.serial(chunk):
                        if begin + k < vocab:
                            acc[0] += sorted_probs[row, begin + k]
                    part[tx] = acc[0]
                    T.tvm_storage_sync("shared")
                    if tx == 0:
                        # offset[t + 1] = offset[t] + part[t], rounded exactly as each thread's
                        # own running sum ends.
                        acc[0] = T.float32(0)
                        offset[0] = T.float32(0)
                        for t in T.serial(TX):
                            acc[0] += part[t]
                            offset[t + 1] = acc[0]
                        # Defaults when no position reaches top_p: the whole row.
                        cut[0] = vocab - 1
                        renorm[0] = acc[0]
                    T.tvm_storage_sync("shared")
                    start: T.let[T.float32] = offset[tx]
                    end: T.let[T.float32] = offset[tx + 1]
                    # The nucleus ends in this slice if its first value reaching top_p is here.
                    if begin < vocab and (tx == 0 or start < p) and end >= p:
                        acc[0] = T.float32(0)
                        done[0] = 0
                        for k in T.serial(chunk):
                            if begin + k < vocab and done[0] == 0:
                                acc[0] += sorted_probs[row, begin + k]
                                if start + acc[0] >= p:
                                    cut[0] = begin + k
                                    renorm[0] = start + acc[0]
                                    done[0] = 1
                    T.tvm_storage_sync("shared")
                    total: T.let[T.float32] = renorm[0]
                    if tx == 0:
                        chosen[0] = cut[0]
                    T.tvm_storage_sync("shared")
                    # The sample is the first position j with u < c_j / c_cut.
                    if begin < vocab and (tx == 0 or not (u < start / total)) and (
                        u < end / total
                    ):
                        acc[0] = T.float32(0)
                        done[0] = 0
                        for k in T.serial(chunk):
                            if begin + k < vocab and done[0] == 0:
                                acc[0] += sorted_probs[row, begin + k]
                                if u < (start + acc[0]) / total:
                                    chosen[0] = T.min(begin + k, cut[0])
                                    done[0] = 1
                    T.tvm_storage_sync("shared")
                    if tx == 0:
                        out[s] = sorted_indices[row, chosen[0]]

    return {
        "softmax_with_temperature": softmax_with_temperature,
        "argsort_probs": argsort_probs,
        "sample_with_top_p": sample_with_top_p,
    }


# --------------------------------------------------------------------------------------------
# CPU kernels (WASM and native LLVM) of the same three functions, as plain loops. The argsort
# calls the runtime's stable sort (`tvm.contrib.sort.argsort`, part of TVM's wasm runtime too).


def _cpu_kernels() -> dict:
    from tvm.script import tirx as T

    LOWEST = T.min_value("float32")

    @T.prim_func(private=True, s_tir=True)
    def softmax_with_temperature(var_logits: T.handle, var_temperature: T.handle,
                                 var_probs: T.handle):
        T.func_attr({"tirx.noalias": True})
        batch, vocab = T.int32(), T.int32()
        logits = T.match_buffer(var_logits, (batch, 1, vocab), "float32")
        temperature = T.match_buffer(var_temperature, (batch,), "float32")
        probs = T.match_buffer(var_probs, (batch, 1, vocab), "float32")
        for row in T.serial(batch):
            with T.sblock("softmax"):
                T.reads()
                T.writes()
                best = T.sblock_alloc_buffer((1,), "float32")
                best_at = T.sblock_alloc_buffer((1,), "int32")
                total = T.sblock_alloc_buffer((1,), "float64")  # float64: 128k-term sums
                temp: T.let[T.float32] = temperature[row]
                best[0] = LOWEST
                best_at[0] = vocab
                for i in T.serial(vocab):
                    if logits[row, 0, i] > best[0] or best_at[0] == vocab:
                        best[0] = logits[row, 0, i]
                        best_at[0] = i
                total[0] = T.float64(0)
                if temp > T.float32(GREEDY_TEMPERATURE):
                    for i in T.serial(vocab):
                        total[0] += T.Cast("float64", T.exp((logits[row, 0, i] - best[0]) / temp))
                    for i in T.serial(vocab):
                        probs[row, 0, i] = T.exp((logits[row, 0, i] - best[0]) / temp) / T.Cast(
                            "float32", total[0])
                else:
                    for i in T.serial(vocab):
                        probs[row, 0, i] = T.Select(i == best_at[0], T.float32(1), T.float32(0))

    @T.prim_func(private=True, s_tir=True)
    def argsort_probs(var_probs: T.handle, var_sorted_probs: T.handle,
                      var_sorted_indices: T.handle):
        T.func_attr({"tirx.noalias": True})
        batch, vocab = T.int32(), T.int32()
        probs = T.match_buffer(var_probs, (batch, vocab), "float32")
        sorted_probs = T.match_buffer(var_sorted_probs, (batch, vocab), "float32")
        sorted_indices = T.match_buffer(var_sorted_indices, (batch, vocab), "int32")
        with T.sblock("sort"):
            T.reads()
            T.writes()
            # axis 1, descending; the runtime sort is stable, so ties keep ascending indices.
            T.evaluate(T.call_packed("tvm.contrib.sort.argsort", probs, sorted_indices, 1, False))
        for row, j in T.grid(batch, vocab):
            with T.sblock("take"):
                T.reads()
                T.writes()
                sorted_probs[row, j] = probs[row, sorted_indices[row, j]]

    @T.prim_func(private=True, s_tir=True)
    def sample_with_top_p(var_sorted_probs: T.handle, var_sorted_indices: T.handle,
                          var_uniform: T.handle, var_sample_indices: T.handle,
                          var_top_p: T.handle, var_out: T.handle):
        T.func_attr({"tirx.noalias": True})
        batch, vocab, num_samples = T.int32(), T.int32(), T.int32()
        sorted_probs = T.match_buffer(var_sorted_probs, (batch, vocab), "float32")
        sorted_indices = T.match_buffer(var_sorted_indices, (batch, vocab), "int32")
        uniform = T.match_buffer(var_uniform, (num_samples,), "float32")
        sample_indices = T.match_buffer(var_sample_indices, (num_samples,), "int32")
        top_p = T.match_buffer(var_top_p, (batch,), "float32")
        out = T.match_buffer(var_out, (num_samples,), "int32")
        for s in T.serial(num_samples):
            with T.sblock("sample"):
                T.reads()
                T.writes()
                acc = T.sblock_alloc_buffer((1,), "float64")  # float64: 128k-term sums
                cut = T.sblock_alloc_buffer((1,), "int32")
                renorm = T.sblock_alloc_buffer((1,), "float64")
                chosen = T.sblock_alloc_buffer((1,), "int32")
                row: T.let[T.int32] = sample_indices[s]
                p: T.let[T.float32] = top_p[row]
                u: T.let[T.float32] = uniform[s]
                acc[0] = T.float64(0)
                cut[0] = -1
                for k in T.serial(vocab):
                    acc[0] += T.Cast("float64", sorted_probs[row, k])
                    if cut[0] < 0 and acc[0] >= T.Cast("float64", p):
                        cut[0] = k
                        renorm[0] = acc[0]
                if cut[0] < 0:
                    cut[0] = vocab - 1
                    renorm[0] = acc[0]
                acc[0] = T.float64(0)
                chosen[0] = -1
                for k in T.serial(vocab):
                    if chosen[0] < 0 and k <= cut[0]:
                        acc[0] += T.Cast("float64", sorted_probs[row, k])
                        if T.Cast("float64", u) < acc[0] / renorm[0]:
                            chosen[0] = k
                if chosen[0] < 0:
                    chosen[0] = cut[0]
                out[s] = sorted_indices[row, chosen[0]]

    return {
        "softmax_with_temperature": softmax_with_temperature,
        "argsort_probs": argsort_probs,
        "sample_with_top_p": sample_with_top_p,
    }


# --------------------------------------------------------------------------------------------
# In-place kernels, written once as plain loops: one iteration per token (or per vocabulary
# entry), independent of the others. The CPU targets run the loops as written; for WebGPU,
# _split_across_workgroups binds the innermost loop to workgroups of THREADS invocations.


def _inplace_kernels(gpu: bool) -> dict:
    from tvm.script import tirx as T

    LOWEST = _lowest_float32()

    @T.prim_func(private=True, s_tir=True)
    def apply_logit_bias_inplace(var_logits: T.handle, var_pos2seq_id: T.handle,
                                 var_token_ids: T.handle, var_logit_bias: T.handle):
        T.func_attr({"tirx.noalias": True})
        batch, vocab, num_tokens = T.int32(), T.int32(), T.int32()
        logits = T.match_buffer(var_logits, (batch, vocab), "float32")
        pos2seq_id = T.match_buffer(var_pos2seq_id, (num_tokens,), "int32")
        token_ids = T.match_buffer(var_token_ids, (num_tokens,), "int32")
        logit_bias = T.match_buffer(var_logit_bias, (num_tokens,), "float32")
        for i in T.serial(num_tokens):
            with T.sblock("logit_bias"):
                T.reads()
                T.writes()
                logits[pos2seq_id[i], token_ids[i]] = (
                    logits[pos2seq_id[i], token_ids[i]] + logit_bias[i])

    @T.prim_func(private=True, s_tir=True)
    def apply_penalty_inplace(var_logits: T.handle, var_seq_ids: T.handle,
                              var_pos2seq_id: T.handle, var_token_ids: T.handle,
                              var_token_cnt: T.handle, var_penalties: T.handle):
        T.func_attr({"tirx.noalias": True})
        batch, vocab, num_seqs, num_tokens = T.int32(), T.int32(), T.int32(), T.int32()
        logits = T.match_buffer(var_logits, (batch, vocab), "float32")
        seq_ids = T.match_buffer(var_seq_ids, (num_seqs,), "int32")
        pos2seq_id = T.match_buffer(var_pos2seq_id, (num_tokens,), "int32")
        token_ids = T.match_buffer(var_token_ids, (num_tokens,), "int32")
        token_cnt = T.match_buffer(var_token_cnt, (num_tokens,), "int32")
        penalties = T.match_buffer(var_penalties, (num_seqs, 3), "float32")
        for i in T.serial(num_tokens):
            with T.sblock("penalty"):
                T.reads()
                T.writes()
                seq: T.let[T.int32] = pos2seq_id[i]
                row: T.let[T.int32] = seq_ids[seq]
                x: T.let[T.float32] = (logits[row, token_ids[i]] - penalties[seq, 0]
                                       - T.Cast("float32", token_cnt[i]) * penalties[seq, 1])
                logits[row, token_ids[i]] = T.Select(
                    x < T.float32(0), x * penalties[seq, 2], x / penalties[seq, 2])

    @T.prim_func(private=True, s_tir=True)
    def apply_bitmask_inplace(var_logits: T.handle, var_seq_ids: T.handle,
                              var_bitmask: T.handle):
        T.func_attr({"tirx.noalias": True})
        batch, vocab, num_seqs, words = T.int32(), T.int32(), T.int32(), T.int32()
        logits = T.match_buffer(var_logits, (batch, vocab), "float32")
        seq_ids = T.match_buffer(var_seq_ids, (num_seqs,), "int32")
        bitmask = T.match_buffer(var_bitmask, (batch, words), "int32")
        for s, v in T.grid(num_seqs, vocab):
            with T.sblock("bitmask"):
                T.reads()
                T.writes()
                if T.bitwise_and(T.shift_right(bitmask[seq_ids[s], T.shift_right(v, 5)],
                                               T.bitwise_and(v, 31)), 1) == 0:
                    logits[seq_ids[s], v] = LOWEST

    kernels = {
        "apply_logit_bias_inplace": apply_logit_bias_inplace,
        "apply_penalty_inplace": apply_penalty_inplace,
        "apply_bitmask_inplace": apply_bitmask_inplace,
    }
    if gpu:
        return {name: _split_across_workgroups(func) for name, func in kernels.items()}
    return kernels


def _split_across_workgroups(func):
    """`func` with the loops around its only block bound to a WebGPU launch: the innermost loop
    split into blockIdx.x workgroups of THREADS threadIdx.x invocations (a predicate skips the
    invocations past its end), and an outer loop, if any, bound to blockIdx.y."""
    import tvm

    sch = tvm.s_tir.Schedule(func)
    (block,) = sch.get_child_blocks(sch.get_sblock("root"))
    *outer, inner = sch.get_loops(block)
    assert len(outer) <= 1, "WebGPU kernels launch on grid dimensions x and y only"
    for loop in outer:
        sch.bind(loop, "blockIdx.y")
    bx, tx = sch.split(inner, [None, THREADS])
    sch.bind(bx, "blockIdx.x")
    sch.bind(tx, "threadIdx.x")
    return sch.mod["main"]


def _lowest_float32():
    """The lowest float32, from its bits: WGSL prints T.min_value as a decimal one ulp short."""
    from tvm.script import tirx as T

    return T.reinterpret("float32", T.int32(-8388609))  # 0xFF7FFFFF
