"""A compiled executable with constants baked in (float32 matrices, an int32-indexed table) loads
and runs through the web runtime built with our own io/serializer headers: this proves they read
exactly what TVM's compiler wrote."""

import numpy as np
import pytest

from kiln.testing import smoke
from kiln.testing.run_library import run_in_node
from kiln.kernels.wasm_library import build_wasm_library


@pytest.fixture(scope="module")
def constants_library(tmp_path_factory):
    weights = smoke.constant_weights(seed=3)
    mod = smoke.embedded_constants_module(weights)
    path = build_wasm_library(mod, "wasm", tmp_path_factory.mktemp("consts") / "consts.wasm")
    return path, weights


def test_embedded_float_constants(constants_library):
    path, weights = constants_library
    x = np.random.default_rng(1).standard_normal((7, smoke.HIDDEN)).astype("float32")
    result = run_in_node(path, {"device": "cpu", "func": "main", "inputs": [smoke.tensor_arg(x)]})
    got = smoke.output_array(result["outputs"][0])
    np.testing.assert_allclose(got, smoke.softmax_reference(x, weights["w"], weights["b"]), atol=1e-5, rtol=0)


def test_embedded_table_lookup(constants_library):
    path, weights = constants_library
    ids = np.array([0, 11, 4, 4, 7], dtype="int32")
    result = run_in_node(path, {"device": "cpu", "func": "lookup", "inputs": [smoke.tensor_arg(ids)]})
    got = smoke.output_array(result["outputs"][0])
    np.testing.assert_array_equal(got, weights["table"][ids] * np.float32(2.0))
