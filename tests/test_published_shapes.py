"""The shapes people use: the published config.json of seven popular checkpoints, each cut to one or
two layers (and, where the full size would only slow CI down, a smaller vocab_size and
intermediate_size; every other field as published), with random weights and a synthetic tokenizer
(compiler/testing/synthetic.py). Each builds for WebGPU and WASM at q4f32_1, and one greedy step on WASM in
Node equals transformers running the same int4 weights (dequantized by NumPy, as in
test_numerics.py)."""

from __future__ import annotations

import json
import subprocess
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from kiln import toolchain
from kiln.bundle.build import BuildOptions, build_bundle
from kiln.testing.synthetic import SYNTHETIC_MARK, make_checkpoint_from_config
from kiln.weights.tensor_cache import read_tensor_cache
from test_numerics import dequantized_state_dict
from greedy_runs import KILN_MJS, RUNNER

# The config.json files as published on the Hugging Face hub (written down from them; no network here).
PUBLISHED = {
    "Llama-3.2-1B-Instruct": {
        "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
        "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "head_dim": 64, "hidden_act": "silu",
        "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 8192,
        "max_position_embeddings": 131072, "mlp_bias": False, "model_type": "llama", "num_attention_heads": 32,
        "num_hidden_layers": 16, "num_key_value_heads": 8, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
        "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                         "original_max_position_embeddings": 8192, "rope_type": "llama3"},
        "rope_theta": 500000.0, "tie_word_embeddings": True, "torch_dtype": "bfloat16",
        "transformers_version": "4.45.0.dev0", "use_cache": True, "vocab_size": 128256,
    },
    "Llama-3.1-8B-Instruct": {
        "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
        "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "hidden_act": "silu",
        "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 14336,
        "max_position_embeddings": 131072, "mlp_bias": False, "model_type": "llama", "num_attention_heads": 32,
        "num_hidden_layers": 32, "num_key_value_heads": 8, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
        "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 8192, "rope_type": "llama3"},
        "rope_theta": 500000.0, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
        "transformers_version": "4.43.0.dev0", "use_cache": True, "vocab_size": 128256,
    },
    "TinyLlama-1.1B-Chat-v1.0": {
        "architectures": ["LlamaForCausalLM"], "attention_bias": False, "bos_token_id": 1, "eos_token_id": 2,
        "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 5632,
        "max_position_embeddings": 2048, "model_type": "llama", "num_attention_heads": 32,
        "num_hidden_layers": 22, "num_key_value_heads": 4, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
        "rope_scaling": None, "rope_theta": 10000.0, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
        "transformers_version": "4.35.0", "use_cache": True, "vocab_size": 32000,
    },
    "SmolLM2-360M-Instruct": {
        "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
        "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu", "hidden_size": 960,
        "initializer_range": 0.02, "intermediate_size": 2560, "is_llama_config": True,
        "max_position_embeddings": 8192, "model_type": "llama", "num_attention_heads": 15,
        "num_hidden_layers": 32, "num_key_value_heads": 5, "pad_token_id": 2, "pretraining_tp": 1,
        "rms_norm_eps": 1e-05, "rope_interleaved": False, "rope_scaling": None, "rope_theta": 100000,
        "tie_word_embeddings": True, "torch_dtype": "bfloat16",
        "transformers.js_config": {"kv_cache_dtype": {"q4f16": "float16", "fp16": "float16"}},
        "transformers_version": "4.42.3", "use_cache": True, "vocab_size": 49152,
    },
    "Qwen2.5-0.5B-Instruct": {
        "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
        "eos_token_id": 151645, "hidden_act": "silu", "hidden_size": 896, "initializer_range": 0.02,
        "intermediate_size": 4864, "max_position_embeddings": 32768, "max_window_layers": 21,
        "model_type": "qwen2", "num_attention_heads": 14, "num_hidden_layers": 24, "num_key_value_heads": 2,
        "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": 32768, "tie_word_embeddings": True,
        "torch_dtype": "bfloat16", "transformers_version": "4.43.1", "use_cache": True,
        "use_sliding_window": False, "vocab_size": 151936,
    },
    "Mistral-7B-Instruct-v0.3": {
        "architectures": ["MistralForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 1, "eos_token_id": 2,
        "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 14336,
        "max_position_embeddings": 32768, "model_type": "mistral", "num_attention_heads": 32,
        "num_hidden_layers": 32, "num_key_value_heads": 8, "rms_norm_eps": 1e-05, "rope_theta": 1000000.0,
        "sliding_window": None, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
        "transformers_version": "4.42.0.dev0", "use_cache": True, "vocab_size": 32768,
    },
    "Mistral-7B-v0.1": {
        "architectures": ["MistralForCausalLM"], "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
        "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 14336,
        "max_position_embeddings": 32768, "model_type": "mistral", "num_attention_heads": 32,
        "num_hidden_layers": 32, "num_key_value_heads": 8, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
        "sliding_window": 4096, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
        "transformers_version": "4.34.0.dev0", "use_cache": True, "vocab_size": 32000,
    },
}

# What each test checkpoint changes: layers always; vocab_size (the synthetic tokenizer has 1024
# ids) and intermediate_size where the published one would make the layer's weights big.
CUTS = {
    "Llama-3.2-1B-Instruct": dict(num_hidden_layers=1, vocab_size=1024, intermediate_size=1024),
    "Llama-3.1-8B-Instruct": dict(num_hidden_layers=1, vocab_size=1024, intermediate_size=1024),
    "TinyLlama-1.1B-Chat-v1.0": dict(num_hidden_layers=1, vocab_size=1024, intermediate_size=1024),
    "SmolLM2-360M-Instruct": dict(num_hidden_layers=2, vocab_size=1024),
    "Qwen2.5-0.5B-Instruct": dict(num_hidden_layers=2, vocab_size=1024),
    "Mistral-7B-Instruct-v0.3": dict(num_hidden_layers=1, vocab_size=1024, intermediate_size=1024),
    "Mistral-7B-v0.1": dict(num_hidden_layers=1, vocab_size=1024, intermediate_size=1024),
}
CHAT = {"Llama-3.2-1B-Instruct": "llama3", "Llama-3.1-8B-Instruct": "llama3", "TinyLlama-1.1B-Chat-v1.0": "llama2",
        "SmolLM2-360M-Instruct": "chatml", "Qwen2.5-0.5B-Instruct": "chatml",
        "Mistral-7B-Instruct-v0.3": "mistral", "Mistral-7B-v0.1": "mistral"}
TOKEN_FIELDS = {"bos_token_id", "eos_token_id", "pad_token_id"}
MODELS = list(PUBLISHED)
TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def published_bundle(tmp_path_factory):
    """published_bundle(model) -> (checkpoint, bundle): built once per model for both targets."""
    root = tmp_path_factory.mktemp("published_shapes")
    built = {}

    def get(model):
        if model not in built:
            checkpoint = make_checkpoint_from_config({**PUBLISHED[model], **CUTS[model]}, root / model,
                                                     chat=CHAT[model], tokenizer_vocab=1024)
            bundle = root / f"{model}-q4f32_1"
            build_bundle(BuildOptions(checkpoint=checkpoint, out=bundle, quantization="q4f32_1",
                                      targets=("webgpu", "wasm"), context_window=256, prefill_chunk=64),
                         log=lambda *a, **k: None)
            built[model] = checkpoint, bundle
        return built[model]

    return get


@pytest.mark.parametrize("model", MODELS)
def test_builds_for_webgpu_and_wasm(model, published_bundle):
    checkpoint, bundle = published_bundle(model)
    written = json.loads((checkpoint / "config.json").read_text())
    assert written.pop(SYNTHETIC_MARK) is True
    # Every published field is there, unchanged but for the cuts and the tokenizer's ids.
    assert set(written) == set(PUBLISHED[model])
    changed = {k for k in written if written[k] != PUBLISHED[model][k]}
    assert changed <= set(CUTS[model]) | TOKEN_FIELDS, changed
    config = json.loads((bundle / "kiln-config.json").read_text())
    assert set(config["libraries"]) == {"webgpu", "wasm"}
    for library in config["libraries"].values():
        assert (bundle / library).stat().st_size > 0


@pytest.mark.parametrize("model", MODELS)
def test_one_greedy_step_on_wasm_equals_transformers(model, published_bundle, report):
    checkpoint, bundle = published_bundle(model)
    tok = AutoTokenizer.from_pretrained(checkpoint)
    prompt = tok.apply_chat_template([{"role": "user", "content": "Why does glaze crack in a kiln?"}],
                                     add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]
    ref = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    ref.load_state_dict(dequantized_state_dict(SimpleNamespace(weights=read_tensor_cache(bundle)), checkpoint, ref),
                        strict=False)
    with torch.no_grad():
        ref_logits = ref(prompt).logits[0, -1].numpy()

    proc = subprocess.run([toolchain.find_tool("node"), str(RUNNER), str(toolchain.tvmjs_bundle()), str(KILN_MJS),
                           str(bundle)], input=json.dumps({"prompt": prompt[0].tolist(), "steps": 1}),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    logits = np.array(result["prefillLogits"])
    diff = np.abs(logits - ref_logits).max()
    report(f"\n[{model} q4f32_1 wasm] prompt {prompt.shape[1]} tokens, token {result['tokens'][0]}, "
           f"max|logit diff| {diff:.1e} (logits std {ref_logits.std():.1f})")
    assert diff <= TOLERANCE
    assert result["tokens"] == [int(np.argmax(ref_logits))]
