"""kiln's linear kernels (`matmul_nt`, model_defs/layers.py) on CPU targets: WebAssembly simd128 in
the browser, native LLVM in the tests. compiler/kernels/schedules.py's ScheduleKernels runs
LinearCPURule on every target without "gpu" in its keys.

A tile is `tokens` x `lanes` outputs: the `lanes` output rows as one SIMD vector (simd128 holds 4
floats), the tokens unrolled. Loops, outermost first: row tiles (`parallel`), token tiles, groups of
K, packed words, tokens (unrolled), the values of a word (unrolled), rows (the vector). Each packed
word of the tile's rows is loaded once and each of its values decoded once (LLVM shares the decoding
between the unrolled tokens), with one uniform shift for all lanes; the group's scale (and min) are
decoded once per group and tile. What shaped it, read in the wasm LLVM emits and in the x64 code V8
compiles from it, and timed with scripts/bench_runtime.py --kernels:

- Tile buffers (the tile's sums, its packed words, its group scales) are in "global" scope: TVM's
  LowerTVMBuiltin keeps a CPU allocation on the stack only in that scope, with a constant size under
  1 KB, and LLVM then holds it in registers. In "local" scope each is a TVMBackendAllocWorkspace
  call and lives in memory: a tile's words were stored lane by lane and read back as one vector.
- A symbolic token count (prefill) splits into tiles with a condition on every update, under which
  each token decoded the weights again and added in memory. The token-tile loop carries
  `pragma_loop_partition_hint`, so TVM's LoopPartition pass makes it two loops: the full tiles,
  without conditions, and the last tile. The sums then go straight into the output (or into the
  input of the epilogue, which runs after the loop nest): a tile buffer of a symbolic tile is sized
  min(n, 4), not a constant, which would mean a workspace call per tile inside the parallel loop.
  (A constant 4 x 4 stack tile, by transform_layout t -> t % 4, measured slower: with no stores
  between them LLVM emits all 32 x loads of a word first, and V8 spills them; the output's stores
  keep each load next to its use. In a kernel of a relax.build the buffers may alias, for TVM, so
  LLVM keeps those stores.)
  In the last tile each token is a condition of its own; with the tokens outside the values of a
  word, that condition covers a word's 8 products rather than each of them (a 1 to 3 token tail:
  ~2.6x faster, close to a decode step per token).
- The `group_*` stages (float16 scale and min of the `_2` formats) are computed per group and tile
  of rows, as LinearRule does on the GPU; as whole arrays before the product, decoding every row's
  scale and min cost a decode step as much time as the product itself.
- The loop over row tiles is `parallel` (TVM lowers it to TVMBackendParallelLaunch; a serial
  runtime runs it as one task): the tasks share nothing but the inputs and each writes its own
  rows, for every token, so a thread reuses each decoded weight across the tokens of a tile.
"""

from __future__ import annotations

from tvm import tirx

from kiln.kernels.schedules import _accumulate_locally, _linear_loops, _split_k, _words_once

STACK = "global"  # see the module docstring: the scope TVM puts on the stack on CPU targets


class LinearCPURule:
    """kiln's linear kernels for CPU targets (see the module docstring)."""

    def __init__(self, lanes: int = 4, tokens: int = 4):
        self.lanes, self.tokens = lanes, tokens

    def apply(self, func: tirx.PrimFunc, target, _tunable: bool):
        found = _linear_loops(func)
        if found is None:
            return None
        sch, mm, epilogues, group_stages, m, n, k, m_static, n_extent, k_extent = found
        lanes = self.lanes if n_extent % self.lanes == 0 else 1
        tokens = min(self.tokens, m_static) if m_static else self.tokens
        word, outer, kg, kw, ki = _split_k(sch, k, group_stages, k_extent)
        no, ni = sch.split(n, [None, lanes])
        mo, mi = sch.split(m, [None, tokens])
        sch.reorder(no, mo, *outer, kw, mi, ki, ni)
        if m_static is not None and m_static % tokens == 0:
            _accumulate_locally(sch, mm, epilogues, mo, STACK)
        else:
            sch.annotate(mo, "pragma_loop_partition_hint", 1)
        for stage in group_stages:
            sch.compute_at(stage, kg)
            sch.set_scope(stage, 0, STACK)
            if lanes > 1:
                sch.vectorize(sch.get_loops(stage)[-1])
        if word > 1:
            _words_once(sch, mm, kw, ki, STACK)
        sch.unroll(mi)
        if lanes > 1:
            sch.vectorize(ni)
        sch.parallel(no)
        sch.decompose_reduction(mm, kg)
        return sch
