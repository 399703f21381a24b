"""Loop kernels of kiln's sampling functions (the contract is in sampling_kernels.py): the CPU
kernels (WASM, native LLVM) of softmax, argsort, top-p sampling and argmax, and the three
element-wise in-place kernels of both targets, which WebGPU runs split across workgroups."""

from __future__ import annotations

# A temperature at or below this is greedy decoding (WebLLM sends 1e-6 for temperature 0).
GREEDY_TEMPERATURE = 1e-5
# GPU launch shape: WebGPU guarantees 256 invocations per workgroup (SwiftShader allows no more).
THREADS = 256


# CPU kernels (WASM and native LLVM) of the same three functions and of kiln's argmax, as plain
# loops. The argsort calls the runtime's stable sort (`tvm.contrib.sort.argsort`, part of TVM's
# wasm runtime too).


def cpu_kernels() -> dict:
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

    @T.prim_func(private=True, s_tir=True)
    def argmax(var_logits: T.handle, var_out: T.handle):
        T.func_attr({"tirx.noalias": True})
        batch, vocab = T.int32(), T.int32()
        logits = T.match_buffer(var_logits, (batch, 1, vocab), "float32")
        out = T.match_buffer(var_out, (batch,), "int32")
        for row in T.serial(batch):
            with T.sblock("argmax"):
                T.reads()
                T.writes()
                best = T.sblock_alloc_buffer((1,), "float32")
                best_at = T.sblock_alloc_buffer((1,), "int32")
                best[0] = LOWEST
                best_at[0] = vocab  # none yet: the first position is taken whatever its value
                for i in T.serial(vocab):
                    if logits[row, 0, i] > best[0] or best_at[0] == vocab:  # strict: first maximum
                        best[0] = logits[row, 0, i]
                        best_at[0] = i
                out[row] = best_at[0]

    return {
        "softmax_with_temperature": softmax_with_temperature,
        "argsort_probs": argsort_probs,
        "sample_with_top_p": sample_with_top_p,
        "argmax": argmax,
    }


# --------------------------------------------------------------------------------------------
# In-place kernels, written once as plain loops: one iteration per token (or per vocabulary
# entry), independent of the others. The CPU targets run the loops as written; for WebGPU,
# _split_across_workgroups binds the innermost loop to workgroups of THREADS invocations.


def inplace_kernels(gpu: bool) -> dict:
    from tvm.script import tirx as T

    LOWEST = lowest_float32()

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


def lowest_float32():
    """The lowest float32, from its bits: WGSL prints T.min_value as a decimal one ulp short."""
    from tvm.script import tirx as T

    return T.reinterpret("float32", T.int32(-8388609))  # 0xFF7FFFFF
