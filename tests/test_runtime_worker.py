"""kiln's engine in a dedicated Web Worker (createWorkerEngine, dist/kiln-worker.mjs) in headless
Chromium: the same requests in the same page give the same replies through the worker as from the
in-page engine (greedy stream deltas, non-streaming completion, text completions, queued concurrent
requests, a follow-up turn); a page-side AbortSignal aborts a long stream inside the worker with an
AbortError and the engine then serves the next request; a `for await` loop left with break stops
generation (in the page and in the worker) and the next request runs at once; a bad field comes back
as the same invalid_request error; load progress reaches the page; a load-time signal aborts loading."""

from __future__ import annotations

import json
import os
import time

import pytest

from kiln import toolchain
from kiln.bundle.kiln_config import CONFIG_FILE
from kiln.testing.run_library import HARNESS_DIR, call_in_chromium

TURN1 = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is a kiln?"}]
TURN2 = TURN1 + [{"role": "assistant", "content": "A hot oven."}, {"role": "user", "content": "For what?"}]
GREEDY = {"temperature": 0, "max_tokens": 32}
LONG = 400  # tokens the aborted stream would run to: far more than an abort takes to arrive


@pytest.fixture(scope="module")
def bundle(tiny_bundle):
    return tiny_bundle("llama3-tiny", "q0f32")[1]


def steps_for(bundle, backend):
    """Named steps; the slow SwiftShader WebGPU backend skips the two that only exercise the protocol."""
    stops = json.loads((bundle / CONFIG_FILE).read_text())["tokens"]["stop_token_ids"]
    # Stop tokens banned, so only the abort can end this stream before LONG tokens.
    no_stop = {str(t): -100 for t in stops}
    steps = {
        "stream": {"api": "chat", "request": {"messages": TURN1, "stream": True, **GREEDY}, "reset": True},
        "whole": {"api": "chat", "request": {"messages": TURN1, **GREEDY}, "reset": True},
        "aborted": {"api": "chat", "request": {"messages": TURN1, "stream": True, "temperature": 0, "max_tokens": LONG,
                                               "logit_bias": no_stop}, "abortAfterChunks": 3},
        "next": {"api": "chat", "request": {"messages": TURN2, **GREEDY}},
        "broken": {"api": "chat", "request": {"messages": TURN1, "stream": True, "temperature": 0, "max_tokens": LONG,
                                              "logit_bias": no_stop}, "breakAfterChunks": 3, "reset": True},
        "text": {"api": "text", "request": {"prompt": "A kiln is", "stream": True, **GREEDY}, "reset": True},
        "invalid": {"api": "chat", "request": {"messages": TURN1, "temprature": 0}},
        "concurrent": {"concurrent": [
            {"api": "chat", "request": {"messages": TURN1, "temperature": 0, "max_tokens": 8}},
            {"api": "text", "request": {"prompt": "A kiln is", "temperature": 0, "max_tokens": 8}}]},
    }
    if backend == "webgpu":
        del steps["text"], steps["concurrent"]
    return steps


def compare_in_chromium(bundle, backend, steps):
    # The bundle is passed as a relative URL: the worker engine must resolve it against the page.
    mounts = {"/": HARNESS_DIR, "/kiln/": toolchain.REPO_ROOT / "runtime_web" / "dist", "/bundle/": bundle}
    return call_in_chromium(mounts, "worker.html", "window.kilnReady === true",
                            "([url, backend, steps]) => window.kilnCompare(url, backend, steps)",
                            ["bundle/", backend, steps], timeout_s=600)


def deltas(chunks, api="chat"):
    if api == "text":
        return [c["choices"][0]["text"] for c in chunks]
    return [c["choices"][0]["delta"].get("content") for c in chunks]


