"""kiln's flash-decoding attention kernel (compiler/kernels/attention_decode.py) on WebGPU in
Chromium, against NumPy and against nn.llm's decode kernel it replaces: the same paged KV cache
layout (pages shuffled so that the page table matters), GQA shapes of SmolLM2-135M, Llama 3.2 and Mistral,
one head per group, batches of sequences whose lengths cover an empty split, a partial last page,
one token and a context long enough for the full number of splits, and the sliding-window form
(with evicted tokens at the start of the first page) with inline RoPE, as TVM's KV cache runs it:
keys stored unrotated, rotated in the kernel at their positions."""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path

import numpy as np
from tvm import relax, tirx
from tvm.relax.frontend.nn.llm._decode_kernels import _attention_decode

from kiln.kernels.attention_decode import MAX_SPLITS, REPLACED, RULE_NAME, decode_attention, tile_tokens
from kiln.kernels.wasm_library import build_wasm_library, make_target
from kiln.testing.run_library import run_many_in_chromium
from kiln.testing.smoke import output_array, tensor_arg

PAGE = 16
# (query heads, KV heads, head dim): SmolLM2-135M, Llama 3.2 1B, plain multi-head at D 128
SHAPES = [(9, 3, 64), (32, 8, 64), (4, 4, 128), (4, 2, 128)]
# per batch: the sequences' lengths. [300, 3]: several splits, of which the short sequence fills
# one; the last: all MAX_SPLITS splits of whole tiles at every shape's tile, the last tile partial.
LENGTHS = [[1], [17, 5], [300, 3], [max(tile_tokens(d) for _, _, d in SHAPES) * MAX_SPLITS - 5]]
SM_SCALE = 0.125
WINDOW_OFFSET = 5
ROPE_THETA = 10000.0
K_POSITION = 40  # the sliding-window sequences' first cached key is at this position


def kernel_module():
    """Per shape, plain and sliding-window (`_sw`), `both_<shape>`: kiln's decode kernel and nn.llm's,
    each called in place on its own (output, lse) pair, on the same inputs sent once."""
    target = make_target("webgpu")
    bb = relax.BlockBuilder()
    for (h_qo, h_kv, d), sliding_window in itertools.product(SHAPES, (False, True)):
        tag = f"{h_qo}_{h_kv}_{d}" + ("_sw" if sliding_window else "")
        with target:
            # One tile per split at least (models get MIN_SPLIT_TOKENS' worth): the split logic whole at test sizes.
            kernels = {"kiln": decode_attention(h_qo, h_kv, d, "float32", PAGE, sliding_window, f"kiln_decode_{tag}", {},
                                                tiles_per_split=1),
                       "nnllm": _attention_decode(h_kv, h_qo, d, "float32", sliding_window, {}, target)}
        b, p, n = (tirx.Var(x, "int64") for x in "bpn")
        shapes = [(b, h_qo, d), (p, 2, h_kv, PAGE, d), (b + 1,), (n,), ((3, b) if sliding_window else (b,)),
                  (b,), (b,), (b, h_qo, d), (b, h_qo), (b, h_qo, d), (b, h_qo)]
        dtypes = ["float32", "float32"] + ["int32"] * 5 + ["float32"] * 4
        params = [relax.Var(f"a{i}", relax.TensorType(s, t)) for i, (s, t) in enumerate(zip(shapes, dtypes))]
        # rotary_mode: inline RoPE (1) for the sliding-window form, as the KV cache calls it
        scalars = [relax.prim_value(tirx.IntImm("int32", int(sliding_window))), relax.prim_value(tirx.FloatImm("float32", 1.0)),
                   relax.prim_value(tirx.FloatImm("float32", ROPE_THETA)), relax.prim_value(tirx.FloatImm("float32", SM_SCALE))]
        with bb.function(f"both_{tag}", params):
            outputs = []
            for (which, kernel), (o, l) in zip(kernels.items(), [(7, 8), (9, 10)]):
                gv = bb.add_func(kernel.with_attr("global_symbol", f"{which}_decode_{tag}"), f"{which}_decode_{tag}")
                pair = bb.emit(relax.call_tir_inplace(gv, relax.Tuple(params[:7] + [params[o], params[l]] + scalars),
                                                      [7, 8], [relax.TensorType(shapes[o], "float32"),
                                                               relax.TensorType(shapes[l], "float32")]))
                outputs += [bb.emit(relax.TupleGetItem(pair, 0)), bb.emit(relax.TupleGetItem(pair, 1))]
            bb.emit_func_output(relax.Tuple(outputs))
    return bb.get()


def rope(x, position):
    """RoPE on the last axis, rotating its halves (nn.llm's form), at `position` (broadcast over x's
    leading axes but the last)."""
    half = x.shape[-1] // 2
    angle = np.asarray(position, "float64")[..., None] * ROPE_THETA ** (-np.arange(half) * 2.0 / x.shape[-1])
    cos, sin = np.cos(angle), np.sin(angle)
    lo, hi = x[..., :half].astype("float64"), x[..., half:].astype("float64")
    return np.concatenate([lo * cos - hi * sin, hi * cos + lo * sin], axis=-1)


