"""How kiln lowers a Relax model module for its two targets: TVM's stock pipelines with one step
replaced. Where TVM's generic-GPU pipeline runs dlight's ApplyDefaultSchedule, kiln runs
`ScheduleKernels`: kiln's own rules first (the int4 linear kernels: LinearRule here for GPU targets,
LinearCPURule in schedules_cpu.py for CPU ones), then, on GPU targets, dlight's rules in TVM's
order. Before that, nn.llm's KV-cache attention kernels are replaced on GPU targets: the attention-state
merge (race_free_merge_state), decode attention (attention_decode.py, flash-decoding) and prefill
attention (attention_prefill.py: a chunk against itself and against the cached pages). The pass
records which rule scheduled each PrimFunc in its `kiln.schedule` attribute, so that `rule_report`
(and scripts/bench_runtime.py --kernels) can say who scheduled what.
"""

from __future__ import annotations

from dataclasses import dataclass

import tvm
from tvm import relax, tirx

from kiln.kernels.attention_decode import flash_decode_attention
from kiln.kernels.attention_prefill import prefill_attention_pass

SCHEDULE_ATTR = "kiln.schedule"
PRESCHEDULED = "prescheduled"  # written already scheduled (nn.llm's KV cache kernels, sampling)


def _dlight_rules() -> list[tuple[str, object]]:
    from tvm.s_tir import dlight as dl

    # TVM's generic-GPU order (relax/backend/gpu_generic/pipeline.py).
    return [("dlight.Matmul", dl.gpu.Matmul()), ("dlight.GEMV", dl.gpu.GEMV()),
            ("dlight.Reduction", dl.gpu.Reduction()), ("dlight.GeneralReduction", dl.gpu.GeneralReduction()),
            ("dlight.Fallback", dl.gpu.Fallback())]


@dataclass(frozen=True)
class LinearTiles:
    """How a GPU thread grid covers y[m, n] = sum_k x[m, k] * W[n, k]: a workgroup holds `rows`
    threads; a thread computes `tokens` x `per_thread` outputs over all of K."""

    rows: int = 64       # threadIdx.x: output rows (n) per workgroup, per_thread each
    per_thread: int = 1  # output rows (n) per thread
    tokens: int = 1      # tokens (m) per thread; > 1 reuses each dequantized weight


class LinearRule:
    """kiln's int4 (and plain) linear kernels, `matmul_nt` from model_defs/layers.py, with any
    elementwise epilogue FuseOps put behind them (residual add, bias, cast). A thread walks K one
    group of a packed weight at a time: it decodes the group's scale (and min) of its rows once
    (the `group_*` stages, in registers), then takes each packed word once and its values in
    registers, and loads each x value once for all its rows (before, each row's product loaded it
    again: 8 loads of one value per word, which nothing merged on SwiftShader). Every loop over a
    thread's rows is unrolled, so its register arrays are indexed by constants only: SwiftShader
    keeps a dynamically indexed local array in memory."""

    def __init__(self, tiles=None):
        self.tiles = tiles  # None: pick per shape; or a function (m_static, n, k) -> LinearTiles

    def apply(self, func: tirx.PrimFunc, target, _tunable: bool):
        found = _linear_loops(func)
        if found is None:
            return None
        sch, mm, epilogues, group_stages, m, n, k, m_static, n_extent, k_extent = found
        t = (self.tiles or default_tiles)(m_static, n_extent, k_extent)
        word, outer, kg, kw, ki = _split_k(sch, k, group_stages, k_extent)
        bn, tn, vn = sch.split(n, [None, t.rows, t.per_thread])
        bm, vm = sch.split(m, [None, t.tokens], disable_predication=True)
        sch.reorder(bm, bn, tn, *outer, kw, ki, vm, vn)
        sch.bind(bm, "blockIdx.y")
        sch.bind(bn, "blockIdx.x")
        sch.bind(tn, "threadIdx.x")
        _accumulate_locally(sch, mm, epilogues, tn)
        for stage in group_stages:
            sch.compute_at(stage, kg)
            sch.set_scope(stage, 0, "local")
            _unroll_inside(sch, stage, kg)
        if word > 1:
            _unroll_inside(sch, _words_once(sch, mm, kw, ki), kw)
        x_values = sch.cache_read(mm, 0, "local")  # read 0: x, the product's left operand
        sch.compute_at(x_values, ki)
        _unroll_inside(sch, x_values, ki)
        for loop in (vm, vn):
            sch.unroll(loop)
        sch.decompose_reduction(mm, kg)
        return sch


