"""Run a function of a linked kiln `.wasm` library in its real environment: Node (WASM CPU
kernels) or headless Chromium with WebGPU (driven by Playwright, system Chromium). Both go through
the same JS harness in runtime_web/harness/."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from kiln import toolchain
from kiln.errors import KilnError
from kiln.site.serve import StaticServer

HARNESS_DIR = toolchain.REPO_ROOT / "runtime_web" / "harness"

# Chromium on a machine without a GPU: WebGPU through SwiftShader's Vulkan, and no background
# traffic (this machine's closed network refuses it, many connections at a time).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--enable-unsafe-webgpu",
    "--enable-features=Vulkan",
    "--use-vulkan=swiftshader",
    "--use-webgpu-adapter=swiftshader",
]


class RunError(KilnError):
    code = "run"


def describe_adapter(adapter: dict | None) -> str:
    """One line for the WebGPU adapter a run reported (SwiftShader leaves `description` empty)."""
    if adapter is None:
        return "no WebGPU adapter (CPU)"
    fields = ("vendor", "architecture", "device", "description")
    return "WebGPU adapter " + " ".join(f"{k}={adapter.get(k)!r}" for k in fields)


def run_in_node(library: Path, request: dict) -> dict:
    node = toolchain.find_tool("node")
    cmd = [node, str(HARNESS_DIR / "node_run.mjs"), str(toolchain.tvmjs_bundle()), str(library)]
    proc = subprocess.run(cmd, input=json.dumps(request), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RunError(f"running {library.name} in Node failed:\n{proc.stderr.strip()}")
    return json.loads(proc.stdout)


def launch_chromium(playwright):
    return playwright.chromium.launch(
        executable_path=toolchain.chromium_path(), headless=True, args=CHROMIUM_ARGS
    )


def call_in_chromium(mounts: dict[str, Path], page_path: str, ready: str, script: str, arg,
                     timeout_s: float = 300, isolated: bool = True):
    """Serve `mounts` on 127.0.0.1 (cross-origin isolated unless `isolated` is False), open
    `page_path` in headless Chromium (WebGPU on), wait for the JS expression `ready`, then return
    `await (script)(arg)`. A JS exception becomes a RunError carrying the page's last console lines."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise toolchain.ToolchainError(f"the Python package playwright is missing; {toolchain.SETUP_HINT}.")

    with StaticServer(mounts, isolated=isolated) as server, sync_playwright() as pw:
        browser = launch_chromium(pw)
        try:
            page = browser.new_page()
            console: list[str] = []
            page.on("console", lambda msg: console.append(msg.text))
            page.on("pageerror", lambda err: console.append(f"page error: {err}"))
            page.set_default_timeout(timeout_s * 1000)
            page.goto(f"{server.url}/{page_path}")
            page.wait_for_function(ready)
            try:
                return page.evaluate(script, arg)
            except Exception as err:  # Playwright reports the JS exception text
                log = "\n".join(console[-20:])
                raise RunError(f"{page_path} failed in Chromium: {err}\n{log}") from None
        finally:
            browser.close()


def run_in_chromium(library: Path, request: dict, timeout_s: float = 120) -> dict:
    mounts = {"/": HARNESS_DIR, "/tvmjs/": toolchain.tvmjs_bundle().parent, "/lib/": library.parent}
    return call_in_chromium(mounts, "index.html", "window.kilnReady === true",
                            "([url, request]) => window.kilnRun(url, request)",
                            [f"/lib/{library.name}", request], timeout_s)


def run_many_in_chromium(library: Path, device: str, calls: list[dict], timeout_s: float = 120) -> list[dict]:
    """Several calls ({func, inputs}) of one library on `device`, set up once (one page, one
    instance, the WebGPU pipelines compiled once); per call, {outputs}."""
    return run_in_chromium(library, {"device": device, "calls": calls}, timeout_s)["results"]
