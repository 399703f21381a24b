"""The sampling functions (compiler/webllm/sampling_kernels.py: WebLLM's six and kiln's argmax)
against NumPy references. Longer than 400 lines: the NumPy reference of each function sits beside
its cases.

The CPU kernels are built for native LLVM and run with the Relax VM (fast, exhaustive); the WebGPU
kernels are built into a real library and run in headless Chromium on a WebGPU adapter (one
browser session for all of them); the WASM CPU library is run in Node once.

The references restate the contract WebLLM 0.2.86 relies on (see the module docstring):
temperature <= 1e-5 is greedy (one-hot at the first maximal logit), argsort is descending and
stable, top-p keeps the sorted prefix up to the first cumulative probability >= top_p and samples
the first position j with u < c_j / c_cut. kiln_argmax is the first maximal index, np.argmax's
(and torch.argmax's) choice.
"""

from __future__ import annotations

import numpy as np
import pytest

from kiln.errors import UnsupportedError
from kiln.testing.run_library import run_many_in_chromium
from kiln.testing.smoke import output_array, tensor_arg
from kiln.webllm.sampling_kernels import (
    ARGMAX_FUNCTION,
    FUNCTION_NAMES,
    WEBLLM_FUNCTION_NAMES,
    add_sampling_functions,
    sampling_module,
)
from kiln.webllm.sampling_loops import THREADS

LOWEST = np.finfo(np.float32).min


# ---------------------------------------------------------------------------------- references


def softmax_ref(logits: np.ndarray, temperature: np.ndarray) -> np.ndarray:
    """logits [b, 1, V], temperature [b] -> probs [b, 1, V] (float64)."""
    out = np.zeros(logits.shape, dtype=np.float64)
    for r in range(logits.shape[0]):
        x = logits[r, 0].astype(np.float64)
        if temperature[r] > 1e-5:
            e = np.exp((x - x.max()) / np.float64(temperature[r]))
            out[r, 0] = e / e.sum()
        else:
            out[r, 0, int(np.argmax(x))] = 1.0  # np.argmax returns the first maximum
    return out


def argsort_ref(probs: np.ndarray):
    idx = np.argsort(-probs, axis=1, kind="stable").astype(np.int32)
    return np.take_along_axis(probs, idx, axis=1), idx


def top_p_ref(sorted_probs, sorted_indices, uniform, sample_indices, top_p, margin=1e-4):
    """Returns (tokens, ambiguous): `ambiguous[i]` marks samples whose token changes when u or
    top_p moves by `margin`, where float32 summation order may legitimately decide."""

    def draw(c, u, p):
        reach = np.nonzero(c >= p)[0]
        cut = int(reach[0]) if len(reach) else len(c) - 1
        hits = np.nonzero(u < c / c[cut])[0]
        return min(int(hits[0]) if len(hits) else cut, cut)

    tokens, ambiguous = [], []
    for u, r in zip(uniform, sample_indices):
        c = np.cumsum(sorted_probs[r].astype(np.float64))
        p = float(top_p[r])
        j = draw(c, float(u), p)
        nearby = {draw(c, float(u) + du, p + dp) for du in (-margin, margin)
                  for dp in (-margin, margin)}
        tokens.append(int(sorted_indices[r, j]))
        ambiguous.append(nearby != {j})
    return np.array(tokens, dtype=np.int32), np.array(ambiguous)


def penalty_ref(logits, seq_ids, pos2seq_id, token_ids, token_cnt, penalties):
    out = logits.copy()
    for i in range(len(token_ids)):
        seq = pos2seq_id[i]
        row = seq_ids[seq]
        presence, frequency, repetition = penalties[seq]
        x = np.float32(out[row, token_ids[i]] - presence - np.float32(token_cnt[i]) * frequency)
        out[row, token_ids[i]] = x * repetition if x < 0 else x / repetition
    return out


def logit_bias_ref(logits, pos2seq_id, token_ids, logit_bias):
    out = logits.copy()
    for i in range(len(token_ids)):
        out[pos2seq_id[i], token_ids[i]] += logit_bias[i]
    return out


def argmax_ref(logits: np.ndarray) -> np.ndarray:
    """logits [b, 1, V] -> the first index of each row's maximum, int32 [b]."""
    return np.argmax(logits[:, 0, :], axis=1).astype(np.int32)  # np.argmax returns the first


