"""Weight formats (compiler/weights/quantize.py): exact bit layouts, the searched scales (never worse than
the plain rules, per group), padding, zero groups, float16 scales, bad input, speed."""

import time
import warnings

import numpy as np
import pytest

from kiln.errors import UnsupportedError
from kiln.model_defs.weight_format import F16_PAIRS, Grid, WeightFormat
from kiln.weights.quantize import (QUANTIZATIONS, get_quantization, pack, pack_q4,
                                    quantize, unpack, unpack_q4)

Q4_1 = get_quantization("q4f32_1").weight_format()
Q4_2 = get_quantization("q4f32_2").weight_format()


def test_named_schemes():
    assert sorted(QUANTIZATIONS) == ["q0f16", "q0f32", "q4f16_1", "q4f16_2", "q4f32_1", "q4f32_2"]
    q = get_quantization("q4f16_1")
    assert (q.model_dtype, q.bits, q.group_size, q.quantized, q.webllm_layout) == ("float16", 4, 32, True, True)
    assert q.weight_format() == WeightFormat("float16", 4, 32, zero=7, scale_dtype="float16")
    q = get_quantization("q4f16_2")
    assert not q.webllm_layout
    assert q.weight_format() == WeightFormat("float16", 4, 32, has_min=True, scale_dtype=F16_PAIRS)
    assert q.weight_format().bits_per_param == 5.0 and Q4_1.bits_per_param == 5.0
    assert get_quantization("q4f16_1").weight_format().bits_per_param == 4.5
    q = get_quantization("q0f32")
    assert (q.model_dtype, q.bits, q.quantized) == ("float32", 0, False)
    with pytest.raises(UnsupportedError) as info:
        get_quantization("q3f16_0")
    assert "q3f16_0" in str(info.value) and "q4f32_2" in str(info.value)


def test_exact_bit_layout():
    # 4 bits: value r of a word at bits 4r..4r+3; float16 pairs: group g in half g % 2 of word g // 2.
    q = np.array([list(range(16)) * 4], np.uint8)  # one row, 64 values, 2 groups
    scale = np.array([[0.5, -2.0]], np.float32)
    mn = np.array([[1.0, 0.0]], np.float32)
    fmt = WeightFormat("float32", 4, 32, has_min=True, scale_dtype=F16_PAIRS)
    params = pack(Grid(q, scale, mn, 0, 4, 32), fmt)
    assert params["q_weight"].tolist() == [[0x76543210, 0xFEDCBA98] * 4]
    assert params["q_scale"].tolist() == [[0x3800 | (0xC000 << 16)]]  # f16 0.5 and -2.0
    assert params["q_min"].tolist() == [[0x3C00]]  # f16 1.0 and 0.0
    expected = np.concatenate([np.arange(16) * 0.5 + 1] * 2 + [np.arange(16) * -2.0] * 2).astype(np.float32)
    np.testing.assert_array_equal(unpack(params, fmt, 64)[0], expected)
    # 8 bits, an odd group count (the last pair's high half is zero), float32 scales.
    fmt8 = WeightFormat("float32", 8, 32, zero=128, scale_dtype="float32")
    q8 = np.arange(96, dtype=np.uint8)[None]
    params = pack(Grid(q8, np.array([[1, 2, 4]], np.float32), None, 128, 8, 32), fmt8)
    assert params["q_weight"][0, :2].tolist() == [0x03020100, 0x07060504] and params["q_scale"].dtype == np.float32
    np.testing.assert_array_equal(unpack(params, fmt8, 96)[0], (np.arange(96) - 128.0) * np.repeat([1, 2, 4], 32))
    pairs = pack(Grid(q8, np.array([[1, 2, 4]], np.float32), None, 128, 8, 32), WeightFormat(
        "float32", 8, 32, zero=128, scale_dtype=F16_PAIRS))["q_scale"]
    assert pairs.tolist() == [[0x3C00 | (0x4000 << 16), 0x4400]]


def test_pack_refuses_values_it_cannot_store_exactly():
    grid = Grid(np.zeros((1, 32), np.uint8), np.array([[0.1]], np.float32), None, 8, 4, 32)
    with pytest.raises(ValueError, match="float16"):
        pack(grid, WeightFormat("float32", 4, 32, zero=8, scale_dtype=F16_PAIRS))


def _plain_rule_error(w, fmt):
    """Per group squared error of the rules the search starts from: max|w| / 7 (MLC), (max - min) / 15."""
    g = w.reshape(w.shape[0], -1, 32).astype(np.float64)
    if fmt.has_min:
        lo, hi = g.min(axis=2, keepdims=True), g.max(axis=2, keepdims=True)
        s = (hi - lo) / 15
        deq = np.round((g - lo) / s) * s + lo
    else:
        s = np.abs(g).max(axis=2, keepdims=True) / 7
        deq = np.round(g / s) * s
    return ((deq - g) ** 2).sum(axis=2)


