"""Llama 3.x RoPE (llama3 scaling) through kiln's pipelines. TVM 0.27's TIR common-subexpression
elimination mishandles Let expressions, which nn.llm's RoPE is made of, and broke the WebGPU build
of every Llama 3.1/3.2 head size; kiln inlines them first (compiler/kernels/schedules.py, inline_let_exprs).
Here: TVM still needs that (a canary for a TVM upgrade), no Let reaches CSE in any kernel of a
Llama 3 model for head sizes 32 to 128, and the RoPE kernel, built for WebGPU (run in Chromium) and
WASM (run in Node), equals transformers' llama3 RoPE."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import tvm
import tvm_ffi
from tvm import relax, tirx
from tvm.relax.frontend.nn.llm.position_embedding import llama_rope_with_position_map

from kiln.kernels import schedules
from kiln.kernels.model_module import build_model_module
from kiln.weights.quantize import get_quantization
from kiln.testing.run_library import run_in_chromium, run_in_node
from kiln.testing.smoke import output_array, tensor_arg
from kiln.kernels.wasm_library import build_wasm_library, make_target
from kiln.model_defs.registry import ARCHITECTURES

THETA = 500000.0
# Llama 3.2's scaling (3.1 has factor 8).
SCALING = {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
           "original_max_position_embeddings": 8192}
Q_HEADS, KV_HEADS = 4, 2
# From the first position to past original_max_position_embeddings.
POSITIONS = [0, 1, 2, 31, 500, 4097, 8191, 8200]


def rope_module(head_dims) -> tvm.IRModule:
    """One function rope_<d>(qkv, positions) -> (q, k, v) per head size: nn.llm's RoPE kernel, as
    the model's KV cache uses it, with rotation on."""
    bb = relax.BlockBuilder()
    n = tirx.Var("n", "int64")
    for d in head_dims:
        kernel = llama_rope_with_position_map(THETA, 1.0, d, Q_HEADS, KV_HEADS, "float32", SCALING, d)
        kernel = kernel.specialize({kernel.params[-1]: tirx.IntImm("int64", 1)})  # apply_rope
        kernel = kernel.with_attr("global_symbol", f"llama_rope_{d}")
        gv = bb.add_func(kernel, f"llama_rope_{d}")
        qkv = relax.Var("qkv", relax.TensorType((n, Q_HEADS + 2 * KV_HEADS, d), "float32"))
        positions = relax.Var("positions", relax.TensorType((n,), "int32"))
        with bb.function(f"rope_{d}", [qkv, positions]):
            out = bb.emit(relax.call_tir(gv, relax.Tuple([qkv, positions]), [
                relax.TensorType((n, heads, d), "float32") for heads in (Q_HEADS, KV_HEADS, KV_HEADS)]))
            bb.emit_func_output(out)
    return bb.get()


def pipeline_without_inlining(monkeypatch):
    stock = schedules.legalize_and_schedule
    monkeypatch.setattr(schedules, "legalize_and_schedule",
                        lambda target: [p for p in stock(target) if p is not schedules.inline_let_exprs])


def test_tvm_cse_still_breaks_llama3_rope_without_inlining(monkeypatch):
    pipeline_without_inlining(monkeypatch)
    target = make_target("webgpu")
    with pytest.raises(Exception, match="has been used before definition") as failure:
        relax.build(rope_module([64]), target=target, relax_pipeline=schedules.relax_pipeline(target))
    # If TVM's CSE is fixed, this fails: kiln's inline_let_exprs can then go.
    assert "cse_v" in str(failure.value)


def lets_in(mod: tvm.IRModule) -> dict[str, int]:
    counts = {}
    for gv, func in mod.functions_items():
        found = []
        tvm_ffi.structural_walk(func, [(tirx.Let, found.append)])
        if found:
            counts[gv.name_hint] = len(found)
    return counts


