"""kiln's linear kernels (model_defs/layers.py `matmul_nt`, scheduled by compiler/kernels/schedules.py:
LinearRule for WebGPU, LinearCPURule for WASM) equal NumPy, on WebGPU in headless Chromium and on WASM
in Node.

The module has the shapes that reach each branch of the schedules: an int4 linear with K a multiple
of 8 (packed words read once) followed by a residual add (a fused epilogue), and a plain f32 linear
with K not a multiple of 8 and no epilogue; each at 1 token (decode tiles), 2 tokens and 37 tokens
(prefill tiles; 37 is not a multiple of the 8 tokens a thread takes, so a tile runs past the end).
These take a symbolic token count, as prefill does; the `*_decode` functions take one token as a
static shape, as decode does (LinearCPURule then keeps the tile's sums on the stack and writes them
out through the epilogue per tile). `odd` has 70 output rows, not a multiple of the 4 rows of a
simd128 vector.
The packed formats compiler/weights/quantize.py defines each have a linear too (FORMATS): MLC's "_1", kiln's
scale + min with float16 pairs (scales decoded from their bits in the kernel: subnormal, negative
and zero ones included), and the per-tensor formats GGUF files carry over (int8 with float16 scales,
int4 + min with float32 scales, int8 in groups of 16).

On WebGPU the weights dequantize in place (layers.py `fields_in_place`: each field masked where it
lies, its scale times a power of two). Fed the identity matrix as its tokens, each quantized linear
returns its weights as its kernel dequantizes them, which must equal NumPy's `unpack` bit for bit,
on both targets."""

from __future__ import annotations

import numpy as np
import pytest

from kiln.testing import smoke
from kiln.model_defs.weight_format import F16_PAIRS, WeightFormat
from kiln.weights.quantize import get_quantization, pack_q4, quantize, unpack, unpack_q4
from kiln.testing.run_library import run_in_chromium, run_in_node
from kiln.kernels.schedules import rule_report, scheduled_kernels
from kiln.kernels.wasm_library import build_wasm_library, make_target

Q4_IN, Q4_OUT = 256, 512
F32_IN, F32_OUT = 100, 96
TOKENS = (1, 2, 37)
RUNNERS = {"wasm": (run_in_node, "cpu"), "webgpu": (run_in_chromium, "webgpu")}
PACKED_IN, PACKED_OUT = 96, 72
ODD_OUT = 70
FORMATS = {
    "q4f32_2": get_quantization("q4f32_2").weight_format(),
    "int8_f16": WeightFormat("float32", 8, 32, zero=128, scale_dtype=F16_PAIRS),
    "int4_min_f32": WeightFormat("float32", 4, 32, has_min=True, scale_dtype="float32"),
    "int8_g16_f32": WeightFormat("float32", 8, 16, zero=128, scale_dtype="float32"),
}


def linear_module(target: str):
    """q4(x, r) = x @ A^T + r with A int4, f32(x) = x @ B^T, packed_formats(x) = x @ P_i^T for each of
    FORMATS, odd(x) = x @ C^T with C in q4f32_2; n symbolic, or 1 in the `*_decode` functions. Each
    function takes the parameters after its inputs: a_q_weight, a_q_scale, b_weight, the packed
    linears', c's. Exported as kiln exports a model for `target` (fields in place on GPU targets)."""
    from tvm.relax.frontend import nn

    from kiln.model_defs.layers import Linear, fields_in_place

    class Linears(nn.Module):
        def __init__(self):
            self.a = Linear(Q4_IN, Q4_OUT, get_quantization("q4f32_1").weight_format())
            self.b = Linear(F32_IN, F32_OUT, WeightFormat("float32"))
            self.packed = nn.ModuleList([Linear(PACKED_IN, PACKED_OUT, fmt) for fmt in FORMATS.values()])
            self.c = Linear(Q4_IN, ODD_OUT, FORMATS["q4f32_2"])

        def q4(self, x, r):
            return self.a(x) + r

        def f32(self, x):
            return self.b(x)

        def packed_formats(self, x):
            return tuple(linear(x) for linear in self.packed)

        def odd(self, x):
            return self.c(x)

        q4_decode, f32_decode, packed_formats_decode, odd_decode = q4, f32, packed_formats, odd

    tokens = lambda width: nn.spec.Tensor([1, "n", width], "float32")  # noqa: E731
    one = lambda width: nn.spec.Tensor([1, 1, width], "float32")  # noqa: E731
    spec = {}
    for suffix, shape in (("", tokens), ("_decode", one)):
        spec.update({f"q4{suffix}": {"x": shape(Q4_IN), "r": shape(Q4_OUT)}, f"f32{suffix}": {"x": shape(F32_IN)},
                     f"packed_formats{suffix}": {"x": shape(PACKED_IN)}, f"odd{suffix}": {"x": shape(Q4_IN)}})
    with fields_in_place("gpu" in make_target(target).keys):
        mod, _ = Linears().export_tvm(spec=spec)
    return mod


