"""kiln's engine in headless Chromium, on WebGPU (SwiftShader) and on the WASM backend: for the
Llama-3-style and Mistral-style checkpoints at q0f32 the greedy reply to a chat prompt equals
transformers' greedy `generate` (32 tokens, cut at a stop token) and a follow-up turn prefills only
its new tokens; a q4f32_1 bundle runs and streams the same text it returns without streaming; a
q4f16_1 bundle on an adapter without shader-f16 is refused on WebGPU (naming q4f32_1) and runs on
WASM under "auto"."""

from __future__ import annotations

import pytest

from kiln import toolchain
from kiln.testing.run_library import HARNESS_DIR, call_in_chromium
from test_runtime_engine import NEW_TOKENS, TURN1, reference_reply

TURN2 = TURN1 + [{"role": "assistant", "content": "A hot oven."}, {"role": "user", "content": "For what?"}]


def run_in_page(bundle, backend, steps):
    """{backend, results} of `steps` on one engine, or {error} if createEngine refused."""
    mounts = {"/": HARNESS_DIR, "/kiln/": toolchain.REPO_ROOT / "runtime_web" / "dist", "/bundle/": bundle}
    return call_in_chromium(mounts, "engine.html", "window.kilnReady === true",
                            "([url, backend, steps]) => window.kilnChat(url, backend, steps)",
                            ["/bundle/", backend, steps], timeout_s=600)


def chat_in_chromium(bundle, backend, steps):
    out = run_in_page(bundle, backend, steps)
    assert out.get("backend") == backend, out
    return out["results"]


def streamed_text(chunks):
    return "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)


@pytest.mark.parametrize("backend", ["webgpu", "wasm"])
@pytest.mark.parametrize("variant", ["llama3-tiny", "mistral-tiny"])
def test_engine_in_chromium_matches_transformers(variant, backend, tiny_bundle, report):
    checkpoint, bundle = tiny_bundle(variant, "q0f32")
    text, completion_tokens, finish, prompt_tokens = reference_reply(checkpoint, bundle, TURN1)
    greedy = {"temperature": 0, "max_tokens": NEW_TOKENS}
    first, second = chat_in_chromium(bundle, backend, [
        {"api": "chat", "request": {"messages": TURN1, **greedy}},
        {"api": "chat", "request": {"messages": TURN2, "stream": True, **greedy}}])
    assert first["choices"][0]["message"]["content"] == text
    assert first["choices"][0]["finish_reason"] == finish
    assert first["usage"]["completion_tokens"] == completion_tokens
    usage = second["chunks"][-1]["usage"]
    if variant == "mistral-tiny":
        # The window (16) has slid past where turn 2 departs from the cached reply: a full prefill.
        assert usage["extra"]["prefill_tokens"] == usage["prompt_tokens"]
    else:
        assert usage["extra"]["prefill_tokens"] == usage["prompt_tokens"] - prompt_tokens
    extra = first["usage"]["extra"]
    report(f"\n[engine in Chromium, {variant} {backend}] prefill {extra['prefill_tokens_per_s']:.0f} tok/s, "
           f"decode {extra['decode_tokens_per_s']:.0f} tok/s")


@pytest.mark.parametrize("backend", ["webgpu", "wasm"])
def test_q4_runs_and_streams_in_chromium(backend, tiny_bundle):
    _, bundle = tiny_bundle("llama3-tiny", "q4f32_1")
    greedy = {"messages": TURN1, "temperature": 0, "max_tokens": 16}
    whole, streamed = chat_in_chromium(bundle, backend, [
        {"api": "chat", "request": greedy, "reset": True},
        {"api": "chat", "request": {**greedy, "stream": True}}])
    text = whole["choices"][0]["message"]["content"]
    chunks = streamed["chunks"]
    assert whole["usage"]["completion_tokens"] >= 1 and text
    assert len(chunks) >= 3 and chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert streamed_text(chunks) == text
    assert chunks[-1]["usage"]["completion_tokens"] == whole["usage"]["completion_tokens"]
    # The reset between the two requests means the stream prefilled its whole prompt again.
    assert chunks[-1]["usage"]["extra"]["prefill_tokens"] == chunks[-1]["usage"]["prompt_tokens"]


def test_f16_bundle_without_shader_f16_names_the_f32_variant_and_auto_uses_wasm(tiny_bundle):
    # SwiftShader's WebGPU adapter has no shader-f16, which a q4f16_1 bundle's WebGPU kernels need.
    _, bundle = tiny_bundle("llama3-tiny", "q4f16_1")
    request = {"messages": TURN1, "temperature": 0, "max_tokens": 8}
    refused = run_in_page(bundle, "webgpu", [{"api": "chat", "request": request}])["error"]
    assert refused["code"] == "webgpu_feature_missing", refused
    assert "shader-f16" in refused["message"] and "--quantization q4f32_1" in refused["message"], refused
    out = run_in_page(bundle, "auto", [{"api": "chat", "request": request}])
    assert out.get("backend") == "wasm", out
    (reply,) = out["results"]
    assert reply["usage"]["completion_tokens"] >= 1 and reply["choices"][0]["message"]["content"]
