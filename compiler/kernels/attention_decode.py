"""kiln's decode attention on the paged KV cache for GPU targets (flash-decoding).

nn.llm's GPU decode kernel gives each KV head of each sequence one workgroup, which walks the whole
context 15 tokens at a time with a cross-thread reduction (several barriers) per token: 3 workgroups
for SmolLM2-135M on a GPU with a hundred cores, and a cost per token of context that dominated a
decode step at a few hundred tokens. This kernel, with the same signature and semantics, runs in two
launches:

1. partial attention: one workgroup of D / VEC threads per (sequence, KV head, split). The splits
   cut the sequence into runs of whole tiles, at least MIN_SPLIT_TOKENS' worth, so that a long
   context spreads over up to MAX_SPLITS workgroups per head.
   A workgroup walks its run one tile (a token per thread) at a time: each thread scores its token
   against all the query heads of the group (GQA: each element of its K row is read once for the
   group), with the group's queries in registers (the k loop unrolled; read from shared memory at
   every k, they were most of the scoring's cost on SwiftShader), a barrier, then each thread folds
   the tile into the online-softmax states of all the query heads of the group for its VEC values
   of D (GQA again: each V row is read once for the group); a barrier. Two barriers per tile. A
   tile's slots past the split's end score NEG (weight 0) and name a written slot of the sequence,
   so the fold's inner loop has no branch (about 10 % less time per kernel on SwiftShader). It
   writes each split's normalized output and log2-sum-exp.
2. merge: one workgroup per (sequence, query head) combines the splits' states.

The partial states live in a workspace the runtime allocates per call (a pooled GPU buffer).
Scores are in log2 units (q.k * sm_scale * log2(e)), like nn.llm's, so `lse` means the same.

RoPE: kiln's models create the cache with keys rotated when appended (RopeMode.NORMAL), but a cache
that supports a sliding window stores them unrotated and passes rotary_mode 1 (TVM's C++ runtime
switches to inline RoPE there, since the positions of a window's keys move). The kernel then
rotates the query at its position and each key at its position in the sequence, with nn.llm's RoPE
(the model's rope_scaling). Built without rope_scaling, rotary_mode 1 is refused by a host check.
"""

from __future__ import annotations

import json
import math

import tvm
from tvm import tirx
from tvm.relax.frontend.nn.llm._kernel_common import _rope

VEC = 4  # values of D per thread in the output fold
MAX_SPLITS = 16
# Each workgroup has a fixed cost (its query, its partial state, the merge's read of it): on
# SwiftShader, 600 tokens of SmolLM2 took 19 ms a layer in 64-token splits and 11 ms in 256-token ones.
MIN_SPLIT_TOKENS = 256
NEG = -5e4  # below any real score: exp2(NEG - m) is 0
EMPTY_LSE = -1e30  # a split without tokens


def tile_tokens(d: int) -> int:
    """Tokens per tile = threads per workgroup of the partial launch: the fold's lanes (D / VEC), so
    that every thread works in both phases. SwiftShader's cost grows with a workgroup's threads at
    the same work: 600 tokens of SmolLM2 (D 64), 30 layers' K/V, took 3.1 ms a layer in 64-thread
    workgroups, 2.3 in 32 and 2.0 in 16 (12 tokens: 0.80, 0.47, 0.30 ms)."""
    return d // VEC