def _linear_loops(func: tirx.PrimFunc):
    """For a kernel with kiln's `matmul_nt` block: (schedule, that block, its epilogue blocks, the
    `group_*` stages, its loops m (the leading ones fused), n, k, and their extents, m's None when
    symbolic), with any other prologue inlined; None for any other kernel."""
    from tvm import s_tir

    sch = s_tir.Schedule(func)
    try:
        mm = sch.get_sblock("matmul_nt")
    except Exception:  # noqa: BLE001 - not one of ours
        return None
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    names = [sch.get(b).name_hint for b in blocks]
    at = names.index("matmul_nt")
    group_stages = [b for b, name in zip(blocks[:at], names[:at]) if name.startswith("group_")]
    for b, name in zip(blocks[:at], names[:at]):
        if not name.startswith("group_"):
            sch.compute_inline(b)
    *lead, n, k = sch.get_loops(mm)
    m = sch.fuse(*lead) if len(lead) > 1 else lead[0]
    m_extent = sch.get(m).extent
    m_static = int(m_extent) if isinstance(m_extent, tirx.IntImm) else None
    return (sch, mm, blocks[at + 1:], group_stages, m, n, k, m_static, int(sch.get(n).extent),
            int(sch.get(k).extent))


def _split_k(sch, k, group_stages: list, k_extent: int):
    """(values per packed word, [the group loop] or [], the loop the group stages and the reduction's
    init go at (the group loop, else the word loop), word loop, value loop): K split group by group
    when the group stages split it evenly, else word by word."""
    word = 8 if k_extent % 8 == 0 else 1
    group = _group_size(sch, group_stages, k_extent)
    if group and group % word == 0:
        kg, kw, ki = sch.split(k, [None, group // word, word])
        return word, [kg], kg, kw, ki
    kw, ki = sch.split(k, [None, word])
    return word, [], kw, kw, ki


def _accumulate_locally(sch, mm, epilogues: list, loop, scope: str = "local") -> None:
    """Sums in registers (a `scope` buffer), written out (through the epilogues, if any) once per
    `loop` iteration."""
    if epilogues:
        for e in epilogues:
            sch.reverse_compute_at(e, loop)
        sch.set_scope(mm, 0, scope)
    else:
        out = sch.cache_write(mm, 0, scope)
        sch.reverse_compute_at(out, loop)


def _words_once(sch, mm, kw, ki, scope: str = "local"):
    """Load each packed weight word once (at the word loop, into a `scope` buffer), then take its
    values in registers. Returns the loading block (None for a kernel without packed words)."""
    reads = [r.source.dtype for r in sch.get(mm).reads]
    words = None
    if "uint32" in reads:
        words = sch.cache_read(mm, reads.index("uint32"), scope)
        sch.compute_at(words, kw)
    sch.unroll(ki)
    return words


def _unroll_inside(sch, block, at) -> None:
    """Unroll the loops `block` has inside loop `at` (where it was computed at)."""
    if block is None:
        return
    at = sch.get(at)
    loops = sch.get_loops(block)
    inside = [i for i, loop in enumerate(loops) if sch.get(loop).same_as(at)][0] + 1
    for loop in loops[inside:]:
        sch.unroll(loop)


def _group_size(sch, group_stages: list, k: int) -> int | None:
    """Weights per group along K when the kernel has group stages ([rows, groups]) that split K
    evenly; else None."""
    if not group_stages:
        return None
    groups = int(sch.get(group_stages[0]).writes[0].source.shape[1])
    return k // groups if k % groups == 0 else None


def default_tiles(m_static: int | None, n: int, k: int) -> LinearTiles:
    """Tiles measured on SwiftShader (scripts/bench_runtime.py --kernels), kept GPU-shaped: 32
    threads (one warp) per workgroup, no barriers. Decode (one token): each thread takes up to 8
    rows, as many as leave at least 8 workgroups to spread over the cores. Prefill: 1 token x 2
    rows per thread. (8 tokens per thread reused each dequantized weight 8 times, but the token
    split is unpredicated, as WebGPU needs constant local sizes: a tile past the last token wrote
    beyond the tensor, and where the pooled buffer ended there WebGPU's robustness clamped those
    writes onto the last element, at random: one-call prefills of 4, 12, 20... tokens went wrong
    on SwiftShader.)"""
    threads = 32
    if m_static is not None and m_static <= 2:
        per_thread = next((p for p in (8, 4, 2) if n // (threads * p) >= 8), 1)
        return LinearTiles(rows=threads, per_thread=per_thread, tokens=m_static)
    return LinearTiles(rows=threads, per_thread=2, tokens=1)


def _kiln_rules(target) -> list[tuple[str, object]]:
    if "gpu" in target.keys:
        return [("kiln.Linear", LinearRule())]
    from kiln.kernels.schedules_cpu import LinearCPURule

    return [("kiln.LinearCPU", LinearCPURule())]


def _is_scheduled(func: tirx.PrimFunc) -> bool:
    return bool(func.attrs and "tirx.is_scheduled" in func.attrs and func.attrs["tirx.is_scheduled"])


@tvm.transform.module_pass(opt_level=0, name="kiln.ScheduleKernels")
def schedule_kernels(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    """Schedule every unscheduled PrimFunc with the first rule that takes it (kiln's, then
    dlight's on GPU targets) and tag each PrimFunc with the rule's name."""
    target = tvm.target.Target.current(allow_none=False)
    gpu = "gpu" in target.keys
    rules = _kiln_rules(target) + (_dlight_rules() if gpu else [])
    updates = {}
    for gv, func in mod.functions_items():
        if not isinstance(func, tirx.PrimFunc):
            continue
        if _is_scheduled(func):  # keeps the name of a kernel kiln wrote (attention_decode.py)
            if not (func.attrs and SCHEDULE_ATTR in func.attrs):
                updates[gv] = func.with_attr(SCHEDULE_ATTR, PRESCHEDULED)
            continue
        for name, rule in rules:
            sch = rule.apply(func, target, False)
            if sch is None:
                continue
            if isinstance(sch, list):
                sch = sch[0]
            updates[gv] = sch.mod["main"].with_attr("tirx.is_scheduled", True).with_attr(SCHEDULE_ATTR, name)
            break
        else:
            updates[gv] = func.with_attr(SCHEDULE_ATTR, "none")
    for gv, func in updates.items():
        mod[gv] = func
    return mod


def _inline_lets(func: tirx.PrimFunc) -> tirx.PrimFunc:
    import tvm_ffi

    def inline(let, mutator):
        mutator.var_remap_set(let.var, mutator.mutate(let.value))
        return mutator.mutate(let.body)

    return tvm_ffi.structural_mutate(func, [(tirx.Let, inline)])


@tvm.transform.module_pass(opt_level=0, name="kiln.InlineLetExprs")
def inline_let_exprs(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    """Substitute every `Let` expression of every PrimFunc by its value.

    TVM 0.27's TIR CSE (tirx.CommonSubexprElim) does not count the expressions inside a Let's body,
    yet replaces them there too: an index shared with a Let body but otherwise seen only in one
    branch gets its binding in that branch and is used, undefined, in the other ("cse_vN has been
    used before definition"). nn.llm's llama3 RoPE nests two Lets, which puts the position index in
    a body; every Llama 3.1/3.2 shape then failed in the WebGPU attention kernels (batch_prefill_*,
    batch_tree_attn; fused_rope at some sizes). Without Lets CSE sees every occurrence. Only the
    kernels that had Lets change (7 of 43, same outputs; tests/test_llama3_rope.py), where turning
    CSE off for the whole WebGPU build would change 38 of them.
    """
    updates = {gv: _inline_lets(func) for gv, func in mod.functions_items() if isinstance(func, tirx.PrimFunc)}
    for gv, func in updates.items():
        mod[gv] = func
    return mod


def _merge_state_kernel(dtype: str, symbol: str) -> tirx.PrimFunc:
    """kiln's attention-state merge (V, S) <- merge((V, S), (V_other, S_other)), S in log2 units.

    nn.llm's merge_state_inplace has every lane of a head read S and then store the merged S, with
    no barrier between: a lane that reads after another has stored scales with the merged value.
    GPUs that run a head's lanes in lockstep hide that; SwiftShader does not, and every prefill
    onto cached tokens (attention over the cache merged with attention over the new tokens) gave
    wrong outputs on WebGPU. Here a workgroup of 32 lanes takes one head of one token: all lanes
    read S, a barrier follows, and one lane stores it."""
    from tvm.script import tirx as T

    lanes = 32

    @T.prim_func(s_tir=True)
    def merge(v: T.handle, s: T.handle, v_other: T.handle, s_other: T.handle):
        T.func_attr({"tirx.is_scheduled": True, "global_symbol": symbol})
        n, h, d = T.int32(), T.int32(), T.int32()
        V = T.match_buffer(v, (n, h, d), dtype)
        S = T.match_buffer(s, (n, h), "float32")
        V2 = T.match_buffer(v_other, (n, h, d), dtype)
        S2 = T.match_buffer(s_other, (n, h), "float32")
        for bx in T.thread_binding(n, thread="blockIdx.x"):
            for by in T.thread_binding(h, thread="blockIdx.y"):
                for tx in T.thread_binding(lanes, thread="threadIdx.x"):
                    with T.sblock("merge"):
                        a = T.sblock_alloc_buffer((4,), "float32", scope="local")
                        a[0] = S[bx, by]
                        a[1] = S2[bx, by]
                        a[2] = T.max(a[0], a[1])
                        a[0] = T.exp2(a[0] - a[2])
                        a[1] = T.exp2(a[1] - a[2])
                        a[3] = a[0] + a[1]
                        for i in T.serial((d + lanes - 1) // lanes):
                            if i * lanes + tx < d:
                                V[bx, by, i * lanes + tx] = T.Cast(dtype, (
                                    T.Cast("float32", V[bx, by, i * lanes + tx]) * a[0]
                                    + T.Cast("float32", V2[bx, by, i * lanes + tx]) * a[1]) / a[3])
                        T.tvm_storage_sync("shared")
                        if tx == 0:
                            S[bx, by] = T.log2(a[3]) + a[2]

    return merge


@tvm.transform.module_pass(opt_level=0, name="kiln.RaceFreeMergeState")
def race_free_merge_state(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    """Replace nn.llm's GPU attention-state merge kernels by kiln's (see _merge_state_kernel)."""
    target = tvm.target.Target.current(allow_none=True)
    if target is None or "gpu" not in target.keys:
        return mod
    for gv, func in list(mod.functions_items()):
        if isinstance(func, tirx.PrimFunc) and gv.name_hint.startswith("tir_attention_merge_state"):
            # H and D are symbolic in nn.llm's kernel; only V's dtype is needed (from its script).
            dtype = "float16" if '"D"), "float16")' in func.script() else "float32"
            mod[gv] = _merge_state_kernel(dtype, gv.name_hint)
    return mod


def _backend(target):
    from tvm.relax.backend.cpu_generic import pipeline as cpu
    from tvm.relax.backend.gpu_generic import pipeline as gpu

    return gpu if "gpu" in target.keys else cpu


def legalize_and_schedule(target) -> list:
    """Relax ops -> fused TIR kernels, then scheduled kernels."""
    return [
        relax.transform.LegalizeOps(),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
        race_free_merge_state,
        flash_decode_attention,
        prefill_attention_pass,
        schedule_kernels,
        inline_let_exprs,
    ]


def relax_pipeline(target) -> tvm.transform.Pass:
    """The whole Relax pipeline for `target`, for relax.build(..., relax_pipeline=...)."""
    backend = _backend(target)

    @tvm.transform.module_pass(opt_level=0, name="kiln.RelaxPipeline")
    def pipeline(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        with target:
            passes = (backend.library_dispatch_passes(target) + legalize_and_schedule(target)
                      + backend.dataflow_lower_passes(target) + backend.finalize_passes(target))
            return tvm.transform.Sequential(passes)(mod)

    return pipeline


def scheduled_kernels(mod: tvm.IRModule, target) -> tvm.IRModule:
    """`mod` up to and including scheduling: Relax functions calling scheduled PrimFuncs."""
    backend = _backend(target)
    with target:
        passes = backend.library_dispatch_passes(target) + legalize_and_schedule(target)
        return tvm.transform.Sequential(passes)(mod)


def rule_report(mod: tvm.IRModule) -> dict[str, str]:
    """PrimFunc name -> the rule that scheduled it, for a module from `scheduled_kernels`."""
    return {gv.name_hint: str(func.attrs.get(SCHEDULE_ATTR, "none")) if func.attrs else "none"
            for gv, func in mod.functions_items() if isinstance(func, tirx.PrimFunc)}
