"""q4 "_1" packing: error bound, exact bit layout, padding, zero groups, f16 scales, speed."""

import time
import warnings

import numpy as np
import pytest

from compiler.errors import UnsupportedError
from compiler.quantize import QUANTIZATIONS, get_quantization, pack_q4, unpack_q4


def test_named_schemes():
    assert sorted(QUANTIZATIONS) == ["q0f16", "q0f32", "q4f16_1", "q4f32_1"]
    q = get_quantization("q4f16_1")
    assert (q.model_dtype, q.bits, q.group_size, q.quantized) == ("float16", 4, 32, True)
    q = get_quantization("q0f32")
    assert (q.model_dtype, q.bits, q.quantized) == ("float32", 0, False)
    with pytest.raises(UnsupportedError) as info:
        get_quantization("q3f16_0")
    assert "q3f16_0" in str(info.value) and "q4f32_1" in str(info.value)


@pytest.mark.parametrize("scale_dtype", ["float32", "float16"])
def test_round_trip_error_is_at_most_half_a_step(scale_dtype):
    rng = np.random.default_rng(1)
    w = (rng.standard_normal((64, 96)) * rng.uniform(0.001, 2, (64, 1))).astype(np.float32)
    q_weight, q_scale = pack_q4(w, scale_dtype=scale_dtype)
    assert q_weight.dtype == np.uint32 and q_weight.shape == (64, 12)
    assert q_scale.dtype == np.dtype(scale_dtype) and q_scale.shape == (64, 3)
    deq = unpack_q4(q_weight, q_scale, 96)
    assert deq.dtype == np.float32 and deq.shape == w.shape
    step = np.repeat(q_scale.astype(np.float32), 32, axis=1)
    assert np.all(np.abs(w - deq) <= step / 2 * (1 + 1e-6))
    # The largest |w| of each group is reproduced to within f16 rounding of its scale.
    group_max = np.abs(w).reshape(64, 3, 32).max(axis=2)
    np.testing.assert_allclose(q_scale.astype(np.float32) * 7, group_max, rtol=1e-3)


def test_exact_bit_layout():
    # One row of one group: known integers k in -7..7 times scale 0.5 (max |w| = 3.5).
    k = np.array([-7, -6, -5, -4, -3, -2, -1, 0,
                  1, 2, 3, 4, 5, 6, 7, -7,
                  0, 0, 0, 0, 0, 0, 0, 0,
                  7, 0, 0, 0, 0, 0, 0, -7])
    w = (k * 0.5).astype(np.float32)[None, :]
    q_weight, q_scale = pack_q4(w)
    assert q_scale.tolist() == [[0.5]]
    # Stored value k + 7, value r of a word at bits 4r..4r+3 (written out by hand).
    assert q_weight.tolist() == [[0x76543210, 0x0EDCBA98, 0x77777777, 0x0777777E]]
    np.testing.assert_array_equal(unpack_q4(q_weight, q_scale, 32), w)


def test_rounding_is_half_to_even():
    # With scale 1 (max 7): 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, -0.5 -> 0, -1.5 -> -2.
    w = np.zeros((1, 32), np.float32)
    w[0, :6] = [7, 0.5, 1.5, 2.5, -0.5, -1.5]
    deq = unpack_q4(*pack_q4(w), 32)
    assert deq[0, :6].tolist() == [7, 0, 2, 2, 0, -2]


def test_input_dim_padding():
    rng = np.random.default_rng(2)
    w = rng.standard_normal((3, 40)).astype(np.float32)
    q_weight, q_scale = pack_q4(w)
    assert q_weight.shape == (3, 8) and q_scale.shape == (3, 2)
    # Columns 40..63 are zero padding: stored 7 everywhere, so words 5..7 are 0x77777777.
    assert (q_weight[:, 5:] == 0x77777777).all()
    deq = unpack_q4(q_weight, q_scale, 40)
    assert deq.shape == (3, 40)
    np.testing.assert_array_less(np.abs(w - deq), np.repeat(q_scale, 32, axis=1)[:, :40] / 2 + 1e-7)
    # The padded group's scale comes from its 8 real values only.
    np.testing.assert_allclose(q_scale[:, 1], np.abs(w[:, 32:]).max(axis=1) / 7, rtol=1e-6)


