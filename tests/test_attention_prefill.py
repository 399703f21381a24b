"""kiln's prefill attention kernels (compiler/kernels/attention_prefill.py) on WebGPU in Chromium,
against NumPy and against the nn.llm kernels they replace, on the same inputs:

- ragged (a chunk's new tokens against themselves, causal), in the plain form and with inline RoPE
  (keys and queries rotated in the kernel at their positions, as a cache that supports a sliding
  window calls it);
- paged (the new tokens against the sequence's cached keys in shuffled pages, partial last pages),
  without the mask (as TVM's KV cache calls it: the cache holds only earlier tokens) and with it.

Shapes: SmolLM2-135M, Llama 3.2 1B, plain multi-head at D 128 and a 2-head group at D 128. Batches
mix lengths so that workgroups cut sequences into whole row tiles (one token, a partial tile, a
sequence over several tiles and several key tiles)."""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path

import numpy as np
from test_attention_decode import PAGE, ROPE_THETA, SHAPES, SM_SCALE, rope
from tvm import relax, tirx
from tvm.relax.frontend.nn.llm._prefill_kernels import _attention_prefill, _attention_prefill_ragged

from kiln.kernels.attention_prefill import PAGED, RAGGED, RULE_NAME, prefill_attention
from kiln.kernels.wasm_library import build_wasm_library, make_target
from kiln.testing.run_library import run_many_in_chromium
from kiln.testing.smoke import output_array, tensor_arg

RAGGED_LENGTHS = [[1], [17, 5], [70, 1, 33], [130]]
# (new tokens, cached tokens) per sequence
PAGED_LENGTHS = [[(1, 5)], [(17, 40), (4, 16)], [(33, 100)]]
K_POSITION = 40  # the inline-RoPE sequences' first key is at this position
FORMS = ["ragged", "ragged_rope", "paged", "paged_causal"]


def kernel_module():
    """Per shape and form, `both_<tag>`: kiln's kernel and nn.llm's, each called in place on its own
    (output, lse) pair, on the same inputs sent once."""
    target = make_target("webgpu")
    bb = relax.BlockBuilder()
    for (h_qo, h_kv, d), form in itertools.product(SHAPES, FORMS):
        tag = f"{h_qo}_{h_kv}_{d}_{form}"
        paged = form.startswith("paged")
        with target:
            if paged:
                kernels = {"kiln": prefill_attention(h_qo, h_kv, d, "float32", True, f"kiln_{tag}", None, PAGE),
                           "nnllm": _attention_prefill(h_kv, h_qo, d, "float32", False, {}, target)}
            else:
                kernels = {"kiln": prefill_attention(h_qo, h_kv, d, "float32", False, f"kiln_{tag}", {}),
                           "nnllm": _attention_prefill_ragged(h_kv, h_qo, d, d, "float32", {}, target)}
        n, b, p, nnz = (tirx.Var(x, "int64") for x in ("n", "b", "p", "nnz"))
        if paged:  # q, q_indptr, pages, page_indptr, page_values, length_info, k_rope_pos_offset, q_rope_position
            shapes = [(n, h_qo, d), (b + 1,), (p, 2, h_kv, PAGE, d), (b + 1,), (nnz,), (b,), (b,), (n,)]
            dtypes = ["float32", "int32", "float32"] + ["int32"] * 5
        else:  # q, q_indptr, k, v, kv_indptr, q_rope_position, k_rope_pos_offset
            shapes = [(n, h_qo, d), (b + 1,), (n, h_kv, d), (n, h_kv, d), (b + 1,), (n,), (b,)]
            dtypes = ["float32", "int32", "float32", "float32", "int32", "int32", "int32"]
        shapes += [(n, h_qo, d), (n, h_qo), (n, h_qo, d), (n, h_qo)]
        dtypes += ["float32"] * 4
        params = [relax.Var(f"a{i}", relax.TensorType(s, t)) for i, (s, t) in enumerate(zip(shapes, dtypes))]
        causal = form in ("ragged", "ragged_rope", "paged_causal")
        scalars = [relax.prim_value(tirx.IntImm("int32", int(causal))),
                   relax.prim_value(tirx.IntImm("int32", int(form == "ragged_rope"))),
                   relax.prim_value(tirx.FloatImm("float32", 1.0)), relax.prim_value(tirx.FloatImm("float32", ROPE_THETA)),
                   relax.prim_value(tirx.FloatImm("float32", SM_SCALE))]
        first_out = len(shapes) - 4
        with bb.function(f"both_{tag}", params):
            outputs = []
            for (which, kernel), (o, l) in zip(kernels.items(), [(first_out, first_out + 1), (first_out + 2, first_out + 3)]):
                gv = bb.add_func(kernel.with_attr("global_symbol", f"{which}_{tag}"), f"{which}_{tag}")
                pair = bb.emit(relax.call_tir_inplace(
                    gv, relax.Tuple(params[:first_out] + [params[o], params[l]] + scalars), [first_out, first_out + 1],
                    [relax.TensorType(shapes[o], "float32"), relax.TensorType(shapes[l], "float32")]))
                outputs += [bb.emit(relax.TupleGetItem(pair, 0)), bb.emit(relax.TupleGetItem(pair, 1))]
            bb.emit_func_output(relax.Tuple(outputs))
    return bb.get()


