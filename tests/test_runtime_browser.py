"""kiln's engine in headless Chromium, on WebGPU (SwiftShader) and on the WASM backend: the greedy
reply to a chat prompt equals transformers' greedy `generate` (32 tokens, cut at a stop token), and
a follow-up turn prefills only its new tokens."""

from __future__ import annotations

import pytest

from compiler import toolchain
from compiler.build import BuildOptions, build_bundle
from compiler.run_library import HARNESS_DIR, call_in_chromium
from compiler.synthetic import make_checkpoint
from test_runtime_engine import NEW_TOKENS, TURN1, reference_reply


@pytest.fixture(scope="module")
def llama3_bundle(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    checkpoint = make_checkpoint("llama3-tiny", root / "llama3-tiny")
    bundle = root / "bundle"
    build_bundle(BuildOptions(checkpoint=checkpoint, out=bundle, quantization="q0f32", context_window=512,
                              prefill_chunk=64), log=lambda *a, **k: None)
    return checkpoint, bundle


@pytest.mark.parametrize("backend", ["webgpu", "wasm"])
def test_engine_in_chromium_matches_transformers(backend, llama3_bundle, capsys):
    checkpoint, bundle = llama3_bundle
    text, completion_tokens, finish, prompt_tokens = reference_reply(checkpoint, bundle, TURN1)
    greedy = {"temperature": 0, "max_tokens": NEW_TOKENS}
    turn2 = TURN1 + [{"role": "assistant", "content": "A hot oven."}, {"role": "user", "content": "For what?"}]
    steps = [{"api": "chat", "request": {"messages": TURN1, **greedy}},
             {"api": "chat", "request": {"messages": turn2, "stream": True, **greedy}}]
    mounts = {"/": HARNESS_DIR, "/kiln/": toolchain.REPO_ROOT / "runtime_web" / "dist", "/bundle/": bundle}
    out = call_in_chromium(mounts, "engine.html", "window.kilnReady === true",
                           "([url, backend, steps]) => window.kilnChat(url, backend, steps)",
                           ["/bundle/", backend, steps], timeout_s=600)
    first, second = out["results"]
    assert out["backend"] == backend
    assert first["choices"][0]["message"]["content"] == text
    assert first["choices"][0]["finish_reason"] == finish
    assert first["usage"]["completion_tokens"] == completion_tokens
    usage = second["chunks"][-1]["usage"]
    assert usage["extra"]["prefill_tokens"] == usage["prompt_tokens"] - prompt_tokens
    with capsys.disabled():
        extra = first["usage"]["extra"]
        print(f"\n[engine in Chromium, {backend}] prefill {extra['prefill_tokens_per_s']:.0f} tok/s, "
              f"decode {extra['decode_tokens_per_s']:.0f} tok/s")