@pytest.mark.parametrize("fmt", [Q4_1, Q4_2], ids=["q4_1", "q4_2"])
def test_search_beats_the_plain_rule(fmt):
    rng = np.random.default_rng(1)
    w = (rng.standard_normal((256, 128)) * rng.uniform(0.001, 2, (256, 1))).astype(np.float32)
    w[:, ::29] *= 5  # outliers, as trained weights have
    deq = unpack(quantize(w, fmt), fmt, 128)
    err = ((deq.astype(np.float64) - w).reshape(256, -1, 32) ** 2).sum(axis=2)
    plain = _plain_rule_error(w, fmt)
    # f16 storage of min/scale may cost a hair on a group where the search found nothing better.
    assert np.all(err <= plain * (1 + 1e-3) + 1e-12)
    assert err.sum() < 0.9 * plain.sum(), (err.sum(), plain.sum())


def test_q4_1_uses_all_sixteen_levels_and_signed_scales():
    # The largest magnitude goes to step +8 (stored 15), with a negative scale when it is negative.
    w = np.linspace(-1, 0.5, 32, dtype=np.float32)[None]
    q_weight, q_scale = pack_q4(w)
    assert q_scale[0, 0] < 0
    assert unpack_q4(q_weight, q_scale, 32)[0, 0] == pytest.approx(-1, abs=0.1)
    stored = (q_weight[0, :, None] >> np.arange(0, 32, 4, dtype=np.uint32)) & 15
    assert stored.max() == 15


def test_input_dim_padding():
    rng = np.random.default_rng(2)
    w = rng.standard_normal((3, 40)).astype(np.float32)
    for fmt in (Q4_1, Q4_2):
        params = quantize(w, fmt)
        assert params["q_weight"].shape == (3, 8)
        deq = unpack(params, fmt, 40)
        assert deq.shape == (3, 40)
        assert np.abs(w - deq).max() < 0.25 * np.abs(w).max()
    # The padded group's scale comes from its 8 real values (and zeros).
    q_weight, q_scale = pack_q4(w)
    assert q_scale.shape == (3, 2)
    assert np.all(np.abs(q_scale[:, 1]) <= np.abs(w[:, 32:]).max(axis=1) / 7 * 1.2)


def test_zero_group_dequantizes_to_exact_zero_without_warnings():
    w = np.zeros((2, 64), np.float32)
    w[1, 32:] = np.linspace(-1, 1, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a 0/0 would warn
        for fmt in (Q4_1, Q4_2, get_quantization("q4f16_1").weight_format()):
            deq = unpack(quantize(w, fmt), fmt, 64)
            assert not np.isnan(deq).any()
            assert (deq[0] == 0).all() and (deq[1, :32] == 0).all()


@pytest.mark.parametrize("fmt", [get_quantization("q4f16_1").weight_format(), Q4_2], ids=["q4f16_1", "q4_2"])
def test_f16_scales_are_the_ones_used_for_quantizing(fmt):
    # Each w lands on the nearest step of the STORED (f16) scale and min, not of the f32 ones searched.
    w = np.linspace(-0.1, 0.13, 32, dtype=np.float32)[None]
    params = quantize(w, fmt)
    deq = unpack(params, fmt, 32)
    s = unpack({**params, "q_weight": np.full((1, 4), 0x11111111, np.uint32)}, fmt, 32)[0, 0]  # q = 1
    m = unpack({**params, "q_weight": np.zeros((1, 4), np.uint32)}, fmt, 32)[0, 0]  # q = 0
    s -= m
    assert s != 0 and np.float32(s).astype(np.float16) == s
    assert np.array_equal(deq, np.clip(np.round((w - m) / s), 0, 15) * s + m)


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        pack_q4(np.full((1, 32), np.nan, np.float32))
    with pytest.raises(ValueError, match="float16"):
        pack_q4(np.full((1, 32), 1e6, np.float32), scale_dtype="float16")
    with pytest.raises(ValueError, match="float16"):
        quantize(np.full((1, 32), 1e6, np.float32), Q4_2)
    with pytest.raises(ValueError, match="2-D"):
        pack_q4(np.zeros(32, np.float32))


def test_large_weight_packs_quickly():
    # SmolLM2-135M's embedding: the whole 135M model converts in well under a minute.
    w = (np.random.default_rng(4).standard_normal((49152, 576)) * 0.02).astype(np.float32)
    quantize(w[:1024], Q4_2)  # warm up
    for fmt in (Q4_1, Q4_2):
        start = time.perf_counter()
        params = {}
        for i in range(0, 49152, 4096):  # as convert_weights packs, in blocks of rows
            params = quantize(w[i:i + 4096], fmt)
        elapsed = time.perf_counter() - start
        assert params["q_weight"].shape == (4096, 72)
        assert elapsed < 15.0, f"quantizing [49152, 576] to {fmt.describe()} took {elapsed:.2f}s"