def packed_weights(rng) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(the parameters of FORMATS' linears in order, their dequantized weights). Scales of 2^-20
    (float16 subnormals), 0 and negative values are in the mix."""
    params, weights = [], []
    for fmt in FORMATS.values():
        w = rng.standard_normal((PACKED_OUT, PACKED_IN)).astype("float32")
        w[0, :32] *= 2.0**-20  # a float16 subnormal scale
        w[1, 32:64] = 0  # a zero group
        w[2] -= 3  # negative mins
        packed = quantize(w, fmt)
        params += [packed[suffix] for suffix in fmt.param_shapes(PACKED_OUT, PACKED_IN)]
        weights.append(unpack(packed, fmt, PACKED_IN).astype("float64"))
    return params, weights


@pytest.fixture(scope="module")
def libraries(tmp_path_factory):
    out = tmp_path_factory.mktemp("linear")
    return {target: build_wasm_library(linear_module(target), target, out / f"linear_{target}.wasm")
            for target in ("wasm", "webgpu")}


@pytest.mark.parametrize("target, rule", [("webgpu", "kiln.Linear"), ("wasm", "kiln.LinearCPU")])
def test_linear_kernels_are_kilns(target, rule):
    rules = rule_report(scheduled_kernels(linear_module(target), make_target(target)))
    linear = {name: r for name, r in rules.items() if "matmul_nt" in name}
    assert linear and set(linear.values()) == {rule}, rules


@pytest.mark.parametrize("target", ["webgpu", "wasm"])
def test_linear_kernels_match_numpy(target, libraries, report):
    run, device = RUNNERS[target]
    rng = np.random.default_rng(3)
    q_weight, q_scale = pack_q4(rng.standard_normal((Q4_OUT, Q4_IN)).astype("float32"))
    w_q4 = unpack_q4(q_weight, q_scale, Q4_IN).astype("float64")
    w_f32 = rng.standard_normal((F32_OUT, F32_IN)).astype("float32")
    packed, w_packed = packed_weights(rng)
    odd_fmt = FORMATS["q4f32_2"]
    odd_packed = quantize(rng.standard_normal((ODD_OUT, Q4_IN)).astype("float32"), odd_fmt)
    w_odd = unpack(odd_packed, odd_fmt, Q4_IN).astype("float64")
    params = [q_weight, q_scale, w_f32, *packed, *(odd_packed[s] for s in odd_fmt.param_shapes(ODD_OUT, Q4_IN))]
    worst = 0.0
    for n in TOKENS:
        x = rng.standard_normal((1, n, Q4_IN)).astype("float32")
        r = rng.standard_normal((1, n, Q4_OUT)).astype("float32")
        x2 = rng.standard_normal((1, n, F32_IN)).astype("float32")
        x3 = rng.standard_normal((1, n, PACKED_IN)).astype("float32")
        cases = [("q4", [x, r, *params], [x.astype("float64") @ w_q4.T + r]),
                 ("f32", [x2, *params], [x2.astype("float64") @ w_f32.astype("float64").T]),
                 ("packed_formats", [x3, *params], [x3.astype("float64") @ w.T for w in w_packed]),
                 ("odd", [x, *params], [x.astype("float64") @ w_odd.T])]
        if n == 1:
            cases += [(f"{func}_decode", inputs, expected) for func, inputs, expected in cases]
        for func, inputs, expected in cases:
            result = run(libraries[target], {"device": device, "func": func,
                                             "inputs": [smoke.tensor_arg(a) for a in inputs]})
            assert len(result["outputs"]) == len(expected), func
            for name, out, want in zip([f"{func} {f}" for f in FORMATS] if len(expected) > 1 else [func],
                                       result["outputs"], expected):
                got = smoke.output_array(out)
                assert got.shape == want.shape, (name, n)
                np.testing.assert_allclose(got, want, rtol=0, atol=1e-3, err_msg=f"{name}, {n} tokens")
                worst = max(worst, float(np.abs(got - want).max()))
    report(f"\n[linear kernels, {target}] tokens {TOKENS}: max|diff| {worst:.1e}")

    # x = I: each token picks one column, so the outputs are the weights as the kernels dequantize
    # them (every product but one is 0 * w), which must be unpack's bit for bit
    eye = lambda k: np.eye(k, dtype="float32")[None]  # noqa: E731
    for func, inputs, wants in [("q4", [eye(Q4_IN), np.zeros((1, Q4_IN, Q4_OUT), "float32"), *params], [w_q4]),
                                ("packed_formats", [eye(PACKED_IN), *params], w_packed),
                                ("odd", [eye(Q4_IN), *params], [w_odd])]:
        result = run(libraries[target], {"device": device, "func": func,
                                         "inputs": [smoke.tensor_arg(a) for a in inputs]})
        assert len(result["outputs"]) == len(wants), func
        for name, out, want in zip([f"{func} {f}" for f in FORMATS] if len(wants) > 1 else [func],
                                   result["outputs"], wants):
            np.testing.assert_array_equal(smoke.output_array(out)[0], want.T.astype("float32"),
                                          err_msg=f"{name}: weights as dequantized on {target}")