def test_zero_group_dequantizes_to_exact_zero_without_warnings():
    w = np.zeros((2, 64), np.float32)
    w[1, 32:] = np.linspace(-1, 1, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a 0/0 would warn
        for scale_dtype in ("float32", "float16"):
            q_weight, q_scale = pack_q4(w, scale_dtype=scale_dtype)
            deq = unpack_q4(q_weight, q_scale, 64)
            assert q_scale[0, 0] == 0 and q_scale[0, 1] == 0 and q_scale[1, 0] == 0
            assert (q_weight[0] == 0x77777777).all()
            assert not np.isnan(deq).any()
            assert (deq[0] == 0).all() and (deq[1, :32] == 0).all()


def _reference_pack(w, scale_dtype):
    """Element by element, the way INTEROP.md states the format."""
    out, n = w.shape
    words = np.zeros((out, n // 8), np.uint32)
    scales = np.zeros((out, n // 32), scale_dtype)
    for i in range(out):
        for g in range(n // 32):
            group = w[i, 32 * g:32 * g + 32]
            s = np.float32(np.max(np.abs(group)) / np.float32(7)).astype(scale_dtype)
            scales[i, g] = s
            s32 = np.float32(s)
            for j, x in enumerate(group):
                q = 7 if s32 == 0 else int(min(max(np.round(x / s32) + 7, 0), 14))
                col = 32 * g + j
                words[i, col // 8] |= np.uint32(q << (4 * (col % 8)))
    return words, scales


@pytest.mark.parametrize("scale_dtype", ["float32", "float16"])
def test_matches_elementwise_reference(scale_dtype):
    rng = np.random.default_rng(3)
    w = (rng.standard_normal((4, 64)) * 0.05).astype(np.float32)
    w[0, 0:32] *= 1000  # a group whose f16 scale is far from the others
    q_weight, q_scale = pack_q4(w, scale_dtype=scale_dtype)
    ref_weight, ref_scale = _reference_pack(w, np.dtype(scale_dtype))
    np.testing.assert_array_equal(q_scale, ref_scale)
    np.testing.assert_array_equal(q_weight, ref_weight)


def test_f16_scale_is_the_one_used_for_quantizing():
    # max|w|/7 = 0.1/7 is not an f16 value; dequantizing with the stored f16 scale must still
    # land each w on its nearest step (|w - deq| <= scale16/2), which only holds if q was
    # computed with the f16-rounded scale.
    w = np.zeros((1, 32), np.float32)
    w[0] = np.linspace(-0.1, 0.1, 32, dtype=np.float32)
    q_weight, q_scale = pack_q4(w, scale_dtype="float16")
    s16 = np.float32(q_scale[0, 0])
    assert s16 != np.float32(0.1) / 7
    deq = unpack_q4(q_weight, q_scale, 32)
    assert np.all(np.abs(w - deq) <= s16 / 2 * (1 + 1e-6))


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        pack_q4(np.full((1, 32), np.nan, np.float32))
    with pytest.raises(ValueError, match="float16"):
        pack_q4(np.full((1, 32), 1e6, np.float32), scale_dtype="float16")
    with pytest.raises(ValueError, match="2-D"):
        pack_q4(np.zeros(32, np.float32))


def test_large_weight_packs_quickly():
    w = (np.random.default_rng(4).standard_normal((49152, 576)) * 0.02).astype(np.float32)
    pack_q4(w[:1024])  # warm up
    start = time.perf_counter()
    q_weight, q_scale = pack_q4(w)
    elapsed = time.perf_counter() - start
    assert q_weight.shape == (49152, 72) and q_scale.shape == (49152, 18)
    assert elapsed < 3.0, f"pack_q4 took {elapsed:.2f}s for [49152, 576]"