def comparable(completion):
    """A completion without what differs between two runs (id, created, speeds)."""
    usage = {k: completion["usage"][k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
    return {"object": completion["object"], "model": completion["model"], "choices": completion["choices"],
            "usage": usage, "prefill_tokens": completion["usage"]["extra"]["prefill_tokens"]}


@pytest.mark.parametrize("backend", ["wasm", "webgpu"])
def test_worker_engine_matches_in_page_engine(backend, bundle, report):
    steps = steps_for(bundle, backend)
    started = time.monotonic()
    out = compare_in_chromium(bundle, backend, list(steps.values()))
    elapsed = time.monotonic() - started
    page = dict(zip(steps, out["page"]["results"]))
    worker = dict(zip(steps, out["worker"]["results"]))
    assert out["page"]["backend"] == out["worker"]["backend"] == backend
    # The default thread count (the machine's cores, at most 8) in both; inside the worker the
    # helper threads are workers started by a worker.
    expected = min(os.cpu_count() or 1, 8) if backend == "wasm" else 1
    assert out["page"]["threads"] == out["worker"]["threads"] == expected

    # 1. Greedy stream: the same deltas in the same order, the same ending and token counts.
    page_stream, worker_stream = page["stream"]["chunks"], worker["stream"]["chunks"]
    assert "error" not in worker["stream"] and "error" not in page["stream"]
    assert worker_stream[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert len(deltas(worker_stream)) >= 3
    assert deltas(worker_stream) == deltas(page_stream)
    assert worker_stream[-1]["choices"][0]["finish_reason"] == page_stream[-1]["choices"][0]["finish_reason"]
    assert worker_stream[-1]["usage"]["completion_tokens"] == page_stream[-1]["usage"]["completion_tokens"]
    assert all(c["object"] == "chat.completion.chunk" for c in worker_stream)

    # 2. Non-streaming: the same completion, and the text the stream gave.
    assert comparable(worker["whole"]) == comparable(page["whole"])
    assert worker["whole"]["choices"][0]["message"]["content"] == "".join(d or "" for d in deltas(worker_stream))

    # 3. Aborted after 3 chunks: an AbortError from inside the worker, long before LONG tokens.
    aborted = worker["aborted"]
    assert "error" in aborted, f"the stream was not aborted: {len(aborted['chunks'])} chunks"
    assert aborted["error"]["name"] == "AbortError", aborted["error"]
    assert aborted["error"] == page["aborted"]["error"]
    assert 3 <= len(aborted["chunks"]) < LONG // 2
    assert deltas(aborted["chunks"])[:3] == deltas(page["aborted"]["chunks"])[:3]

    # 4. The engine serves the next request (a follow-up turn reusing the cache) as the page's does.
    assert comparable(worker["next"]) == comparable(page["next"])
    assert worker["next"]["usage"]["extra"]["prefill_tokens"] < worker["next"]["usage"]["prompt_tokens"]

    # 4b. break in for await: the in-page engine's model stops at once (it ran to LONG tokens before
    # the stream iterator had return()), and in both engines the next request is served.
    for engine, result in (("page", page["broken"]), ("worker", worker["broken"])):
        assert "error" not in result, (engine, result)
        assert len(result["chunks"]) == 3 and result["next"]["usage"]["completion_tokens"] == 1, (engine, result)
    assert page["broken"]["decodesAfterBreak"] <= 1, page["broken"]["decodesAfterBreak"]

    # 5. completions.create streams the same text deltas.
    if "text" in steps:
        assert worker["text"]["chunks"][-1]["object"] == "text_completion"
        assert deltas(worker["text"]["chunks"], "text") == deltas(page["text"]["chunks"], "text")

    # 6. A misspelt field: the same EngineError shape, naming the field.
    error = worker["invalid"]["error"]
    assert error["name"] == "EngineError" and error["code"] == "invalid_request"
    assert "temprature" in error["message"]
    assert error == page["invalid"]["error"]

    # 7. Two requests at once queue in the worker and both get the in-page replies.
    if "concurrent" in steps:
        assert [comparable(r) for r in worker["concurrent"]] == [comparable(r) for r in page["concurrent"]]

    # Load progress reached the page, ending complete; an aborted load, a request after unload and a
    # worker whose script is missing fail with the loader's and the engine's errors.
    progress = out["worker"]["progress"]
    assert progress and progress[-1]["bytesTotal"] > 0
    assert progress[-1]["bytesDone"] == progress[-1]["bytesTotal"]
    assert {p["phase"] for p in progress} <= {"download", "verify", "compile", "upload"}
    compile_events = [p for p in progress if p["phase"] == "compile"]
    if backend == "webgpu":  # pipelines counted up to all of those the model waits for
        assert compile_events and compile_events[-1]["bytesDone"] == compile_events[-1]["bytesTotal"] > 0
    else:
        assert not compile_events
    assert out["worker"]["loadAbort"]["name"] == "LoadError" and out["worker"]["loadAbort"]["code"] == "aborted"
    assert out["worker"]["afterUnload"]["code"] == "not_loaded"
    assert out["worker"]["brokenWorker"]["code"] == "worker_failed"
    report(f"\n[worker engine, llama3-tiny {backend}] both engines ran {len(steps)} steps in {elapsed:.1f} s; "
           f"the aborted stream stopped after {len(aborted['chunks'])} chunks")