def decode_attention(h_qo: int, h_kv: int, d: int, dtype: str, page_size: int, sliding_window: bool,
                     symbol: str, rope_scaling: dict | None = None,
                     tiles_per_split: int | None = None) -> tirx.PrimFunc:
    """`rope_scaling` (nn.llm's form, {} for plain RoPE): the model's, for inline RoPE (rotary_mode
    1); None: the kernel serves rotary_mode 0 only. `tiles_per_split`: the least a split gets
    (default: MIN_SPLIT_TOKENS' worth; the tests lower it to reach MAX_SPLITS at small sizes)."""
    from tvm.script import tirx as T

    group = h_qo // h_kv
    tile_len = tile_tokens(d)
    tiles_per_split = tiles_per_split or MIN_SPLIT_TOKENS // tile_len
    q_loads = (group * d + tile_len - 1) // tile_len
    log2e = math.log2(math.e)
    inline_rope = rope_scaling is not None
    split_tokens = tiles_per_split * tile_len
    rope = rope_scaling or {}

    def chunk_len(length_info, b, pages):
        if not sliding_window:
            return (pages - 1) * page_size + length_info[b]
        # [last page's length, window offset, sink size] per sequence
        return (pages - 1) * page_size + length_info[0, b] - length_info[1, b] + length_info[2, b]

    def n_splits(nnz_pages):
        # From a shape (the page table's size), so that the host knows the grid: for a batch of one
        # sequence, one split per tiles_per_split tiles' worth of pages, at most MAX_SPLITS.
        return T.max(1, T.min(MAX_SPLITS, (nnz_pages * page_size + split_tokens - 1) // split_tokens))

    def seq_offset(length_info, b, pos):
        if not sliding_window:
            return pos
        return T.if_then_else(pos < length_info[2, b], pos, pos - length_info[2, b] + length_info[1, b])

    def row_start(page, kv, slot, head):
        # where K (kv 0) or V (1) of `slot` in `page` starts in pages_flat (`head`: this KV head's
        # offset in a page). Computed once per row into a register: written as pages[...]
        # at every element, the address (two shared-memory reads, a modulo, four products) was
        # recomputed per element on SwiftShader.
        return (page * 2 + kv) * (h_kv * page_size * d) + head + slot * d

    @T.macro(hygienic=False)
    def score_token(rotated):
        # This thread's token against each query head of the group, each key element read once
        # (rotated at the token's position under inline RoPE); `rotated` is chosen when parsing. The
        # plain form unrolls k, so that q_l's indices are constants (registers); the RoPE form keeps
        # the loop (unrolled too, its shader lost SwiftShader's device when compiled).
        for g in T.unroll(group):
            score_l[g] = 0.0
        if not rotated:  # (the RoPE form indexes pages through nn.llm's _rope)
            row_l[0] = row_start(page_s[tx], 0, slot_s[tx], row_l[1])
        for k in T.serial(d) if rotated else T.unroll(d):
            if rotated:
                f[0] = T.Cast("float32", _rope(
                    pages, k_rope_pos_offset[b] + t_begin + tile * tile_len + tx, d, rope_theta,
                    rope_scale, (page_s[tx], 0, kvh, slot_s[tx], k), dtype, rope))
            else:
                f[0] = T.Cast("float32", pages_flat[row_l[0] + k])
            for g in T.unroll(group):
                score_l[g] = score_l[g] + q_l[g, k] * f[0]
        for g in T.unroll(group):
            score_s[g, tx] = score_l[g]

    @T.prim_func(s_tir=True)
    def decode(q_handle: T.handle, pages_handle: T.handle, indptr_handle: T.handle, values_handle: T.handle,
               length_info_handle: T.handle, k_rope_pos_offset_handle: T.handle, q_rope_position_handle: T.handle,
               output_handle: T.handle, lse_handle: T.handle, rotary_mode: T.int32, rope_scale: T.float32,
               rope_theta: T.float32, sm_scale: T.float32):
        T.func_attr({"tirx.is_scheduled": True, "global_symbol": symbol})
        B = T.int32()
        nnz_pages = T.int32()
        max_num_pages = T.int32()
        pages_offset = T.int64()
        indptr_offset = T.int32()
        values_offset = T.int32()
        k_rope_offset = T.int32()
        q_rope_offset = T.int32()
        length_offset = T.int32()
        Q = T.match_buffer(q_handle, (B, h_qo, d), dtype)
        pages = T.match_buffer(pages_handle, (max_num_pages, 2, h_kv, page_size, d), dtype, elem_offset=pages_offset)
        indptr = T.match_buffer(indptr_handle, (B + 1,), "int32", elem_offset=indptr_offset)
        values = T.match_buffer(values_handle, (nnz_pages,), "int32", elem_offset=values_offset)
        k_rope_pos_offset = T.match_buffer(k_rope_pos_offset_handle, (B,), "int32", elem_offset=k_rope_offset)
        q_rope_position = T.match_buffer(q_rope_position_handle, (B,), "int32", elem_offset=q_rope_offset)
        output = T.match_buffer(output_handle, (B, h_qo, d), dtype)
        lse = T.match_buffer(lse_handle, (B, h_qo), "float32")
        if sliding_window:
            length_info = T.match_buffer(length_info_handle, (3, B), "int32", elem_offset=length_offset)
        else:
            length_info = T.match_buffer(length_info_handle, (B,), "int32", elem_offset=length_offset)
        if rope_scaling is None:
            assert rotary_mode == 0, "kiln's decode attention was built without inline RoPE (RopeMode.NORMAL only)"
        pages_flat = T.decl_buffer((max_num_pages * 2 * h_kv * page_size * d,), dtype, data=pages.data,
                                   elem_offset=pages_offset)
        part_out = T.alloc_buffer((B, h_qo, MAX_SPLITS, d), "float32")
        part_lse = T.alloc_buffer((B, h_qo, MAX_SPLITS), "float32")

        for bx in T.thread_binding(B * h_kv, thread="blockIdx.x"):
            for by in T.thread_binding(n_splits(nnz_pages), thread="blockIdx.y"):
                for tx in T.thread_binding(tile_len, thread="threadIdx.x"):
                    with T.sblock("partial"):
                        T.reads()
                        T.writes()
                        q_s = T.sblock_alloc_buffer((group, d), "float32", scope="shared")
                        score_s = T.sblock_alloc_buffer((group, tile_len), "float32", scope="shared")
                        page_s = T.sblock_alloc_buffer((tile_len,), "int32", scope="shared")
                        slot_s = T.sblock_alloc_buffer((tile_len,), "int32", scope="shared")
                        acc = T.sblock_alloc_buffer((group, VEC), "float32", scope="local")
                        v_l = T.sblock_alloc_buffer((VEC,), "float32", scope="local")
                        run_max = T.sblock_alloc_buffer((group,), "float32", scope="local")
                        run_sum = T.sblock_alloc_buffer((group,), "float32", scope="local")
                        f = T.sblock_alloc_buffer((3,), "float32", scope="local")
                        row_l = T.sblock_alloc_buffer((2,), "int32", scope="local")
                        score_l = T.sblock_alloc_buffer((group,), "float32", scope="local")
                        # group x D floats a thread: 192 for SmolLM2, 256 for Llama 3.2 1B (a real
                        # GPU may spill some of them; not measured)
                        q_l = T.sblock_alloc_buffer((group, d), "float32", scope="local")
                        b: T.let[T.int32] = bx // h_kv
                        kvh: T.let[T.int32] = bx % h_kv
                        page_begin: T.let[T.int32] = indptr[b]
                        n_pages: T.let[T.int32] = indptr[b + 1] - page_begin
                        length: T.let[T.int32] = T.if_then_else(n_pages > 0, chunk_len(length_info, b, n_pages), 0)
                        # tokens per split: the sequence's pages shared out, rounded up to whole tiles
                        per_split: T.let[T.int32] = ((n_pages + n_splits(nnz_pages) - 1) // n_splits(nnz_pages)
                                                     * page_size + tile_len - 1) // tile_len * tile_len
                        t_begin: T.let[T.int32] = by * per_split
                        t_end: T.let[T.int32] = T.min(length, t_begin + per_split)
                        row_l[1] = kvh * (page_size * d)
                        for i in T.serial(q_loads):
                            if i * tile_len + tx < group * d:
                                if inline_rope and rotary_mode == 1:
                                    q_s[(i * tile_len + tx) // d, (i * tile_len + tx) % d] = T.Cast("float32", _rope(
                                        Q, q_rope_position[b], d, rope_theta, rope_scale,
                                        (b, kvh * group + (i * tile_len + tx) // d, (i * tile_len + tx) % d), dtype, rope)
                                    ) * sm_scale * log2e
                                else:
                                    q_s[(i * tile_len + tx) // d, (i * tile_len + tx) % d] = T.Cast(
                                        "float32", Q[b, kvh * group + (i * tile_len + tx) // d, (i * tile_len + tx) % d]
                                    ) * sm_scale * log2e
                        for g in T.unroll(group):  # unrolled like every use: the states stay in registers
                            run_max[g] = NEG
                            run_sum[g] = 0.0
                            for v in T.vectorized(VEC):
                                acc[g, v] = 0.0
                        T.tvm_storage_sync("shared")
                        for g in T.unroll(group):
                            for k in T.unroll(d):
                                q_l[g, k] = q_s[g, k]
                        for tile in T.serial((T.max(t_end - t_begin, 0) + tile_len - 1) // tile_len):
                            # 1. this thread's token: its page, and its score for each query head
                            if t_begin + tile * tile_len + tx < t_end:
                                page_s[tx] = values[page_begin + seq_offset(length_info, b, t_begin + tile * tile_len + tx) // page_size]
                                slot_s[tx] = seq_offset(length_info, b, t_begin + tile * tile_len + tx) % page_size
                                # The branch outside the k loop: inside it (7ee6c5a) it slowed a
                                # model's decode at 600 tokens by 25 %.
                                if inline_rope and rotary_mode == 1:
                                    score_token(True)
                                else:
                                    score_token(False)
                            else:
                                # past the split's end: weight 0 on a slot of this sequence (finite)
                                page_s[tx] = values[page_begin]
                                slot_s[tx] = 0
                                for g in T.serial(group):
                                    score_s[g, tx] = NEG
                            T.tvm_storage_sync("shared")
                            # 2. fold the tile into this thread's states: VEC values of D (from each V row,
                            # read once for the group) for every query head of the group
                            for g in T.unroll(group):
                                f[1] = run_max[g]
                                for j in T.serial(tile_len):
                                    f[1] = T.max(f[1], score_s[g, j])
                                f[2] = T.exp2(run_max[g] - f[1])
                                run_sum[g] = run_sum[g] * f[2]
                                for v in T.vectorized(VEC):
                                    acc[g, v] = acc[g, v] * f[2]
                                run_max[g] = f[1]
                            for j in T.serial(tile_len):
                                row_l[0] = row_start(page_s[j], 1, slot_s[j], row_l[1]) + tx * VEC
                                for v in T.vectorized(VEC):
                                    v_l[v] = T.Cast("float32", pages_flat[row_l[0] + v])
                                for g in T.unroll(group):
                                    f[2] = T.exp2(score_s[g, j] - run_max[g])
                                    run_sum[g] = run_sum[g] + f[2]
                                    for v in T.vectorized(VEC):
                                        acc[g, v] = acc[g, v] + f[2] * v_l[v]
                            T.tvm_storage_sync("shared")
                        for g in T.unroll(group):
                            for v in T.vectorized(VEC):
                                part_out[b, kvh * group + g, by, tx * VEC + v] = T.if_then_else(
                                    run_sum[g] > 0.0, acc[g, v] / run_sum[g], 0.0)
                            if tx == 0:
                                part_lse[b, kvh * group + g, by] = T.if_then_else(
                                    run_sum[g] > 0.0, run_max[g] + T.log2(run_sum[g]), EMPTY_LSE)

        for bx in T.thread_binding(B, thread="blockIdx.x"):
            for by in T.thread_binding(h_qo, thread="blockIdx.y"):
                for tx in T.thread_binding(d, thread="threadIdx.x"):
                    with T.sblock("merge"):
                        T.reads()
                        T.writes()
                        m = T.sblock_alloc_buffer((4,), "float32", scope="local")
                        m[0] = EMPTY_LSE
                        for s in T.serial(n_splits(nnz_pages)):
                            m[0] = T.max(m[0], part_lse[bx, by, s])
                        m[1] = 0.0
                        m[2] = 0.0
                        for s in T.serial(n_splits(nnz_pages)):
                            m[3] = T.exp2(part_lse[bx, by, s] - m[0])
                            m[1] = m[1] + m[3]
                            m[2] = m[2] + m[3] * part_out[bx, by, s, tx]
                        output[bx, by, tx] = T.Cast(dtype, T.if_then_else(m[1] > 0.0, m[2] / m[1], 0.0))
                        if tx == 0:
                            lse[bx, by] = m[0] + T.log2(T.max(m[1], 1e-30))

    return decode


def param_shape(func: tirx.PrimFunc, index: int) -> list[int]:
    """The static shape of a PrimFunc parameter (-1 for a symbolic dimension)."""
    return [int(x) if isinstance(x, (int, tirx.IntImm)) else -1 for x in func.params[index].ty.shape]


# nn.llm's GPU decode kernels, under the global symbols the KV cache adds them with.
REPLACED = ("batch_decode_paged_kv", "batch_decode_paged_kv_sliding_window")
RULE_NAME = "kiln.FlashDecodeAttention"  # what rule_report (schedules.py) says for them
# The module attribute that carries the model's rope_scaling (JSON, nn.llm's form; model_module.py
# sets it): the sliding-window form needs it for inline RoPE, and without it stays nn.llm's.
ROPE_ATTR = "kiln.rope_scaling"
# The module attribute that says whether the model has a sliding window (model_module.py sets it;
# attention_prefill.py builds inline RoPE only then).
WINDOW_ATTR = "kiln.sliding_window"


@tvm.transform.module_pass(opt_level=0, name=RULE_NAME)
def flash_decode_attention(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    """Replace nn.llm's GPU decode attention kernels (REPLACED) by kiln's."""
    from kiln.kernels.schedules import SCHEDULE_ATTR  # (schedules.py imports this module)

    target = tvm.target.Target.current(allow_none=True)
    if target is None or "gpu" not in target.keys:
        return mod
    rope = mod.attrs.get(ROPE_ATTR) if mod.attrs else None
    rope_scaling = json.loads(str(rope)) if rope is not None else None
    for gv, func in list(mod.functions_items()):
        name = gv.name_hint
        sliding_window = name.endswith("sliding_window")
        if not (isinstance(func, tirx.PrimFunc) and name in REPLACED) or (sliding_window and rope_scaling is None):
            continue
        _, h_qo, d = param_shape(func, 0)
        _, _, h_kv, page_size, _ = param_shape(func, 1)
        dtype = str(func.params[0].ty.dtype)
        kernel = decode_attention(h_qo, h_kv, d, dtype, page_size, sliding_window, name, rope_scaling)
        mod[gv] = kernel.with_attr(SCHEDULE_ATTR, RULE_NAME)
    return mod
