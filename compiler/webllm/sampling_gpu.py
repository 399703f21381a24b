"""WebGPU kernels of kiln's sampling functions (the contract is in sampling_kernels.py)."""

from __future__ import annotations

from kiln.webllm.sampling_loops import GREEDY_TEMPERATURE, THREADS, lowest_float32

# The bitonic argsort sorts blocks of this many elements in workgroup memory (8 KiB of keys and
# indices), then merges with one global pass per remaining stride.
SORT_BLOCK = 1024
LOG_SORT_BLOCK = 10


# WebGPU kernels of softmax, argsort, top-p sampling and kiln's argmax (workgroup reductions and a
# bitonic sort, unlike their CPU loops). Every index is int32 (WGSL has no 64-bit integers); launches use
# blockIdx.x/y and threadIdx.x only.


def gpu_kernels() -> dict:
    from tvm.script import tirx as T

    TX = THREADS
    LOG_TX = THREADS.bit_length() - 1
    assert THREADS == 1 << LOG_TX, "the argmax's tree reduction halves THREADS down to 1"
    L = SORT_BLOCK
    LOG_L = LOG_SORT_BLOCK
    LOWEST = lowest_float32()
    NO_INDEX = 2147483647  # index of the padding elements of a partial sort block: sorts last

    @T.macro
    def strided_max(logits, row, vocab, tx, best, best_at, part_max, part_arg):
        # Thread tx scans positions tx, tx + TX, ... in ascending order, so a strict comparison
        # keeps its first maximum; its result goes to part_max/part_arg[tx], then a barrier. Index
        # `vocab` marks a thread that saw no position (vocab < TX).
        best[0] = LOWEST
        best_at[0] = vocab
        for k in T.serial(T.ceildiv(vocab, TX)):
            i: T.let[T.int32] = k * TX + tx
            if i < vocab:
                if T.Or(logits[row, 0, i] > best[0], best_at[0] == vocab):
                    best[0] = logits[row, 0, i]
                    best_at[0] = i
        part_max[tx] = best[0]
        part_arg[tx] = best_at[0]
        T.tvm_storage_sync("shared")

    @T.macro
    def take_if_better(value, at, vocab, best, best_at):
        # A thread's candidate (value, at) replaces (best, best_at) if it is larger, or equal at a
        # smaller index (the first maximum); `at` == vocab is no candidate.
        if at < vocab and T.Or(T.Or(value > best[0], best_at[0] == vocab), value == best[0] and at < best_at[0]):
            best[0] = value
            best_at[0] = at

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
                    strided_max(logits, row, vocab, tx, best, best_at, part_max, part_arg)
                    if tx == 0:
                        for t in T.serial(TX):
                            value: T.let[T.float32] = part_max[t]
                            at: T.let[T.int32] = part_arg[t]
                            take_if_better(value, at, vocab, best, best_at)
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

    @T.prim_func(private=True, s_tir=True)
    def argmax(var_logits: T.handle, var_out: T.handle):
        T.func_attr({"tirx.noalias": True})
        batch, vocab = T.int32(), T.int32()
        logits = T.match_buffer(var_logits, (batch, 1, vocab), "float32")
        out = T.match_buffer(var_out, (batch,), "int32")
        # One workgroup per row: each thread's strided maximum, then a tree reduction halves the
        # candidates LOG_TX times.
        for row in T.thread_binding(batch, thread="blockIdx.x"):
            for tx in T.thread_binding(TX, thread="threadIdx.x"):
                with T.sblock("argmax"):
                    T.reads()
                    T.writes()
                    part_max = T.sblock_alloc_buffer((TX,), "float32", scope="shared")
                    part_arg = T.sblock_alloc_buffer((TX,), "int32", scope="shared")
                    best = T.sblock_alloc_buffer((1,), "float32", scope="local")
                    best_at = T.sblock_alloc_buffer((1,), "int32", scope="local")
                    strided_max(logits, row, vocab, tx, best, best_at, part_max, part_arg)
                    for step in T.serial(LOG_TX):
                        # Threads below `half` take in the candidate `half` places above theirs.
                        # Each step reads, waits for the workgroup, then writes (the shape TVM's
                        # barrier planner needs).
                        half: T.let[T.int32] = T.shift_right(TX, step + 1)
                        if tx < half:
                            value: T.let[T.float32] = part_max[tx + half]
                            at: T.let[T.int32] = part_arg[tx + half]
                            take_if_better(value, at, vocab, best, best_at)
                        T.tvm_storage_sync("shared")
                        if tx < half:
                            part_max[tx] = best[0]
                            part_arg[tx] = best_at[0]
                        T.tvm_storage_sync("shared")
                    if tx == 0:
                        out[row] = part_arg[0]

    return {
        "softmax_with_temperature": softmax_with_temperature,
        "argsort_probs": argsort_probs,
        "sample_with_top_p": sample_with_top_p,
        "argmax": argmax,
    }
