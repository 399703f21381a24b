"""The attention-state merge kernel of the paged KV cache, as kiln builds it for WebGPU (run in
Chromium). A prefill onto tokens already cached attends over the cache and over the new tokens
separately and merges the two (V, log2-sum-exp S) pairs with this kernel; nn.llm's version raced on
S under SwiftShader and made every such prefill (a chat's second turn, a prompt longer than one
prefill chunk) wrong on WebGPU. compiler/kernels/schedules.py, race_free_merge_state, replaces it."""

from __future__ import annotations

import numpy as np
from tvm import relax, tirx
from tvm.relax.frontend.nn.llm._decode_kernels import _merge_state_inplace

from kiln.testing.run_library import run_in_chromium
from kiln.testing.smoke import output_array, tensor_arg
from kiln.kernels.wasm_library import build_wasm_library, make_target

# SmolLM2-135M's 9 query heads (not a power of two) and a head count that splits over workgroups.
SHAPES = [(9, 64), (4, 128)]


def merge_module():
    target = make_target("webgpu")
    bb = relax.BlockBuilder()
    n = tirx.Var("n", "int64")
    for heads, d in SHAPES:
        name = f"tir_attention_merge_state_{heads}_{d}"  # the name the KV cache gives it, suffixed
        with target:
            kernel = _merge_state_inplace(heads, d, "float32", target, name)
        gv = bb.add_func(kernel, name)
        v, s, v2, s2 = (relax.Var(x, relax.TensorType(shape, "float32")) for x, shape in
                        [("v", (n, heads, d)), ("s", (n, heads)), ("v2", (n, heads, d)), ("s2", (n, heads))])
        with bb.function(f"merge_{heads}_{d}", [v, s, v2, s2]):
            out = bb.emit(relax.call_tir_inplace(gv, relax.Tuple([v, s, v2, s2]), [0, 1], [
                relax.TensorType((n, heads, d), "float32"), relax.TensorType((n, heads), "float32")]))
            bb.emit_func_output(out)
    return bb.get()


def test_merge_state_on_webgpu(tmp_path):
    library = build_wasm_library(merge_module(), "webgpu", tmp_path / "merge_webgpu.wasm")
    rng = np.random.default_rng(1)
    for heads, d in SHAPES:
        for n in (1, 8):
            v, v2 = (rng.standard_normal((n, heads, d)).astype("float32") for _ in range(2))
            s, s2 = ((rng.standard_normal((n, heads)) * 3).astype("float32") for _ in range(2))
            result = run_in_chromium(library, {"device": "webgpu", "func": f"merge_{heads}_{d}",
                                               "inputs": [tensor_arg(x) for x in (v, s, v2, s2)]})
            got_v, got_s = (output_array(out) for out in result["outputs"])
            m = np.maximum(s, s2)
            a, b = np.exp2(s - m), np.exp2(s2 - m)
            want_v = (v * a[..., None] + v2 * b[..., None]) / (a + b)[..., None]
            want_s = m + np.log2(a + b)
            np.testing.assert_allclose(got_v, want_v, rtol=0, atol=1e-5, err_msg=f"V, {heads}x{d}, n={n}")
            np.testing.assert_allclose(got_s, want_s, rtol=0, atol=1e-5, err_msg=f"S, {heads}x{d}, n={n}")
