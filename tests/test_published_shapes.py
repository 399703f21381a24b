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
from kiln.testing.published import CHAT, PUBLISHED
from kiln.testing.synthetic import SYNTHETIC_MARK, make_checkpoint_from_config
from kiln.weights.tensor_cache import read_tensor_cache
from test_numerics import dequantized_state_dict
from greedy_runs import KILN_MJS, RUNNER

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
