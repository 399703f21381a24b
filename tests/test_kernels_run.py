"""The dense+softmax module compiled by TVM runs in its real environments and equals NumPy:
WASM CPU kernels in Node, WebGPU kernels in headless Chromium on a real WebGPU adapter."""

import numpy as np
import pytest

from kiln.testing import smoke
from kiln.testing.run_library import describe_adapter, run_in_chromium, run_in_node

LENGTHS = (5, 33)  # two values of the symbolic sequence length
RUNNERS = {"wasm": (run_in_node, "cpu"), "webgpu": (run_in_chromium, "webgpu")}


@pytest.mark.parametrize("target", ["wasm", "webgpu"])
def test_dense_softmax_matches_numpy(target, dense_softmax_libraries, report):
    run, device = RUNNERS[target]
    rng = np.random.default_rng(42)
    w = rng.standard_normal((smoke.HIDDEN, smoke.CLASSES)).astype("float32")
    b = rng.standard_normal((smoke.CLASSES,)).astype("float32")
    for n in LENGTHS:
        x = rng.standard_normal((n, smoke.HIDDEN)).astype("float32")
        request = {"device": device, "func": "main", "inputs": [smoke.tensor_arg(a) for a in (x, w, b)]}
        result = run(dense_softmax_libraries[target], request)
        got = smoke.output_array(result["outputs"][0])
        assert got.shape == (n, smoke.CLASSES)
        np.testing.assert_allclose(got, smoke.softmax_reference(x, w, b), rtol=0, atol=1e-5)
        where = "Node" if target == "wasm" else "Chromium"
        report(f"\n[{target}] ran in {where}, {describe_adapter(result['adapter'])}; n={n} "
               f"max|diff|={np.abs(got - smoke.softmax_reference(x, w, b)).max():.1e}")
    if target == "webgpu":
        assert result["adapter"] is not None, "the WebGPU run reported no adapter"
    else:
        assert result["adapter"] is None