def argmax_logits(rng, vocab: int) -> np.ndarray:
    """[6, 1, V] rows for kiln_argmax: random; rounded to a few values (the maximum repeats); all
    equal (every index ties: 0); and maxima tied at chosen positions of the WebGPU kernel's threads
    (thread = index % THREADS): the first tie in a later thread than the second (200 and 300), two
    ties in one thread (44 and 300), and the maximum alone at the last index."""
    tied = {"later_thread": (vocab - 1, 300, 200), "same_thread": (300, 44), "last": (vocab - 1,)}
    assert 300 % THREADS == 44 and 200 % THREADS > 44
    rows = [rng.standard_normal(vocab) * 4, np.round(rng.standard_normal(vocab) * 2),
            np.full(vocab, -3.5)]
    for positions in tied.values():
        row = rng.standard_normal(vocab)
        row[[p for p in positions if p < vocab]] = 10.0
        rows.append(row)
    return np.stack(rows).astype(np.float32)[:, None, :]


def bitmask_ref(logits, seq_ids, bitmask):
    out = logits.copy()
    vocab = logits.shape[1]
    for row in seq_ids:
        for v in range(vocab):
            if (int(bitmask[row, v // 32]) >> (v % 32)) & 1 == 0:
                out[row, v] = LOWEST
    return out


# ------------------------------------------------------------------------------- native runs


@pytest.fixture(scope="module")
def vm():
    import tvm
    from tvm import relax

    executable = relax.build(sampling_module("llvm"), target="llvm")
    return relax.VirtualMachine(executable, tvm.cpu())


def nd(array):
    import tvm

    return tvm.runtime.tensor(np.ascontiguousarray(array))


def random_logits(rng, batch, vocab, scale=4.0):
    return (rng.standard_normal((batch, vocab)) * scale).astype(np.float32)


@pytest.mark.parametrize("vocab", [1, 7, 1000, 128256])
def test_softmax_with_temperature(vm, vocab):
    rng = np.random.default_rng(vocab)
    logits = random_logits(rng, 4, vocab)[:, None, :]
    # WebLLM sends max(temperature, 1e-6): 1e-6 is greedy decoding.
    temperature = np.array([1.0, 0.7, 1e-6, 2.5], dtype=np.float32)
    got = vm["softmax_with_temperature"](nd(logits), nd(temperature)).numpy()
    assert got.shape == logits.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, softmax_ref(logits, temperature), rtol=1e-5, atol=1e-7)


def test_greedy_picks_first_maximum(vm):
    logits = np.array([[[1.0, 5.0, 3.0, 5.0, 5.0]]], dtype=np.float32)
    got = vm["softmax_with_temperature"](nd(logits), nd(np.array([1e-6], np.float32))).numpy()
    assert got.tolist() == [[[0.0, 1.0, 0.0, 0.0, 0.0]]]


@pytest.mark.parametrize("vocab", [1, 5, 1000, 128256])
def test_argsort_probs(vm, vocab):
    rng = np.random.default_rng(vocab)
    probs = rng.random((3, vocab)).astype(np.float32)
    probs[1] = np.round(probs[1] * 8) / 8  # many ties: the order of equal values is stable
    result = vm["argsort_probs"](nd(probs))
    sorted_probs, sorted_indices = result[0].numpy(), result[1].numpy()
    want_probs, want_indices = argsort_ref(probs)
    assert sorted_indices.dtype == np.int32
    np.testing.assert_array_equal(sorted_probs, want_probs)
    np.testing.assert_array_equal(sorted_indices, want_indices)


@pytest.mark.parametrize("vocab", [1, 3, 1000, 128256])
def test_sample_with_top_p(vm, vocab):
    rng = np.random.default_rng(vocab)
    logits = random_logits(rng, 3, vocab, scale=3.0)[:, None, :]
    probs = softmax_ref(logits, np.ones(3, np.float32))[:, 0, :].astype(np.float32)
    sorted_probs, sorted_indices = argsort_ref(probs)
    top_p = np.array([1.0, 0.9, 1e-5], dtype=np.float32)
    uniform = rng.random(60).astype(np.float32)
    sample_indices = np.repeat(np.arange(3, dtype=np.int32), 20)
    got = vm["sample_with_top_p"](nd(sorted_probs), nd(sorted_indices), nd(uniform),
                                  nd(sample_indices), nd(top_p)).numpy()
    want, ambiguous = top_p_ref(sorted_probs, sorted_indices, uniform, sample_indices, top_p)
    assert got.dtype == np.int32 and got.shape == (60,)
    np.testing.assert_array_equal(got[~ambiguous], want[~ambiguous])
    assert (~ambiguous).sum() >= 40
    # top_p = 1e-5 (WebLLM's floor) keeps only the most likely token.
    np.testing.assert_array_equal(got[40:], np.full(20, sorted_indices[2, 0]))


def test_sample_with_top_p_edges(vm):
    sorted_probs = np.array([[0.5, 0.25, 0.125, 0.125]], dtype=np.float32)
    sorted_indices = np.array([[7, 3, 1, 0]], dtype=np.int32)
    cases = [  # (u, top_p, token)
        (0.0, 1.0, 7), (0.49, 1.0, 7), (0.5, 1.0, 3), (0.74, 1.0, 3), (0.75, 1.0, 1),
        (0.9, 1.0, 0), (0.999999, 1.0, 0),
        (0.6, 0.5, 7),              # nucleus {7}: c_cut = 0.5 reaches top_p exactly
        (0.6, 0.6, 7),              # nucleus {7, 3}: c / c_cut = [0.667, 1]
        (0.7, 0.6, 3),
        (0.99, 0.8, 1),             # nucleus {7, 3, 1}
        (0.5, -1.0, 7),             # top_p <= 0 (WebLLM's value for rows it does not sample)
    ]
    for u, p, token in cases:
        got = vm["sample_with_top_p"](nd(sorted_probs), nd(sorted_indices),
                                      nd(np.array([u], np.float32)), nd(np.array([0], np.int32)),
                                      nd(np.array([p], np.float32))).numpy()
        assert got.tolist() == [token], (u, p)


def test_greedy_pipeline_is_argmax(vm):
    """WebLLM at temperature 0: softmax(1e-6) -> argsort -> top-p sample == argmax, for any u."""
    rng = np.random.default_rng(3)
    logits = random_logits(rng, 1, 5000)
    logits[0, [17, 4000]] = logits.max() + 1  # a tie: the first index wins
    probs = vm["softmax_with_temperature"](nd(logits[:, None, :]),
                                           nd(np.array([1e-6], np.float32))).numpy()
    result = vm["argsort_probs"](nd(probs[:, 0, :]))
    for u in (0.0, 0.5, 0.999999):
        token = vm["sample_with_top_p"](result[0], result[1], nd(np.array([u], np.float32)),
                                        nd(np.array([0], np.int32)),
                                        nd(np.array([1.0], np.float32))).numpy()
        assert token.tolist() == [17]


@pytest.mark.parametrize("vocab", [1, 7, 256, 1000, 49152, 128256])
def test_kiln_argmax(vm, vocab):
    logits = argmax_logits(np.random.default_rng(vocab), vocab)
    got = vm[ARGMAX_FUNCTION](nd(logits)).numpy()
    assert got.dtype == np.int32 and got.shape == (6,)
    np.testing.assert_array_equal(got, argmax_ref(logits))
    if vocab > 300:
        assert got[2:].tolist() == [0, 200, 44, vocab - 1]


def test_kiln_argmax_is_the_greedy_pipelines_token(vm):
    """kiln_argmax picks what WebLLM's greedy pipeline (softmax at 1e-6, argsort, top-p) picks."""
    logits = argmax_logits(np.random.default_rng(9), 3000)
    probs = vm["softmax_with_temperature"](nd(logits), nd(np.full(6, 1e-6, np.float32))).numpy()
    result = vm["argsort_probs"](nd(probs[:, 0, :]))
    tokens = vm["sample_with_top_p"](result[0], result[1], nd(np.full(6, 0.5, np.float32)),
                                     nd(np.arange(6, dtype=np.int32)),
                                     nd(np.ones(6, np.float32))).numpy()
    np.testing.assert_array_equal(vm[ARGMAX_FUNCTION](nd(logits)).numpy(), tokens)


def test_apply_penalty_inplace(vm):
    rng = np.random.default_rng(5)
    logits = random_logits(rng, 2, 300)
    seq_ids = np.array([1, 0], dtype=np.int32)      # sequence s lives in logits row seq_ids[s]
    pos2seq_id = np.array([0, 0, 0, 1, 1], dtype=np.int32)
    token_ids = np.array([3, 100, 299, 3, 7], dtype=np.int32)
    token_cnt = np.array([1, 4, 2, 1, 9], dtype=np.int32)
    penalties = np.array([[0.5, 0.25, 1.3], [0.0, 0.0, 0.8]], dtype=np.float32)
    logits[1, 3], logits[1, 100] = -2.0, 3.0  # both signs through the repetition penalty
    data = nd(logits)
    vm["apply_penalty_inplace"](data, nd(seq_ids), nd(pos2seq_id), nd(token_ids),
                                nd(token_cnt), nd(penalties))
    want = penalty_ref(logits, seq_ids, pos2seq_id, token_ids, token_cnt, penalties)
    np.testing.assert_allclose(data.numpy(), want, rtol=1e-6)


def test_apply_logit_bias_inplace(vm):
    rng = np.random.default_rng(6)
    logits = random_logits(rng, 2, 50)
    pos2seq_id = np.array([0, 1, 1], dtype=np.int32)
    token_ids = np.array([0, 49, 10], dtype=np.int32)
    bias = np.array([-100.0, 5.5, 0.25], dtype=np.float32)
    data = nd(logits)
    vm["apply_logit_bias_inplace"](data, nd(pos2seq_id), nd(token_ids), nd(bias))
    np.testing.assert_array_equal(data.numpy(), logit_bias_ref(logits, pos2seq_id, token_ids, bias))


@pytest.mark.parametrize("vocab", [32, 77, 1000])
def test_apply_bitmask_inplace(vm, vocab):
    rng = np.random.default_rng(vocab)
    logits = random_logits(rng, 2, vocab)
    bitmask = rng.integers(-2**31, 2**31, size=(2, (vocab + 31) // 32), dtype=np.int64)
    bitmask = bitmask.astype(np.int32)
    seq_ids = np.array([1], dtype=np.int32)
    data = nd(logits)
    vm["apply_bitmask_inplace"](data, nd(seq_ids), nd(bitmask))
    np.testing.assert_array_equal(data.numpy(), bitmask_ref(logits, seq_ids, bitmask))


def test_add_sampling_functions_keeps_model_and_rejects_clashes():
    from tvm import relax, tirx

    n = tirx.Var("n", "int64")
    x = relax.Var("x", relax.TensorType((n,), "float32"))
    bb = relax.BlockBuilder()
    with bb.function("decode", [x]):
        bb.emit_func_output(x)
    model = bb.get()
    mod = add_sampling_functions(model, "webgpu")
    names = {gv.name_hint for gv in mod.get_global_vars()}
    assert set(FUNCTION_NAMES) | {"decode"} <= names
    assert set(FUNCTION_NAMES) == set(WEBLLM_FUNCTION_NAMES) | {"kiln_argmax"}
    assert {gv.name_hint for gv in model.get_global_vars()} == {"decode"}  # input untouched
    with pytest.raises(UnsupportedError):
        add_sampling_functions(mod, "webgpu")
    with pytest.raises(UnsupportedError):
        add_sampling_functions(model, "webgpu", dtype="float16")


def test_webgpu_build_uses_x_and_y_grids_only():
    """TVM's WebGPU code generator rejects blockIdx.z; our kernels bind x and y only."""
    import re

    text = sampling_module("webgpu").script()
    tags = set(re.findall(r'thread="([a-zA-Z]+\.[xyz])"', text))
    assert tags == {"blockIdx.x", "blockIdx.y", "threadIdx.x"}


# ------------------------------------------------------------------- real WebGPU and WASM runs


def _requests(device: str):
    """(function, inputs, expected-check) cases covering every function, small enough for
    SwiftShader. Vocab sizes exercise the bitonic sort below, at and above one 1024 block."""
    rng = np.random.default_rng(11)
    cases = []

    for vocab in (7, 1000, 5000):
        logits = random_logits(rng, 2, vocab)[:, None, :]
        temperature = np.array([0.8, 1e-6], dtype=np.float32)
        cases.append(("softmax_with_temperature", [logits, temperature],
                      lambda out, l=logits, t=temperature: np.testing.assert_allclose(
                          out[0], softmax_ref(l, t), rtol=1e-5, atol=1e-7)))

    for vocab in (1, 1000, 1024, 3001, 20000, 128256):  # 128256: Llama 3
        probs = rng.random((2, vocab)).astype(np.float32)
        probs[1] = np.round(probs[1] * 16) / 16

        def check(out, p=probs):
            want_probs, want_indices = argsort_ref(p)
            np.testing.assert_array_equal(out[0], want_probs)
            np.testing.assert_array_equal(out[1], want_indices)

        cases.append(("argsort_probs", [probs], check))

    for vocab in (5, 2000, 20000):
        logits = random_logits(rng, 2, vocab, scale=3.0)[:, None, :]
        probs = softmax_ref(logits, np.ones(2, np.float32))[:, 0, :].astype(np.float32)
        sorted_probs, sorted_indices = argsort_ref(probs)
        top_p = np.array([0.95, 1.0], dtype=np.float32)
        uniform = rng.random(16).astype(np.float32)
        sample_indices = np.repeat(np.arange(2, dtype=np.int32), 8)
        want, ambiguous = top_p_ref(sorted_probs, sorted_indices, uniform, sample_indices, top_p)

        def check(out, w=want, a=ambiguous):
            np.testing.assert_array_equal(out[0][~a], w[~a])

        cases.append(("sample_with_top_p",
                      [sorted_probs, sorted_indices, uniform, sample_indices, top_p], check))

    # In-place functions: the result must be in the logits passed in (out[-1] in the browser run,
    # which returns the first input after the outputs) and in the returned tensor.
    logits = random_logits(rng, 1, 3000)
    args = [np.array([0, 0, 0], np.int32), np.array([5, 2999, 1000], np.int32),
            np.array([-3.0, 1.5, 100.0], np.float32)]
    cases.append(("apply_logit_bias_inplace", [logits, *args],
                  lambda out, l=logits, a=args: [np.testing.assert_array_equal(
                      o, logit_bias_ref(l, *a)) for o in (out[0], out[-1])]))

    logits = random_logits(rng, 1, 3000)
    args = [np.array([0], np.int32), np.zeros(4, np.int32), np.array([1, 2, 3, 2998], np.int32),
            np.array([1, 2, 5, 1], np.int32), np.array([[0.3, 0.1, 1.2]], np.float32)]
    cases.append(("apply_penalty_inplace", [logits, *args],
                  lambda out, l=logits, a=args: [np.testing.assert_allclose(
                      o, penalty_ref(l, *a), rtol=1e-6) for o in (out[0], out[-1])]))

    logits = random_logits(rng, 1, 3001)
    bitmask = rng.integers(-2**31, 2**31, size=(1, (3001 + 31) // 32)).astype(np.int32)
    args = [np.array([0], np.int32), bitmask]
    cases.append(("apply_bitmask_inplace", [logits, *args],
                  lambda out, l=logits, a=args: [np.testing.assert_array_equal(
                      o, bitmask_ref(l, *a)) for o in (out[0], out[-1])]))

    for vocab in (7, 1000, 49152):  # 49152: SmolLM2
        logits = argmax_logits(rng, vocab)
        cases.append((ARGMAX_FUNCTION, [logits],
                      lambda out, l=logits: np.testing.assert_array_equal(out[0], argmax_ref(l))))

    # The first input comes back last: WebLLM reads the logits its *_inplace calls changed.
    requests = [{"device": device, "func": name, "inputs": [tensor_arg(a) for a in inputs], "readInputs": [0]}
                for name, inputs, _ in cases]
    return requests, [check for _, _, check in cases]


def _outputs(result):
    return [output_array(o) for o in result["outputs"]]


@pytest.fixture(scope="module")
def sampling_libraries(tmp_path_factory):
    from kiln.kernels.wasm_library import build_wasm_library

    out = tmp_path_factory.mktemp("sampling")
    return {target: build_wasm_library(sampling_module(target), target,
                                       out / f"sampling_{target}.wasm")
            for target in ("webgpu", "wasm")}


def test_webgpu_kernels_in_chromium(sampling_libraries):
    requests, checks = _requests("webgpu")
    results = run_many_in_chromium(sampling_libraries["webgpu"], "webgpu", requests, timeout_s=300)
    for request, result, check in zip(requests, results, checks):
        try:
            check(_outputs(result))
        except AssertionError as err:
            raise AssertionError(f"{request['func']} on WebGPU: {err}") from None


def test_wasm_kernels_in_node(sampling_libraries):
    """The WASM CPU library (argsort through the runtime's sort) in Node, on a few cases."""
    from kiln.testing.run_library import run_in_node

    requests, checks = _requests("cpu")
    cases = list(zip(requests, checks))
    for request, check in cases[::3] + [c for c in cases if c[0]["func"] == ARGMAX_FUNCTION]:
        result = run_in_node(sampling_libraries["wasm"], request)
        check(_outputs(result))