def reference(q, k, v, causal):
    """Attention of q [n, h_qo, d] over k, v [m, h_kv, d] (float64), the mask aligning the last query
    with the last key; output and log2-sum-exp of scores in log2 units."""
    n, h_qo, _ = q.shape
    m, h_kv, _ = k.shape
    group = h_qo // h_kv
    out, lse = np.zeros(q.shape), np.zeros((n, h_qo))
    for h in range(h_qo):
        s = (q[:, h] @ k[:, h // group].T) * SM_SCALE * np.log2(np.e)
        if causal:
            s[np.arange(m)[None, :] > np.arange(n)[:, None] + m - n] = -np.inf
        top = s.max(axis=1, keepdims=True)
        w = np.exp2(s - top)
        out[:, h] = (w @ v[:, h // group]) / w.sum(axis=1, keepdims=True)
        lse[:, h] = top[:, 0] + np.log2(w.sum(axis=1))
    return out, lse


def ragged_inputs(rng, lengths, h_qo, h_kv, d, rotated):
    q = rng.standard_normal((sum(lengths), h_qo, d)).astype("float32")
    k = rng.standard_normal((sum(lengths), h_kv, d)).astype("float32")
    v = rng.standard_normal((sum(lengths), h_kv, d)).astype("float32")
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype("int32")
    k_position = np.full(len(lengths), K_POSITION if rotated else 0, "int32")
    q_position = np.concatenate([k_position[i] + np.arange(n) for i, n in enumerate(lengths)]).astype("int32")
    outs, lses = [], []
    for i in range(len(lengths)):
        rows = slice(indptr[i], indptr[i + 1])
        qi, ki = q[rows].astype("float64"), k[rows].astype("float64")
        if rotated:
            qi = rope(qi, q_position[rows][:, None])
            ki = rope(ki, q_position[rows][:, None])
        out, lse = reference(qi, ki, v[rows].astype("float64"), causal=True)
        outs.append(out)
        lses.append(lse)
    zeros = [np.zeros_like(q), np.zeros(q.shape[:2], "float32")]
    return [q, indptr, k, v, indptr, q_position, k_position] + zeros * 2, np.concatenate(outs), np.concatenate(lses)


def paged_inputs(rng, pairs, h_qo, h_kv, d, causal):
    """New tokens' queries against cached keys in a shuffled page pool (3 spare pages never named)."""
    pages_per_seq = [-(-m // PAGE) for _, m in pairs]
    total = sum(pages_per_seq)
    order = rng.permutation(total + 3).astype("int32")
    pool = rng.standard_normal((total + 3, 2, h_kv, PAGE, d)).astype("float32")
    n_all = sum(n for n, _ in pairs)
    q = rng.standard_normal((n_all, h_qo, d)).astype("float32")
    q_indptr = np.concatenate([[0], np.cumsum([n for n, _ in pairs])]).astype("int32")
    page_indptr = np.concatenate([[0], np.cumsum(pages_per_seq)]).astype("int32")
    values = order[:total]
    last = np.array([m - (pp - 1) * PAGE for (_, m), pp in zip(pairs, pages_per_seq)], "int32")
    outs, lses = [], []
    for i, (_, m) in enumerate(pairs):
        slots = [(values[page_indptr[i] + t // PAGE], t % PAGE) for t in range(m)]
        k = np.stack([pool[pg, 0, :, s] for pg, s in slots]).astype("float64")
        v = np.stack([pool[pg, 1, :, s] for pg, s in slots]).astype("float64")
        out, lse = reference(q[q_indptr[i]:q_indptr[i + 1]].astype("float64"), k, v, causal)
        outs.append(out)
        lses.append(lse)
    zeros = [np.zeros_like(q), np.zeros(q.shape[:2], "float32")]
    args = [q, q_indptr, pool, page_indptr, values, last, np.zeros(len(pairs), "int32"),
            np.zeros(n_all, "int32")] + zeros * 2
    return args, np.concatenate(outs), np.concatenate(lses)


def test_prefill_attention_on_webgpu(tmp_path):
    library = build_wasm_library(kernel_module(), "webgpu", tmp_path / "prefill_webgpu.wasm")
    rng = np.random.default_rng(5)
    cases, requests = [], []
    for (h_qo, h_kv, d), form in itertools.product(SHAPES, FORMS):
        tag = f"{h_qo}_{h_kv}_{d}_{form}"
        for lengths in (PAGED_LENGTHS if form.startswith("paged") else RAGGED_LENGTHS):
            if form.startswith("paged"):
                args, want_out, want_lse = paged_inputs(rng, lengths, h_qo, h_kv, d, form == "paged_causal")
            else:
                args, want_out, want_lse = ragged_inputs(rng, lengths, h_qo, h_kv, d, form == "ragged_rope")
            cases.append((f"{tag}, lengths {lengths}", want_out, want_lse))
            requests.append({"func": f"both_{tag}", "inputs": [tensor_arg(x) for x in args]})
    results = run_many_in_chromium(library, "webgpu", requests, timeout_s=600)
    for (label, want_out, want_lse), result in zip(cases, results):
        kiln_out, kiln_lse, nnllm_out, nnllm_lse = (output_array(o) for o in result["outputs"])
        # RoPE in the kernel carries WGSL's sin/cos error, which NumPy's float64 RoPE does not
        scale = 100 if "_rope" in label else 1
        np.testing.assert_allclose(kiln_out, want_out, rtol=0, atol=2e-5 * scale, err_msg=f"output, {label}")
        np.testing.assert_allclose(kiln_lse, want_lse, rtol=0, atol=2e-4 * scale, err_msg=f"lse, {label}")
        np.testing.assert_allclose(kiln_out, nnllm_out, rtol=0, atol=2e-5 * scale, err_msg=f"vs nn.llm, {label}")
        np.testing.assert_allclose(kiln_lse, nnllm_lse, rtol=0, atol=2e-4 * scale, err_msg=f"lse vs nn.llm, {label}")


def test_models_built_for_webgpu_use_it():
    """The KV cache of a model built for WebGPU calls kiln's prefill kernels (a sliding-window model
    too, for the ragged one, with inline RoPE there only), and one built for WASM keeps nn.llm's CPU
    kernels."""
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
            scheduled = scheduled_kernels(model.mod, target)
            report = rule_report(scheduled)
            replaced = {name: report.get(name) for name in (RAGGED, PAGED)}
            if backend == "webgpu":
                assert replaced == {RAGGED: RULE_NAME, PAGED: RULE_NAME}, (variant, replaced)
                # inline RoPE (cos/sin in the kernel) only where the cache can ask for it: Mistral's window
                ragged = next(f for gv, f in scheduled.functions_items() if gv.name_hint == RAGGED)
                assert ("T.cos" in ragged.script()) == (variant == "mistral-tiny"), variant
            else:  # (the CPU ragged kernel has the same name)
                assert RULE_NAME not in replaced.values(), (variant, replaced)