@pytest.mark.parametrize("head_dim", [32, 64, 128])
def test_llama3_model_builds_for_webgpu_and_no_let_reaches_cse(head_dim):
    hf = {"architectures": ["LlamaForCausalLM"], "hidden_size": 2048, "intermediate_size": 256,
          "num_hidden_layers": 1, "num_attention_heads": 2048 // head_dim, "num_key_value_heads": 512 // head_dim,
          "head_dim": head_dim, "vocab_size": 256, "rms_norm_eps": 1e-5, "rope_theta": THETA,
          "rope_scaling": SCALING, "tie_word_embeddings": True, "max_position_embeddings": 131072}
    family = ARCHITECTURES["LlamaForCausalLM"]
    target = make_target("webgpu")
    model = build_model_module(family, family.config_class.from_hf(hf), get_quantization("q4f32_1"), target,
                               context_window=256, prefill_chunk=64)
    seen = {}

    @tvm.instrument.pass_instrument
    class LetsBeforeCSE:
        def run_before_pass(self, mod, info):
            if info.name == "tirx.CommonSubexprElim":
                seen.update(lets_in(mod))
                seen.setdefault("(CSE ran)", 0)

    with tvm.transform.PassContext(instruments=[LetsBeforeCSE()]):
        relax.build(model.mod, target=target, relax_pipeline=schedules.relax_pipeline(target))
    assert seen == {"(CSE ran)": 0}, f"Let expressions reached TVM's CSE: {seen}"


def transformers_rope(qkv: np.ndarray, positions: np.ndarray, head_dim: int) -> list[np.ndarray]:
    """q, k and v as transformers' Llama computes them from the fused projection output."""
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    config = LlamaConfig(hidden_size=Q_HEADS * head_dim, num_attention_heads=Q_HEADS, num_key_value_heads=KV_HEADS,
                         head_dim=head_dim, max_position_embeddings=131072,
                         rope_parameters={"rope_theta": THETA, **SCALING})
    inv_freq, _ = ROPE_INIT_FUNCTIONS["llama3"](config, "cpu")
    angles = torch.from_numpy(positions).double()[:, None] * inv_freq.double()[None, :]
    emb = torch.cat([angles, angles], dim=-1)[None]  # (1, n, d)
    x = torch.from_numpy(qkv).double().transpose(0, 1)[None]  # (1, heads, n, d)
    q, k = apply_rotary_pos_emb(x[:, :Q_HEADS], x[:, Q_HEADS:Q_HEADS + KV_HEADS], emb.cos(), emb.sin())
    v = x[:, Q_HEADS + KV_HEADS:]
    return [t[0].transpose(0, 1).numpy() for t in (q, k, v)]


@pytest.mark.parametrize("target", ["webgpu", "wasm"])
def test_llama3_rope_kernel_matches_transformers(target, tmp_path, report):
    head_dims = (64, 128)
    library = build_wasm_library(rope_module(head_dims), target, tmp_path / f"rope_{target}.wasm")
    run, device = (run_in_chromium, "webgpu") if target == "webgpu" else (run_in_node, "cpu")
    rng = np.random.default_rng(3)
    positions = np.array(POSITIONS, dtype="int32")
    for d in head_dims:
        qkv = rng.standard_normal((len(positions), Q_HEADS + 2 * KV_HEADS, d)).astype("float32")
        result = run(library, {"device": device, "func": f"rope_{d}",
                               "inputs": [tensor_arg(qkv), tensor_arg(positions)]})
        got = [output_array(out) for out in result["outputs"]]
        want = transformers_rope(qkv, positions, d)
        diff = max(np.abs(g - w).max() for g, w in zip(got, want))
        near = max(np.abs(g - w)[positions <= 500].max() for g, w in zip(got, want))
        report(f"\n[llama3 RoPE {target} head_dim {d}] max|kiln - transformers| {near:.1e} at positions <= 500, "
               f"{diff:.1e} up to {positions.max()}")
        np.testing.assert_array_equal(got[2], want[2].astype("float32"))  # v passes through
        # WebGPU's cos and sin may err by 2^-11 (SwiftShader does, from position 1 on); far positions
        # add the rounding of float32 angles of ~8000 rad on either target.
        assert near <= (2e-3 if target == "webgpu" else 1e-4) and diff <= 5e-3