def paged_inputs(rng, lengths, h_qo, h_kv, d, sliding_window):
    """Random queries and K/V in a shuffled page pool; the reference output and lse (log2 units).
    With a sliding window, the first page's first WINDOW_OFFSET slots are evicted tokens (no sink):
    the sequence is the `lengths` tokens after them."""
    offset = WINDOW_OFFSET if sliding_window else 0
    pages_per_seq = [max(1, -(-(n + offset) // PAGE)) for n in lengths]
    total = sum(pages_per_seq)
    order = rng.permutation(total + 3).astype("int32")  # 3 spare pages the table never names
    pool = rng.standard_normal((total + 3, 2, h_kv, PAGE, d)).astype("float32")
    q = rng.standard_normal((len(lengths), h_qo, d)).astype("float32")
    indptr = np.concatenate([[0], np.cumsum(pages_per_seq)]).astype("int32")
    values = order[:total]
    last = np.array([n + offset - (k - 1) * PAGE for n, k in zip(lengths, pages_per_seq)], "int32")
    # Sliding window: [last page's length, window offset, sink size] per sequence.
    length_info = np.stack([last, np.full_like(last, offset), np.zeros_like(last)]) if sliding_window else last
    out = np.zeros((len(lengths), h_qo, d), "float32")
    lse = np.zeros((len(lengths), h_qo), "float32")
    group = h_qo // h_kv
    # Sliding window: RoPE in the kernel, keys at K_POSITION + t, the query after the last key.
    k_position = np.full(len(lengths), K_POSITION if sliding_window else 0, "int32")
    q_position = k_position + np.array(lengths, "int32") - 1
    for b, n in enumerate(lengths):
        rows = [(values[indptr[b] + t // PAGE], t % PAGE) for t in range(offset, offset + n)]
        k = np.stack([pool[pg, 0, :, slot] for pg, slot in rows], axis=1)  # (h_kv, n, d)
        v = np.stack([pool[pg, 1, :, slot] for pg, slot in rows], axis=1)
        qb = q[b].astype("float64")
        if sliding_window:
            k = rope(k, k_position[b] + np.arange(n))
            qb = rope(qb, q_position[b])
        for h in range(h_qo):
            s = (k[h // group] @ qb[h]) * SM_SCALE * np.log2(np.e)
            w = np.exp2(s - s.max())
            out[b, h] = (w @ v[h // group]) / w.sum()
            lse[b, h] = s.max() + np.log2(w.sum())
    args = [q, pool, indptr, values, length_info, k_position, q_position] + [np.zeros_like(out), np.zeros_like(lse)] * 2
    return args, out, lse


def test_decode_attention_on_webgpu(tmp_path):
    library = build_wasm_library(kernel_module(), "webgpu", tmp_path / "decode_webgpu.wasm")
    rng = np.random.default_rng(3)
    cases, requests = [], []
    for (h_qo, h_kv, d), sliding_window in itertools.product(SHAPES, (False, True)):
        tag = f"{h_qo}_{h_kv}_{d}" + ("_sw" if sliding_window else "")
        for lengths in LENGTHS:
            args, want_out, want_lse = paged_inputs(rng, lengths, h_qo, h_kv, d, sliding_window)
            cases.append((f"{tag}, lengths {lengths}", want_out, want_lse))
            requests.append({"func": f"both_{tag}", "inputs": [tensor_arg(x) for x in args]})
    results = run_many_in_chromium(library, "webgpu", requests, timeout_s=600)
    for (label, want_out, want_lse), result in zip(cases, results):
        kiln_out, kiln_lse, nnllm_out, nnllm_lse = (output_array(o) for o in result["outputs"])
        # With RoPE in the kernel the scores carry WGSL's sin/cos error (up to 2^-11 absolute), which
        # NumPy's float64 RoPE does not: looser against NumPy, as tight as without against nn.llm's.
        scale = 100 if "_sw" in label else 1
        np.testing.assert_allclose(kiln_out, want_out, rtol=0, atol=2e-5 * scale, err_msg=f"output, {label}")
        np.testing.assert_allclose(kiln_lse, want_lse, rtol=0, atol=2e-4 * scale, err_msg=f"lse, {label}")
        # nn.llm's kernel on the same inputs: the one kiln's replaces computes the same
        np.testing.assert_allclose(kiln_out, nnllm_out, rtol=0, atol=2e-5, err_msg=f"vs nn.llm, {label}")
        np.testing.assert_allclose(kiln_lse, nnllm_lse, rtol=0, atol=2e-4, err_msg=f"lse vs nn.llm, {label}")


def test_models_built_for_webgpu_use_it():
    """The KV cache of a model built for WebGPU calls kiln's kernels (the sliding-window form too),
    and one built for WASM keeps nn.llm's CPU kernel."""
    from kiln.checkpoint.folder import load_checkpoint
    from kiln.kernels.model_module import build_model_module
    from kiln.kernels.schedules import rule_report, scheduled_kernels
    from kiln.testing.synthetic import make_checkpoint
    from kiln.weights.quantize import get_quantization

    for variant in ("llama3-tiny", "mistral-tiny"):
        ckpt = load_checkpoint(make_checkpoint(variant, Path(tempfile.mkdtemp()) / variant))
        for backend in ("webgpu", "wasm"):
            target = make_target(backend)
            model = build_model_module(ckpt.family, ckpt.model_config, get_quantization("q4f32_1"), target,
                                       context_window=128, prefill_chunk=32, with_sampling=False)
            report = rule_report(scheduled_kernels(model.mod, target))
            replaced = {name: report.get(name) for name in REPLACED}
            if backend == "webgpu":
                assert replaced == {name: RULE_NAME for name in REPLACED}, (variant, replaced)
            else:
                assert set(replaced.values()) == {None}, (variant, replaced)
