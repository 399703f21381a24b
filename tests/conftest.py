"""Shared fixtures: compiled smoke libraries are built once per test session."""

import pytest

from compiler import smoke
from compiler.wasm_library import build_wasm_library


@pytest.fixture(scope="session")
def dense_softmax_libraries(tmp_path_factory):
    """The dense+softmax module linked for both targets: {"wasm": path, "webgpu": path}."""
    out = tmp_path_factory.mktemp("dense_softmax")
    mod = smoke.dense_softmax_module()
    return {target: build_wasm_library(mod, target, out / f"dense_softmax_{target}.wasm")
            for target in ("wasm", "webgpu")}
