"""Quantization schemes by name, and the int4 packing of MLC's "_1" layout (INTEROP.md).

q4 "_1": symmetric int4 in groups of `group_size` (32) along the INPUT (last) dimension of a
`[out, in]` weight. Per group `scale = max|w| / 7`, stored value `clamp(round(w/scale) + 7, 0, 14)`
and dequantized value `(q - 7) * scale`. Eight 4-bit values per uint32, value r at bits 4r..4r+3,
so `q_weight` is uint32 `[out, in_padded/8]` and `q_scale` is `[out, in_padded/32]`.

`in` that is not a multiple of the group size is padded with zeros up to the next multiple; the
model dequantizes the padded weight and slices it back to `in` (the zeros cost nothing in a dot
product either way). Rounding is NumPy's `np.round`, i.e. half to even.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from compiler.errors import UnsupportedError


@dataclass(frozen=True)
class Quantization:
    name: str           # "q0f32" | "q0f16" | "q4f32_1" | "q4f16_1"
    model_dtype: str    # "float32" | "float16": activations, norms, embeddings' dtype and scales
    bits: int           # 0 (weights kept in model_dtype) or 4
    group_size: int     # elements per scale along the input dimension; 0 when not quantized

    @property
    def quantized(self) -> bool:
        return self.bits > 0


QUANTIZATIONS: dict[str, Quantization] = {
    q.name: q for q in (
        Quantization("q0f32", "float32", 0, 0),
        Quantization("q0f16", "float16", 0, 0),
        Quantization("q4f32_1", "float32", 4, 32),
        Quantization("q4f16_1", "float16", 4, 32),
    )
}


def get_quantization(name: str) -> Quantization:
    try:
        return QUANTIZATIONS[name.strip().lower()]
    except KeyError:
        raise UnsupportedError(
            f"quantization {name!r} is not supported; use one of "
            f"{', '.join(sorted(QUANTIZATIONS))}.") from None


Q4_ZERO = 7   # stored value of 0.0; stored values span 0..14, i.e. -7..+7 steps of `scale`
Q4_MAX = 7.0  # |w| at the group's maximum maps to 7 steps


def pack_q4(weight: np.ndarray, group_size: int = 32,
            scale_dtype="float32") -> tuple[np.ndarray, np.ndarray]:
    """Quantize a float `[out, in]` weight to (q_weight uint32 [out, in_padded/8],
    q_scale scale_dtype [out, in_padded/group_size])."""
    if weight.ndim != 2:
        raise ValueError(f"pack_q4 takes a 2-D [out, in] weight, got shape {weight.shape}")
    if group_size <= 0 or group_size % 8:
        raise ValueError(f"group_size must be a positive multiple of 8, got {group_size}")
    scale_dtype = np.dtype(scale_dtype)
    if scale_dtype not in (np.float32, np.float16):
        raise ValueError(f"scale_dtype must be float32 or float16, got {scale_dtype}")
    out_features, in_features = weight.shape
    groups = -(-in_features // group_size)
    w = np.zeros((out_features, groups * group_size), dtype=np.float32)
    w[:, :in_features] = weight  # pads the input dimension with zeros (see module docstring)
    if not np.isfinite(w).all():
        raise ValueError("weight has NaN or infinite values and cannot be quantized")
    w = w.reshape(out_features, groups, group_size)

    # Scales are computed in f32, then stored in scale_dtype; we quantize with the *stored*
    # scale so that (q - 7) * stored_scale is the value the model reconstructs.
    scale = np.abs(w).max(axis=2) / np.float32(Q4_MAX)
    if scale.max(initial=0) > np.finfo(scale_dtype).max:
        raise ValueError(f"weight values are too large for {scale_dtype} scales")
    scale = scale.astype(scale_dtype)
    divisor = scale.astype(np.float32)
    divisor[divisor == 0] = 1.0  # all-zero group (or an f16 scale that underflowed): q = 7 -> 0.0
    q = w / divisor[:, :, None]
    np.round(q, out=q)  # half to even
    q += Q4_ZERO
    np.clip(q, 0, 2 * Q4_ZERO, out=q)
    q = q.astype(np.uint8).reshape(out_features, groups * group_size)

    # Two values per byte (even index in the low nibble), four bytes read as one little-endian
    # uint32: value r then sits at bits 4r..4r+3.
    packed = q[:, 0::2] | (q[:, 1::2] << 4)
    q_weight = np.ascontiguousarray(packed).view("<u4").astype(np.uint32, copy=False)
    return q_weight, scale


def unpack_q4(q_weight: np.ndarray, q_scale: np.ndarray, in_features: int) -> np.ndarray:
    """Dequantize to a float32 `[out, in_features]` weight (the reference for the kernels)."""
    if q_weight.dtype != np.uint32 or q_weight.ndim != 2 or q_scale.ndim != 2:
        raise ValueError("unpack_q4 takes a 2-D uint32 q_weight and a 2-D q_scale")
    out_features, words = q_weight.shape
    in_padded, groups = words * 8, q_scale.shape[1]
    if q_scale.shape[0] != out_features or groups == 0 or in_padded % groups:
        raise ValueError(f"q_scale shape {q_scale.shape} does not match q_weight {q_weight.shape}")
    if not 0 <= in_features <= in_padded:
        raise ValueError(f"in_features {in_features} exceeds the packed width {in_padded}")
    shifts = np.arange(0, 32, 4, dtype=np.uint32)
    q = (q_weight[:, :, None] >> shifts) & np.uint32(0xF)  # [out, words, 8], value r at bits 4r
    w = q.reshape(out_features, groups, in_padded // groups).astype(np.float32) - Q4_ZERO
    w *= q_scale.astype(np.float32)[:, :, None]
    return np.ascontiguousarray(w.reshape(out_features, in_padded)[:, :in_features])
