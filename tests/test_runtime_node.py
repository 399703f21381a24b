"""kiln's TypeScript runtime (KilnModel, runtime_web/src/model.ts) in Node on the WASM backend: its
greedy tokens equal transformers' greedy `generate` on the same chat-templated prompt. For Mistral
the prompt is longer than the sliding window, which exercises the runtime's exact chunking."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from greedy_runs import kiln_node_greedy, transformers_greedy
from transformers import AutoModelForCausalLM, AutoTokenizer

from kiln.bundle.build import BuildOptions, build_bundle
from kiln.testing.synthetic import make_checkpoint

STEPS = 16


@pytest.mark.parametrize("variant", ["llama3-tiny", "mistral-tiny"])
def test_runtime_greedy_matches_transformers(variant, tmp_path, report):
    checkpoint = make_checkpoint(variant, tmp_path / variant)
    bundle = tmp_path / "bundle"
    build_bundle(BuildOptions(checkpoint=checkpoint, out=bundle, quantization="q0f32", targets=("wasm",),
                              context_window=256, prefill_chunk=64), log=lambda *a, **k: None)
    tok = AutoTokenizer.from_pretrained(checkpoint)
    text = "Why does glaze crack in a kiln? " * (5 if variant == "mistral-tiny" else 1)
    prompt = tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                     return_tensors="pt", return_dict=True)["input_ids"]
    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    ref_tokens, ref_logits = transformers_greedy(model, prompt[0].tolist(), STEPS)
    tokens, logits = kiln_node_greedy(bundle, prompt[0].tolist(), STEPS)
    diff = np.abs(logits - ref_logits).max()
    report(f"\n[runtime node wasm {variant}] prompt {prompt.shape[1]} tokens, prefill max|diff| {diff:.1e}")
    assert diff <= 1e-3
    assert tokens == ref_tokens
