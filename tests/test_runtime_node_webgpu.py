"""kiln's engine in Node on WebGPU, through the npm package `webgpu` (Dawn) on Vulkan: with Chromium's
SwiftShader as the Vulkan driver, the greedy 32-token reply of a llama3-tiny q0f32 bundle equals
transformers' and the engine says it ran on "webgpu". With no Vulkan device, installNodeWebGPU
answers false, backend "auto" falls back to WASM with the same reply, and backend "webgpu" fails
with the engine's own error, printed as JSON (no stack trace)."""

from __future__ import annotations

import ctypes.util
import json
import os
import subprocess
from pathlib import Path

import pytest

from kiln import toolchain
from kiln.site.serve import StaticServer
from test_runtime_engine import KILN_MJS, NEW_TOKENS, RUNNER, TURN1, reference_reply

# Debian's chromium package ships SwiftShader, a Vulkan driver on the CPU, with this manifest.
SWIFTSHADER_ICD = Path("/usr/lib/chromium/vk_swiftshader_icd.json")
TURN2 = TURN1 + [{"role": "assistant", "content": "A hot oven."}, {"role": "user", "content": "For what?"}]
GREEDY = {"temperature": 0, "max_tokens": NEW_TOKENS}


@pytest.fixture(scope="module")
def tiny(tiny_bundle):
    """A llama3-tiny q0f32 bundle with both kernel libraries, and transformers' reply to TURN1."""
    checkpoint, bundle = tiny_bundle("llama3-tiny", "q0f32")
    return bundle, reference_reply(checkpoint, bundle, TURN1)


def vulkan_env(tmp_path, icd):
    """The environment for Node with Vulkan pointed at the driver manifest `icd`. Dawn loads the
    Vulkan loader libvulkan.so.1 (Debian: libvulkan1); where the system has none, Chromium's copy,
    which sits next to SwiftShader, is used."""
    env = dict(os.environ, VK_ICD_FILENAMES=str(icd))
    if not env.get("XDG_RUNTIME_DIR"):
        runtime_dir = tmp_path / "xdg-runtime"
        runtime_dir.mkdir(mode=0o700, exist_ok=True)
        env["XDG_RUNTIME_DIR"] = str(runtime_dir)
    chromium_loader = SWIFTSHADER_ICD.parent / "libvulkan.so.1"
    if ctypes.util.find_library("vulkan") is None and chromium_loader.is_file():
        env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(chromium_loader.parent), env.get("LD_LIBRARY_PATH")]))
    return env


def run_node_chat(bundle, backend, steps, env):
    with StaticServer({"/bundle/": bundle}) as server:
        proc = subprocess.run([toolchain.find_tool("node"), str(RUNNER), str(KILN_MJS), f"{server.url}/bundle/", backend],
                              input=json.dumps(steps), capture_output=True, text=True, timeout=600, env=env)
    return proc


def install_node_webgpu(env):
    """What installNodeWebGPU() from dist/kiln.mjs answers in a fresh Node process."""
    script = (f"const kiln = await import({json.dumps(KILN_MJS.as_uri())});\n"
              "process.stdout.write(JSON.stringify({ adapter: await kiln.installNodeWebGPU(), "
              "gpu: typeof globalThis.navigator?.gpu?.requestAdapter, usage: typeof globalThis.GPUBufferUsage?.STORAGE }));")
    proc = subprocess.run([toolchain.find_tool("node"), "--input-type=module", "-e", script],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def rates(completion):
    extra = completion["usage"]["extra"]
    return f"prefill {extra['prefill_tokens_per_s']:.0f} tok/s, decode {extra['decode_tokens_per_s']:.0f} tok/s"


def test_engine_on_node_webgpu_matches_transformers(tiny, tmp_path, report):
    if not SWIFTSHADER_ICD.is_file():
        pytest.skip(f"no SwiftShader Vulkan driver ({SWIFTSHADER_ICD} is missing; Debian's chromium package has it)")
    bundle, (text, completion_tokens, finish, prompt_tokens) = tiny
    env = vulkan_env(tmp_path, SWIFTSHADER_ICD)
    assert install_node_webgpu(env) == {"adapter": True, "gpu": "function", "usage": "number"}

    proc = run_node_chat(bundle, "webgpu", [
        {"api": "chat", "request": {"messages": TURN1, **GREEDY}},
        {"api": "chat", "request": {"messages": TURN2, "stream": True, **GREEDY}},
    ], env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["backend"] == "webgpu"
    first, second = out["results"]
    assert first["choices"][0]["message"]["content"] == text
    assert first["choices"][0]["finish_reason"] == finish
    assert first["usage"]["prompt_tokens"] == prompt_tokens
    assert first["usage"]["completion_tokens"] == completion_tokens
    # The follow-up turn streams, and the KV cache on the GPU is reused: only its new tokens are prefilled.
    usage = second["chunks"][-1]["usage"]
    assert "error" not in second and usage["completion_tokens"] >= 1
    assert usage["extra"]["prefill_tokens"] == usage["prompt_tokens"] - prompt_tokens
    report(f"\n[engine in Node on WebGPU (Dawn, SwiftShader), llama3-tiny q0f32] {rates(first)}")


def test_without_a_vulkan_device_auto_falls_back_and_webgpu_says_why(tiny, tmp_path, report):
    bundle, (text, completion_tokens, finish, _) = tiny
    env = vulkan_env(tmp_path, tmp_path / "no-such-driver.json")
    assert install_node_webgpu(env)["adapter"] is False

    proc = run_node_chat(bundle, "auto", [{"api": "chat", "request": {"messages": TURN1, **GREEDY}}], env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["backend"] == "wasm"
    (reply,) = out["results"]
    assert reply["choices"][0]["message"]["content"] == text
    assert reply["choices"][0]["finish_reason"] == finish
    assert reply["usage"]["completion_tokens"] == completion_tokens

    proc = run_node_chat(bundle, "webgpu", [{"api": "chat", "request": {"messages": TURN1, **GREEDY}}], env)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
    error = json.loads(proc.stdout)["error"]
    assert error["name"] == "EngineError"
    assert error["code"] in ("webgpu_unavailable", "webgpu_feature_missing")
    assert "WebGPU" in error["message"] and 'backend "wasm"' in error["message"]
    # The refusal is the engine's message, not an uncaught exception's stack trace.
    assert "EngineError" not in proc.stderr and "node:internal" not in proc.stderr
    report(f"\n[engine in Node, auto without a Vulkan device -> wasm, llama3-tiny q0f32] {rates(reply)}; "
           f"webgpu refused: {error['message']}")
