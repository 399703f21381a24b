"""kiln's prefill attention for GPU targets: the new tokens of a chunk against themselves (ragged,
causal) and against the cached pages of the sequence (paged), the two kernels TVM's KV cache calls
in a prefill (the second only when the sequence has cached tokens; then the merge combines them).

nn.llm's GPU prefill kernels run 16 workgroups per KV head whatever the length, each walking query
tiles with a shared-memory score matrix and several barriers per KV tile: on SwiftShader, 185-290 ms
a layer for a 128-token SmolLM2 prompt and 3.1-3.6 s for 600 tokens. Here, with the same signatures
and semantics:

- one workgroup per THREADS x ROWS_PER_THREAD query rows of one KV head of one sequence: a row is
  one query head of the GQA group at one token (rows run token-major), and a sequence's rows are
  cut into whole workgroups of their own, so that every workgroup has one sequence (the grid adds
  one spare workgroup per sequence for the rounding; spares do nothing);
- each thread keeps its rows' queries (pre-scaled into log2 units) and output accumulators in
  registers (every loop over D and over its rows unrolled, so every index is a constant);
- the workgroup walks the keys TILE at a time: each thread loads one key's K and V rows into shared
  memory (rotated at the key's position under inline RoPE), a barrier, then each thread scores the
  tile against its rows (each K value read once, four at a time, for all of them; the scores in the
  thread's own array: in shared memory TVM put a barrier after every write), rescales each row's
  state once per tile, and folds the tile's V rows in the same way; a barrier. Under the causal
  mask a workgroup stops at its last row's last key, and each row masks the keys past its own.

Measured on SwiftShader, one SmolLM2 layer (9 query heads, 3 KV heads, D 64), ragged: 128 tokens
21 ms, 600 tokens 340 ms. Two rows a thread: 1 row took 31 / 457 ms, 3 rows 17 / 255 ms, 4 rows
19 / 235 ms; two keeps 256 floats of state a thread, which a real GPU holds in registers (not
measured on one).

Scores are in log2 units (q.k * sm_scale * log2(e)) and `lse` is the log2-sum-exp, like nn.llm's.
"""

from __future__ import annotations

import json
import math

import tvm
from tvm import tirx
from tvm.relax.frontend.nn.llm._kernel_common import _rope

from kiln.kernels.attention_decode import EMPTY_LSE, NEG, ROPE_ATTR, WINDOW_ATTR, param_shape

THREADS = 32  # per workgroup
ROWS_PER_THREAD = 2  # query rows of a thread: each K and V value loaded from shared memory serves them all
TILE = THREADS  # keys per tile: each thread loads one
VEC = 4  # K and V values per load (WGSL vectors hold at most 4; a score adds up part's 4 lanes)


