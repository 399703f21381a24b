"""WebLLM 0.2.86 (npm, test dependency), an independent runtime, loads kiln's q0f32 Llama-3-style
bundle in headless Chromium (SwiftShader WebGPU); its greedy reply to a chat prompt equals
transformers' greedy `generate` on the same chat-templated prompt, 32 tokens."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from kiln import toolchain
from kiln.bundle.build import BuildOptions, build_bundle, library_name
from kiln.testing.run_library import HARNESS_DIR, call_in_chromium
from kiln.testing.synthetic import make_checkpoint

NEW_TOKENS = 32
MESSAGES = [
    {"role": "system", "content": "You are a terse assistant."},
    {"role": "user", "content": "What is a kiln used for?"},
]
WEBLLM_LIB = toolchain.REPO_ROOT / "runtime_web" / "node_modules" / "@mlc-ai" / "web-llm" / "lib"


def test_webllm_runs_kiln_bundle_like_transformers(tmp_path, report):
    checkpoint = make_checkpoint("llama3-tiny", tmp_path / "llama3-tiny")
    bundle = tmp_path / "bundle"
    build_bundle(BuildOptions(checkpoint=checkpoint, out=bundle, quantization="q0f32", targets=("webgpu",),
                              context_window=512, prefill_chunk=128), log=lambda *a, **k: None)

    tok = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    prompt = tok.apply_chat_template(MESSAGES, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=NEW_TOKENS, do_sample=False, eos_token_id=None, pad_token_id=0)
    ref_tokens = out[0, prompt["input_ids"].shape[1]:].tolist()
    assert len(set(ref_tokens)) > 1

    # WebLLM appends resolve/main/ to a model URL that lacks it.
    mounts = {"/": HARNESS_DIR, "/webllm/": WEBLLM_LIB, "/models/tiny/resolve/main/": bundle}
    result = call_in_chromium(
        mounts, "webllm.html", "window.webllmReady === true", "(arg) => window.webllmChat(arg)",
        {"modelUrl": "/models/tiny/", "libUrl": f"/models/tiny/resolve/main/{library_name('webgpu')}",
         "messages": MESSAGES, "maxTokens": NEW_TOKENS},
        timeout_s=600,
    )
    expected = tok.decode(ref_tokens, skip_special_tokens=True)
    report(f"\n[webllm] usage {result['usage']}\n[webllm] text        {result['text']!r}"
           f"\n[transformers] text  {expected!r}")
    assert result["usage"]["completion_tokens"] == NEW_TOKENS
    # WebLLM counts the prompt without its BOS prefix (conv_template.system_prefix_token_ids).
    assert result["usage"]["prompt_tokens"] == prompt["input_ids"].shape[1] - 1
    assert result["text"] == expected
