"""The WASM backend's threads (kiln_threads.c, wasm_threads.ts): in a cross-origin-isolated page in
headless Chromium an engine asked for 2 threads gets them, its helper thread runs kernel tasks, and
its greedy tokens equal one thread's; a page that is not isolated runs one thread and says why; a
bad `threads` option is refused; and Node (worker_threads) gives the same tokens on 2 threads."""

from __future__ import annotations

import json

import pytest

from kiln import toolchain
from kiln.bundle.kiln_config import CONFIG_FILE
from kiln.testing.run_library import HARNESS_DIR, call_in_chromium
from test_runtime_engine import run_engine

NEW_TOKENS = 24


@pytest.fixture(scope="module")
def bundle(tiny_bundle):
    return tiny_bundle("llama3-tiny", "q4f32_1")[1]


def greedy_request(bundle):
    # Stop tokens banned, so that every run decodes all NEW_TOKENS tokens.
    stops = json.loads((bundle / CONFIG_FILE).read_text())["tokens"]["stop_token_ids"]
    return {"prompt": "A kiln is a thermally insulated chamber", "temperature": 0, "max_tokens": NEW_TOKENS,
            "logit_bias": {str(t): -100 for t in stops}}


def runs_in_chromium(bundle, runs, isolated=True):
    mounts = {"/": HARNESS_DIR, "/kiln/": toolchain.REPO_ROOT / "runtime_web" / "dist", "/bundle/": bundle}
    return call_in_chromium(mounts, "threads.html", "window.kilnReady === true",
                            "([url, runs]) => window.kilnThreads(url, runs)", ["/bundle/", runs],
                            timeout_s=600, isolated=isolated)


def test_isolated_page_runs_two_threads_with_the_same_tokens(bundle, report):
    request = greedy_request(bundle)
    one, two = runs_in_chromium(bundle, [{"threads": 1, "request": request}, {"threads": 2, "request": request}])
    assert one["crossOriginIsolated"] is True
    assert (one["threads"], one["helperTasks"], one["usage"]["extra"]["threads"]) == (1, 0, 1)
    assert two["threads"] == 2 and two["threadsReason"] is None, two["threadsReason"]
    assert two["usage"]["extra"]["threads"] == 2
    # The helper took part: the kernels' parallel loops gave it tasks.
    assert two["helperTasks"] > 0
    assert two["usage"]["completion_tokens"] == NEW_TOKENS
    assert two["text"] == one["text"]
    report(f"\n[threads] Chromium: helper ran {two['helperTasks']} kernel tasks; decode "
           f"{one['usage']['extra']['decode_tokens_per_s']:.0f} tok/s on 1 thread, "
           f"{two['usage']['extra']['decode_tokens_per_s']:.0f} on 2 (tiny model)")


def test_page_without_isolation_runs_one_thread_and_says_why(bundle):
    request = greedy_request(bundle)
    (plain,) = runs_in_chromium(bundle, [{"threads": 2, "request": request}], isolated=False)
    assert plain["crossOriginIsolated"] is False
    assert plain["threads"] == 1 and plain["helperTasks"] == 0
    assert "cross-origin isolated" in plain["threadsReason"]
    assert "Cross-Origin-Embedder-Policy" in plain["threadsReason"]
    assert plain["usage"]["completion_tokens"] == NEW_TOKENS


@pytest.mark.parametrize("threads", [0, 9, 1.5, "2"])
def test_bad_threads_option_is_refused(bundle, threads):
    out = run_engine(bundle, [], options={"threads": threads}, expect_rc=2)
    assert out["error"]["code"] == "bad_option"
    assert "threads must be a whole number from 1 to 8" in out["error"]["message"]


def test_node_runs_two_threads_with_the_same_tokens(bundle):
    step = {"api": "text", "request": greedy_request(bundle)}
    one = run_engine(bundle, [step], options={"threads": 1})["results"][0]
    two = run_engine(bundle, [step], options={"threads": 2})["results"][0]
    assert (one["usage"]["extra"]["threads"], two["usage"]["extra"]["threads"]) == (1, 2)
    assert two["choices"][0]["text"] == one["choices"][0]["text"]