def prefill_attention(h_qo: int, h_kv: int, d: int, dtype: str, paged: bool, symbol: str,
                      rope_scaling: dict | None = None, page_size: int = 16,
                      rows: int = ROWS_PER_THREAD) -> tirx.PrimFunc:
    """The ragged kernel (`paged` False: K and V of the chunk, [tokens, h_kv, d] each) or the paged
    one (K and V in the KV cache's pages; the plain form only: no sliding window, so no inline RoPE).
    `rope_scaling` (nn.llm's form, {} for plain RoPE): the model's, for inline RoPE (rotary_mode 1,
    which a cache that supports a sliding window passes to the ragged kernel); None: the kernel
    serves rotary_mode 0 only."""
    assert not (paged and rope_scaling is not None)
    from tvm.script import tirx as T

    group = h_qo // h_kv
    assert d % VEC == 0
    log2e = math.log2(math.e)
    inline_rope = rope_scaling is not None
    rope = rope_scaling or {}

    rows_per_wg = THREADS * rows

    def n_workgroups(rows_total, batch):
        # every sequence's rows rounded up to whole workgroups fit in this many
        return (rows_total + rows_per_wg - 1) // rows_per_wg + batch

    # The macros resolve names where they are called (hygienic=False): in the kernels, which pass
    # them what only the builder knows (the key loader, RoPE's parameters, the query's scale).
    @T.macro(hygienic=False)
    def load_ragged(rotated, rope):
        # this thread's key: its K and V rows into shared memory, rotated at its position under
        # inline RoPE
        for k4 in T.serial(d // VEC):
            for v in T.vectorized(VEC):
                if rotated:
                    k_s[tx, k4 * VEC + v] = T.Cast("float32", _rope(
                        K, k_rope_pos_offset[b] + t_key, d, rope_theta, rope_scale,
                        (kv_begin + t_key, kvh, k4 * VEC + v), dtype, rope))
                else:
                    k_s[tx, k4 * VEC + v] = T.Cast("float32", K[kv_begin + t_key, kvh, k4 * VEC + v])
                v_s[tx, k4 * VEC + v] = T.Cast("float32", V[kv_begin + t_key, kvh, k4 * VEC + v])

    @T.macro(hygienic=False)
    def load_paged(rotated, rope):
        # as load_ragged, from the key's slot in its page (the row's start computed once)
        page_l[0] = ((values[page_begin + t_key // page_size] * 2) * h_kv + kvh) * (page_size * d) \
            + t_key % page_size * d
        for k4 in T.serial(d // VEC):
            for v in T.vectorized(VEC):
                k_s[tx, k4 * VEC + v] = T.Cast("float32", pages_flat[page_l[0] + k4 * VEC + v])
                v_s[tx, k4 * VEC + v] = T.Cast("float32", pages_flat[page_l[0] + h_kv * page_size * d + k4 * VEC + v])

    @T.macro(hygienic=False)
    def body(q_begin, q_len, kv_len, tile_in_seq, causal_on, load_tile, rope, q_scale, rows_per_wg):
        # this thread's rows: tx, tx + THREADS, ... of the workgroup's rows (a row past the end
        # computes on the last token's query, unwritten)
        first_row: T.let[T.int32] = tile_in_seq * rows_per_wg
        last_token: T.let[T.int32] = T.min(q_len - 1, (first_row + rows_per_wg - 1) // group)
        # causal: token i sees the keys up to i + (kv_len - q_len), the cached ones before the chunk included
        kv_limit: T.let[T.int32] = T.if_then_else(causal_on, T.min(kv_len, last_token + 1 + kv_len - q_len),
                                                  kv_len)
        for r in T.unroll(rows):
            row_l[r, 0] = T.min((first_row + r * THREADS + tx) // group, q_len - 1)  # token
            row_l[r, 1] = kvh * group + (first_row + r * THREADS + tx) % group  # query head
            row_l[r, 2] = T.if_then_else(causal_on, T.min(kv_len, row_l[r, 0] + 1 + kv_len - q_len), kv_len)
            # (every loop over D four values at a time: a quarter of the shader's lines, which
            # SwiftShader compiles while the model loads)
            for k4 in T.unroll(d // VEC):
                for v in T.vectorized(VEC):
                    if inline_rope and rotary_mode == 1:
                        q_l[r, k4 * VEC + v] = T.Cast("float32", _rope(
                            Q, q_rope_position[q_begin + row_l[r, 0]], d, rope_theta, rope_scale,
                            (q_begin + row_l[r, 0], row_l[r, 1], k4 * VEC + v), dtype, rope)) * q_scale
                    else:
                        q_l[r, k4 * VEC + v] = T.Cast("float32", Q[q_begin + row_l[r, 0], row_l[r, 1],
                                                                    k4 * VEC + v]) * q_scale
                    acc[r, k4 * VEC + v] = 0.0
            run[r, 0] = NEG  # running max
            run[r, 1] = 0.0  # running sum
        for tile in T.serial((kv_limit + TILE - 1) // TILE):
            t_key: T.let[T.int32] = tile * TILE + tx
            if t_key < kv_limit:
                if inline_rope and rotary_mode == 1:
                    load_tile(True, rope)
                else:
                    load_tile(False, rope)
            else:  # past the end: zeros, so that a masked key's weight 0 meets a finite V
                for k4 in T.serial(d // VEC):
                    for v in T.vectorized(VEC):
                        k_s[tx, k4 * VEC + v] = 0.0
                        v_s[tx, k4 * VEC + v] = 0.0
            T.tvm_storage_sync("shared")
            # scores of the tile's keys, each K value read once for all the thread's rows, and
            # each row's max
            for r in T.unroll(rows):
                run[r, 2] = run[r, 0]
            for j in T.serial(TILE):
                for r in T.unroll(rows):
                    for v in T.vectorized(VEC):
                        part[r, v] = 0.0
                for k4 in T.unroll(d // VEC):
                    for v in T.vectorized(VEC):
                        k_l[v] = k_s[j, k4 * VEC + v]
                    for r in T.unroll(rows):
                        for v in T.vectorized(VEC):
                            part[r, v] = part[r, v] + q_l[r, k4 * VEC + v] * k_l[v]
                for r in T.unroll(rows):
                    score_l[r, j] = T.if_then_else(tile * TILE + j < row_l[r, 2],
                                                   part[r, 0] + part[r, 1] + part[r, 2] + part[r, 3], NEG)
                    run[r, 2] = T.max(run[r, 2], score_l[r, j])
            for r in T.unroll(rows):
                run[r, 3] = T.exp2(run[r, 0] - run[r, 2])  # rescales what the earlier tiles summed
                run[r, 1] = run[r, 1] * run[r, 3]
                for k4 in T.unroll(d // VEC):
                    for v in T.vectorized(VEC):
                        acc[r, k4 * VEC + v] = acc[r, k4 * VEC + v] * run[r, 3]
                run[r, 0] = run[r, 2]
            for j in T.serial(TILE):
                for r in T.unroll(rows):
                    # a masked key weighs 0 even while the row has seen no key (running max NEG)
                    run[r, 3] = T.if_then_else(tile * TILE + j < row_l[r, 2], T.exp2(score_l[r, j] - run[r, 0]), 0.0)
                    run[r, 1] = run[r, 1] + run[r, 3]
                for k4 in T.unroll(d // VEC):
                    for v in T.vectorized(VEC):
                        k_l[v] = v_s[j, k4 * VEC + v]
                    for r in T.unroll(rows):
                        for v in T.vectorized(VEC):
                            acc[r, k4 * VEC + v] = acc[r, k4 * VEC + v] + run[r, 3] * k_l[v]
            T.tvm_storage_sync("shared")
        for r in T.unroll(rows):
            if first_row + r * THREADS + tx < q_len * group:
                # one reciprocal a row (a branch per element made the shader twice as long, and
                # SwiftShader compiles it while the model loads)
                run[r, 3] = T.if_then_else(run[r, 1] > 0.0, 1.0 / run[r, 1], 0.0)
                for k4 in T.unroll(d // VEC):
                    for v in T.vectorized(VEC):
                        output[q_begin + row_l[r, 0], row_l[r, 1], k4 * VEC + v] = T.Cast(
                            dtype, acc[r, k4 * VEC + v] * run[r, 3])
                lse[q_begin + row_l[r, 0], row_l[r, 1]] = T.if_then_else(
                    run[r, 1] > 0.0, run[r, 0] + T.log2(run[r, 1]), EMPTY_LSE)

    @T.macro(hygienic=False)
    def find_sequence(batch_size, rows_per_wg):
        # this workgroup's sequence and its row tile there (the same for all its threads)
        walk[0] = bx
        walk[1] = batch_size  # none: a spare workgroup
        for s in T.serial(batch_size):
            if walk[1] == batch_size:
                if walk[0] < ((q_indptr[s + 1] - q_indptr[s]) * group + rows_per_wg - 1) // rows_per_wg:
                    walk[1] = s
                else:
                    walk[0] = walk[0] - ((q_indptr[s + 1] - q_indptr[s]) * group + rows_per_wg - 1) // rows_per_wg

    if paged:
        @T.prim_func(s_tir=True)
        def kernel(q_handle: T.handle, q_indptr_handle: T.handle, pages_handle: T.handle, indptr_handle: T.handle,
                   values_handle: T.handle, length_info_handle: T.handle, k_rope_pos_offset_handle: T.handle,
                   q_rope_position_handle: T.handle, output_handle: T.handle, lse_handle: T.handle, causal: T.int32,
                   rotary_mode: T.int32, rope_scale: T.float32, rope_theta: T.float32, sm_scale: T.float32):
            T.func_attr({"tirx.is_scheduled": True, "global_symbol": symbol})
            batch_size = T.int32()
            total_len = T.int32()
            nnz_pages = T.int32()
            max_num_pages = T.int32()
            pages_offset = T.int64()
            q_indptr_offset = T.int32()
            indptr_offset = T.int32()
            values_offset = T.int32()
            length_offset = T.int32()
            k_rope_offset = T.int32()
            q_rope_offset = T.int32()
            Q = T.match_buffer(q_handle, (total_len, h_qo, d), dtype)
            q_indptr = T.match_buffer(q_indptr_handle, (batch_size + 1,), "int32", elem_offset=q_indptr_offset)
            pages = T.match_buffer(pages_handle, (max_num_pages, 2, h_kv, page_size, d), dtype,
                                   elem_offset=pages_offset)
            indptr = T.match_buffer(indptr_handle, (batch_size + 1,), "int32", elem_offset=indptr_offset)
            values = T.match_buffer(values_handle, (nnz_pages,), "int32", elem_offset=values_offset)
            length_info = T.match_buffer(length_info_handle, (batch_size,), "int32", elem_offset=length_offset)
            k_rope_pos_offset = T.match_buffer(k_rope_pos_offset_handle, (batch_size,), "int32",
                                               elem_offset=k_rope_offset)
            q_rope_position = T.match_buffer(q_rope_position_handle, (total_len,), "int32", elem_offset=q_rope_offset)
            output = T.match_buffer(output_handle, (total_len, h_qo, d), dtype)
            lse = T.match_buffer(lse_handle, (total_len, h_qo), "float32")
            if not inline_rope:
                assert rotary_mode == 0, "kiln's prefill attention was built without inline RoPE (RopeMode.NORMAL only)"
            pages_flat = T.decl_buffer((max_num_pages * 2 * h_kv * page_size * d,), dtype, data=pages.data,
                                       elem_offset=pages_offset)
            for bx in T.thread_binding(n_workgroups(total_len * group, batch_size), thread="blockIdx.x"):
                for kvh in T.thread_binding(h_kv, thread="blockIdx.y"):
                    for tx in T.thread_binding(THREADS, thread="threadIdx.x"):
                        with T.sblock("attention"):
                            T.reads()
                            T.writes()
                            k_s = T.sblock_alloc_buffer((TILE, d), "float32", scope="shared")
                            v_s = T.sblock_alloc_buffer((TILE, d), "float32", scope="shared")
                            score_l = T.sblock_alloc_buffer((rows, TILE), "float32", scope="local")
                            q_l = T.sblock_alloc_buffer((rows, d), "float32", scope="local")
                            acc = T.sblock_alloc_buffer((rows, d), "float32", scope="local")
                            part = T.sblock_alloc_buffer((rows, VEC), "float32", scope="local")
                            k_l = T.sblock_alloc_buffer((VEC,), "float32", scope="local")
                            row_l = T.sblock_alloc_buffer((rows, 3), "int32", scope="local")  # token, head, key limit
                            run = T.sblock_alloc_buffer((rows, 4), "float32", scope="local")
                            walk = T.sblock_alloc_buffer((2,), "int32", scope="local")
                            page_l = T.sblock_alloc_buffer((1,), "int32", scope="local")
                            find_sequence(batch_size, rows_per_wg)
                            if T.tvm_thread_invariant(walk[1] < batch_size):  # (barriers inside: the same for all threads)
                                b: T.let[T.int32] = walk[1]
                                page_begin: T.let[T.int32] = indptr[b]
                                n_pages: T.let[T.int32] = indptr[b + 1] - page_begin
                                body(q_indptr[b], q_indptr[b + 1] - q_indptr[b],
                                     T.if_then_else(n_pages > 0, (n_pages - 1) * page_size + length_info[b], 0),
                                     walk[0], causal > 0, load_paged, rope, sm_scale * log2e, rows_per_wg)
        return kernel

    @T.prim_func(s_tir=True)
    def kernel(q_handle: T.handle, q_indptr_handle: T.handle, k_handle: T.handle, v_handle: T.handle,
               kv_indptr_handle: T.handle, q_rope_position_handle: T.handle, k_rope_pos_offset_handle: T.handle,
               output_handle: T.handle, lse_handle: T.handle, causal: T.int32, rotary_mode: T.int32,
               rope_scale: T.float32, rope_theta: T.float32, sm_scale: T.float32):
        T.func_attr({"tirx.is_scheduled": True, "global_symbol": symbol})
        batch_size = T.int32()
        qo_len = T.int32()
        kv_len_all = T.int32()
        q_indptr_offset = T.int32()
        kv_indptr_offset = T.int32()
        q_rope_offset = T.int32()
        k_rope_offset = T.int32()
        Q = T.match_buffer(q_handle, (qo_len, h_qo, d), dtype)
        q_indptr = T.match_buffer(q_indptr_handle, (batch_size + 1,), "int32", elem_offset=q_indptr_offset)
        K = T.match_buffer(k_handle, (kv_len_all, h_kv, d), dtype)
        V = T.match_buffer(v_handle, (kv_len_all, h_kv, d), dtype)
        kv_indptr = T.match_buffer(kv_indptr_handle, (batch_size + 1,), "int32", elem_offset=kv_indptr_offset)
        q_rope_position = T.match_buffer(q_rope_position_handle, (qo_len,), "int32", elem_offset=q_rope_offset)
        k_rope_pos_offset = T.match_buffer(k_rope_pos_offset_handle, (batch_size,), "int32",
                                           elem_offset=k_rope_offset)
        output = T.match_buffer(output_handle, (qo_len, h_qo, d), dtype)
        lse = T.match_buffer(lse_handle, (qo_len, h_qo), "float32")
        if not inline_rope:
            assert rotary_mode == 0, "kiln's prefill attention was built without inline RoPE (RopeMode.NORMAL only)"
        for bx in T.thread_binding(n_workgroups(qo_len * group, batch_size), thread="blockIdx.x"):
            for kvh in T.thread_binding(h_kv, thread="blockIdx.y"):
                for tx in T.thread_binding(THREADS, thread="threadIdx.x"):
                    with T.sblock("attention"):
                        T.reads()
                        T.writes()
                        k_s = T.sblock_alloc_buffer((TILE, d), "float32", scope="shared")
                        v_s = T.sblock_alloc_buffer((TILE, d), "float32", scope="shared")
                        score_l = T.sblock_alloc_buffer((rows, TILE), "float32", scope="local")
                        q_l = T.sblock_alloc_buffer((rows, d), "float32", scope="local")
                        acc = T.sblock_alloc_buffer((rows, d), "float32", scope="local")
                        part = T.sblock_alloc_buffer((rows, VEC), "float32", scope="local")
                        k_l = T.sblock_alloc_buffer((VEC,), "float32", scope="local")
                        row_l = T.sblock_alloc_buffer((rows, 3), "int32", scope="local")  # token, head, key limit
                        run = T.sblock_alloc_buffer((rows, 4), "float32", scope="local")
                        walk = T.sblock_alloc_buffer((2,), "int32", scope="local")
                        find_sequence(batch_size, rows_per_wg)
                        if T.tvm_thread_invariant(walk[1] < batch_size):  # (barriers inside: the same for all threads)
                            b: T.let[T.int32] = walk[1]
                            kv_begin: T.let[T.int32] = kv_indptr[b]
                            body(q_indptr[b], q_indptr[b + 1] - q_indptr[b], kv_indptr[b + 1] - kv_begin, walk[0],
                                 causal > 0, load_ragged, rope, sm_scale * log2e, rows_per_wg)
    return kernel


# nn.llm's GPU prefill kernels kiln replaces: self-attention of a chunk, and attention over the
# cached pages (the sliding-window form of the latter stays nn.llm's).
RAGGED, PAGED = "batch_prefill_ragged_kv", "batch_prefill_paged_kv"
RULE_NAME = "kiln.PrefillAttention"  # what rule_report (schedules.py) says for them


@tvm.transform.module_pass(opt_level=0, name=RULE_NAME)
def prefill_attention_pass(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    """Replace nn.llm's GPU prefill attention kernels (RAGGED, PAGED) by kiln's. The ragged one
    needs the model's RoPE (the module's ROPE_ATTR; without it, nn.llm's stays); it is built with
    inline RoPE only for a model with a sliding window (WINDOW_ATTR), the one case where the KV
    cache passes rotary_mode 1: a third of the shader, compiled during the load, for nothing else."""
    from kiln.kernels.schedules import SCHEDULE_ATTR  # (schedules.py imports this module)

    target = tvm.target.Target.current(allow_none=True)
    if target is None or "gpu" not in target.keys:
        return mod
    rope = mod.attrs.get(ROPE_ATTR) if mod.attrs else None
    window = bool(mod.attrs.get(WINDOW_ATTR, False)) if mod.attrs else False
    for gv, func in list(mod.functions_items()):
        name = gv.name_hint
        if not isinstance(func, tirx.PrimFunc) or name not in (RAGGED, PAGED) or (name == RAGGED and rope is None):
            continue
        _, h_qo, d = param_shape(func, 0)
        h_kv = param_shape(func, 2)[2] if name == PAGED else param_shape(func, 2)[1]
        page_size = param_shape(func, 2)[3] if name == PAGED else 16
        dtype = str(func.params[0].ty.dtype)
        rope_scaling = json.loads(str(rope)) if name == RAGGED and window else None
        kernel = prefill_attention(h_qo, h_kv, d, dtype, name == PAGED, name, rope_scaling, page_size)
        mod[gv] = kernel.with_attr(SCHEDULE_ATTR, RULE_NAME)
    return mod
