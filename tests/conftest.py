"""Shared fixtures: compiled smoke libraries and the tiny test bundles are built once per test
session, whichever test files ask for them."""

import pytest

from compiler import smoke
from compiler.build import BuildOptions, build_bundle
from compiler.synthetic import make_checkpoint
from compiler.wasm_library import build_wasm_library


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
