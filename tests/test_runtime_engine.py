"""kiln's engine API (runtime_web/src/engine.ts) in Node on the WASM backend, loading a bundle over
HTTP like a page does: greedy chat equals transformers, streaming equals non-streaming, the second
turn prefills only its new tokens, q4f32_1 streams, and a bad field is named in the error."""

from __future__ import annotations

import json
import subprocess

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from compiler import toolchain
from compiler.kiln_config import CONFIG_FILE
from compiler.serve import StaticServer

RUNNER = toolchain.REPO_ROOT / "runtime_web" / "harness" / "node_chat.mjs"
KILN_MJS = toolchain.REPO_ROOT / "runtime_web" / "dist" / "kiln.mjs"
NEW_TOKENS = 32
TURN1 = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is a kiln?"}]


def run_engine(bundle, steps):
    with StaticServer({"/bundle/": bundle}) as server:
        proc = subprocess.run([toolchain.find_tool("node"), str(RUNNER), str(KILN_MJS), f"{server.url}/bundle/"],
                              input=json.dumps(steps), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def reference_reply(checkpoint, bundle, messages):
    """transformers' greedy reply: NEW_TOKENS tokens, cut at the first stop token like the engine."""
    tok = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    prompt = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=NEW_TOKENS, do_sample=False, eos_token_id=None, pad_token_id=0)
    tokens = out[0, prompt["input_ids"].shape[1]:].tolist()
    stops = json.loads((bundle / CONFIG_FILE).read_text())["tokens"]["stop_token_ids"]
    cut = next((i for i, t in enumerate(tokens) if t in stops), None)
    finish = "length" if cut is None else "stop"
    tokens = tokens if cut is None else tokens[:cut]
    return tok.decode(tokens, skip_special_tokens=True), len(tokens) + (cut is not None), finish, prompt["input_ids"].shape[1]


@pytest.mark.parametrize("variant", ["llama3-tiny", "mistral-tiny"])
def test_greedy_chat_streaming_and_reuse(variant, tiny_bundle, capsys):
    checkpoint, bundle = tiny_bundle(variant, "q0f32")
    text, completion_tokens, finish, prompt_tokens = reference_reply(checkpoint, bundle, TURN1)
    greedy = {"temperature": 0, "max_tokens": NEW_TOKENS}
    turn2 = TURN1 + [{"role": "assistant", "content": "A hot oven."}, {"role": "user", "content": "For what?"}]
    out = run_engine(bundle, [
        {"api": "chat", "request": {"messages": TURN1, **greedy}},
        {"api": "chat", "request": {"messages": TURN1, "stream": True, **greedy}},
        {"api": "chat", "request": {"messages": turn2, **greedy}},
    ])
    first, streamed, second = out["results"]
    assert out["backend"] == "wasm"
    assert first["choices"][0]["message"]["content"] == text
    assert first["choices"][0]["finish_reason"] == finish
    assert first["usage"]["prompt_tokens"] == prompt_tokens
    assert first["usage"]["completion_tokens"] == completion_tokens

    chunks = streamed["chunks"]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == text
    assert chunks[-1]["choices"][0]["finish_reason"] == finish and chunks[-1]["usage"]["completion_tokens"] == completion_tokens

    usage = second["usage"]
    if variant == "mistral-tiny":
        # The window has slid past where turn 2 departs from the cached reply: no rollback, a full prefill.
        assert usage["extra"]["prefill_tokens"] == usage["prompt_tokens"]
    else:
        # Turn 2 extends turn 1's prompt: only the tokens after it are prefilled.
        assert usage["extra"]["prefill_tokens"] == usage["prompt_tokens"] - prompt_tokens
    with capsys.disabled():
        print(f"\n[engine {variant}] turn 2: {usage['prompt_tokens']} prompt tokens, "
              f"{usage['extra']['prefill_tokens']} prefilled; decode {first['usage']['extra']['decode_tokens_per_s']:.0f} tok/s")


def test_q4_streams_aborts_queues_and_errors_name_the_field(tiny_bundle):
    _, bundle = tiny_bundle("llama3-tiny", "q4f32_1")
    greedy = {"messages": TURN1, "temperature": 0, "max_tokens": 24}
    long_prompt = "kiln " * 600
    out = run_engine(bundle, [
        {"api": "chat", "request": {"messages": TURN1, "stream": True, "max_tokens": 12, "seed": 7}},
        {"api": "chat", "request": greedy},
        {"api": "chat", "request": {**greedy, "stream": True}, "abortAfterChunks": 3},
        {"concurrent": [{"api": "chat", "request": greedy}, {"api": "text", "request": {"prompt": "A kiln", "max_tokens": 8}},
                        {"api": "chat", "request": {**greedy, "stream": True}}]},
        {"api": "chat", "request": {"messages": TURN1, "top_p": 3}},
        {"api": "chat", "request": {"messages": TURN1, "temprature": 0.5}},
        {"api": "chat", "request": {"messages": [{"role": "robot", "content": "hi"}]}},
        {"api": "chat", "request": {"messages": TURN1, "max_tokens": 600}},
        {"api": "text", "request": {"prompt": long_prompt}},
    ])
    sampled, reply, aborted, concurrent, bad_top_p, typo, bad_role, too_many, too_long = out["results"]
    chunks = sampled["chunks"]
    assert len(chunks) >= 3 and chunks[-1]["usage"]["completion_tokens"] <= 12

    # An aborted stream ends with AbortError before its last chunk, and the engine stays usable.
    text = reply["choices"][0]["message"]["content"]
    assert aborted["error"]["name"] == "AbortError"
    assert len(aborted["chunks"]) >= 3 and not any(c.get("usage") for c in aborted["chunks"])
    # Requests started together are all served, one at a time, each as if it ran alone.
    chat, raw, streamed = concurrent
    assert chat["choices"][0]["message"]["content"] == text
    assert raw["object"] == "text_completion" and raw["usage"]["completion_tokens"] >= 1
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in streamed["chunks"]) == text

    assert bad_top_p["error"]["code"] == "invalid_request" and "top_p" in bad_top_p["error"]["message"]
    assert typo["error"]["code"] == "invalid_request" and "temprature" in typo["error"]["message"]
    assert "messages[0].role" in bad_role["error"]["message"]
    # The context window (512) is never overrun: both are refused before any token is generated.
    assert too_many["error"]["code"] == "context_window_exceeded" and "max_tokens" in too_many["error"]["message"]
    assert too_long["error"]["code"] == "context_window_exceeded" and "512" in too_long["error"]["message"]
