"""kiln's TypeScript runtime (KilnModel, runtime_web/src/model.ts) in Node on the WASM backend: its
greedy tokens equal transformers' greedy `generate` on the same chat-templated prompt. For Mistral
the prompt is longer than the sliding window, which exercises the runtime's exact chunking."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from compiler import toolchain
from compiler.build import BuildOptions, build_bundle
from compiler.synthetic import make_checkpoint

STEPS = 16
RUNNER = toolchain.REPO_ROOT / "runtime_web" / "harness" / "node_generate.mjs"
KILN_MJS = toolchain.REPO_ROOT / "runtime_web" / "dist" / "kiln.mjs"


@pytest.mark.parametrize("variant", ["llama3-tiny", "mistral-tiny"])
def test_runtime_greedy_matches_transformers(variant, tmp_path, capsys):
    checkpoint = make_checkpoint(variant, tmp_path / variant)
    bundle = tmp_path / "bundle"
    build_bundle(BuildOptions(checkpoint=checkpoint, out=bundle, quantization="q0f32", targets=("wasm",),
                              context_window=256, prefill_chunk=64), log=lambda *a, **k: None)
    tok = AutoTokenizer.from_pretrained(checkpoint)
    text = "Why does glaze crack in a kiln? " * (5 if variant == "mistral-tiny" else 1)
    prompt = tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                     return_tensors="pt", return_dict=True)["input_ids"]
    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    with torch.no_grad():
        out = model.generate(prompt, max_new_tokens=STEPS, do_sample=False, eos_token_id=None, pad_token_id=0,
                             output_logits=True, return_dict_in_generate=True)
    ref_tokens = out.sequences[0, prompt.shape[1]:].tolist()

    proc = subprocess.run([toolchain.find_tool("node"), str(RUNNER), str(toolchain.tvmjs_bundle()), str(KILN_MJS),
                           str(bundle)], input=json.dumps({"prompt": prompt[0].tolist(), "steps": STEPS}),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    diff = np.abs(np.array(result["prefillLogits"]) - out.logits[0][0].numpy()).max()
    with capsys.disabled():
        print(f"\n[runtime node wasm {variant}] prompt {prompt.shape[1]} tokens, prefill max|diff| {diff:.1e}")
    assert diff <= 1e-3
    assert result["tokens"] == ref_tokens
