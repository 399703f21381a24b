"""GGUF quantized blocks read as they are stored: integers plus per-group floats (a quantize.Grid),
so that a kiln bundle can keep the file's grid instead of dequantizing and quantizing again.

Block layouts (ggml's, as the `gguf` package's quants module documents them; elements run along a
row, i.e. along the input dimension):

  Q4_0  32 elements, 18 bytes: f16 d; 16 bytes of nibbles, element j (< 16) in the low nibble of
        byte j and element j + 16 in its high nibble.                      value (q - 8) * d
  Q4_1  32 elements, 20 bytes: f16 d, f16 m, then Q4_0's nibbles.          value q * d + m
  Q5_0  32 elements, 22 bytes: f16 d; uint32 of fifth bits (bit j for element j); Q4_0's nibbles.
                                                                           value (q - 16) * d
  Q5_1  32 elements, 24 bytes: f16 d, f16 m, the fifth bits, the nibbles.  value q * d + m
  Q8_0  32 elements, 34 bytes: f16 d; 32 int8.                             value q * d
  Q4_K  256 elements, 144 bytes: f16 d, f16 dmin, 12 bytes of 6-bit scales and mins for the eight
        32-element sub-blocks, 128 bytes of nibbles: 32-byte chunk c holds sub-block 2c in its low
        nibbles and sub-block 2c + 1 in its high ones.     value d * sc[s] * q - dmin * m[s]
  Q5_K  256 elements, 176 bytes: as Q4_K, with 32 bytes of fifth bits before the nibbles (bit s of
        byte i is the fifth bit of element i of sub-block s).
  Q6_K  256 elements, 210 bytes: 128 bytes of low nibbles, 64 bytes of high bit pairs, 16 int8
        scales (one per 16 elements), f16 d. Each half h (128 elements) uses ql[64h : 64h + 64] and
        qh[32h : 32h + 32]: element r of the half has low nibble ql[64h + r % 64] >> (4 * (r >= 64))
        and high pair qh[32h + r % 32] >> (2 * (r // 32)).  value d * sc[e // 16] * (q - 32)

Each scale and min below is an exact float32 (a float16, or a float16 times a small integer).
"""

from __future__ import annotations

import numpy as np

from kiln.model_defs.weight_format import F16_PAIRS, Grid, WeightFormat

# GGML type -> the cheapest kiln format that holds its grid exactly (model dtype float32):
# (bits, group size, zero, has min, scale storage).
GRID_FORMATS = {
    "Q4_0": (4, 32, 8, False, F16_PAIRS),
    "Q4_1": (4, 32, 0, True, F16_PAIRS),
    "Q4_K": (4, 32, 0, True, "float32"),   # d * sc needs more than float16's 11 bits
    "Q5_0": (8, 32, 128, False, F16_PAIRS),
    "Q5_1": (8, 32, 0, True, F16_PAIRS),
    "Q5_K": (8, 32, 0, True, "float32"),
    "Q8_0": (8, 32, 128, False, F16_PAIRS),
    "Q6_K": (8, 16, 128, False, "float32"),
}


def grid_format(type_name: str, model_dtype: str) -> WeightFormat | None:
    """The format that carries a tensor of GGML type `type_name` exactly; None for float types."""
    if type_name not in GRID_FORMATS:
        return None
    bits, group, zero, has_min, storage = GRID_FORMATS[type_name]
    return WeightFormat(model_dtype, bits, group, zero=zero, has_min=has_min, scale_dtype=storage)


def covering_format(formats: list[WeightFormat], model_dtype: str) -> WeightFormat:
    """The cheapest format holding every one of `formats` exactly (the parts of a fused matrix):
    the most bits, the smallest groups, a min if any has one, float32 scales if any needs them."""
    bits = max(f.bits for f in formats)
    has_min = any(f.has_min for f in formats)
    storage = "float32" if any(f.scale_dtype == "float32" for f in formats) else F16_PAIRS
    return WeightFormat(model_dtype, bits, min(f.group_size for f in formats),
                        zero=0 if has_min else 1 << (bits - 1), has_min=has_min, scale_dtype=storage)


def _f16(raw: np.ndarray) -> np.ndarray:
    """Two bytes per value (the last axis) -> float32."""
    return np.ascontiguousarray(raw).view(np.float16)[..., 0].astype(np.float32)


def _nibbles_32(qs: np.ndarray) -> np.ndarray:
    """[..., 16] bytes -> [..., 32] values: the low nibbles, then the high ones."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=-1)


def _fifth_bits(raw: np.ndarray) -> np.ndarray:
    """[..., 4] bytes of a little-endian uint32 -> [..., 32] bits, bit j for element j."""
    return np.unpackbits(raw, axis=-1, bitorder="little")


def _k_scales(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q4_K / Q5_K's 12 bytes -> (sc, m), 6-bit integers for the eight sub-blocks."""
    a, b, c = raw[..., 0:4], raw[..., 4:8], raw[..., 8:12]
    sc = np.concatenate([a & 0x3F, (c & 0x0F) | ((a >> 6) << 4)], axis=-1)
    m = np.concatenate([b & 0x3F, (c >> 4) | ((b >> 6) << 4)], axis=-1)
    return sc.astype(np.float32), m.astype(np.float32)


def read_grid(type_name: str, data: np.ndarray, rows: int, cols: int) -> Grid:
    """The grid of one tensor of `rows` x `cols` elements stored as `type_name` blocks (`data`:
    its bytes, one row of blocks per output row)."""
    raw = np.asarray(data, dtype=np.uint8).reshape(rows, -1)
    if type_name in ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"):
        size = {"Q4_0": 18, "Q4_1": 20, "Q5_0": 22, "Q5_1": 24, "Q8_0": 34}[type_name]
        b = raw.reshape(rows, cols // 32, size)
        d = _f16(b[..., 0:2])
        if type_name == "Q8_0":
            q = (b[..., 2:].view(np.int8).astype(np.int16) + 128).astype(np.uint8)
            return _grid(q, d, None, 128, 8, 32, rows)
        has_min = type_name in ("Q4_1", "Q5_1")
        at = 4 if has_min else 2
        m = _f16(b[..., 2:4]) if has_min else None
        if type_name.startswith("Q5"):
            q = _nibbles_32(b[..., at + 4:]) | (_fifth_bits(b[..., at:at + 4]) << 4)
            return _grid(q, d, m, 0 if has_min else 16, 5, 32, rows)
        return _grid(_nibbles_32(b[..., at:]), d, m, 0 if has_min else 8, 4, 32, rows)
    if type_name in ("Q4_K", "Q5_K"):
        size = 144 if type_name == "Q4_K" else 176
        b = raw.reshape(rows, cols // 256, size)
        d, dmin = _f16(b[..., 0:2]), _f16(b[..., 2:4])
        sc, m = _k_scales(b[..., 4:16])
        qs = b[..., -128:].reshape(rows, -1, 4, 32)
        q = np.stack([qs & 0x0F, qs >> 4], axis=3).reshape(rows, -1, 8, 32)  # sub-blocks 2c, 2c + 1
        if type_name == "Q5_K":
            qh = b[..., 16:48]  # [.., 32]: bit s of byte i belongs to element i of sub-block s
            high = (qh[..., None, :] >> np.arange(8, dtype=np.uint8)[:, None]) & 1
            q = q | (high << 4)
        scale = d[..., None] * sc
        mn = -(dmin[..., None] * m)
        return _grid(q, scale, mn, 0, 4 if type_name == "Q4_K" else 5, 32, rows)
    if type_name == "Q6_K":
        b = raw.reshape(rows, cols // 256, 210)
        ql = b[..., 0:128].reshape(rows, -1, 2, 64)
        qh = b[..., 128:192].reshape(rows, -1, 2, 32)
        low = np.concatenate([ql & 0x0F, ql >> 4], axis=-1)  # [.., half, 128]
        high = np.concatenate([(qh >> (2 * t)) & 3 for t in range(4)], axis=-1)  # [.., half, 128]
        q = (low | (high << 4)).reshape(rows, -1, 16, 16)
        scale = _f16(b[..., 208:210])[..., None] * b[..., 192:208].view(np.int8).astype(np.float32)
        return _grid(q, scale, None, 32, 6, 16, rows)
    raise ValueError(f"GGML type {type_name} has no kiln grid")


def _grid(q, scale, mn, zero, bits, group, rows) -> Grid:
    return Grid(np.ascontiguousarray(q.reshape(rows, -1), dtype=np.uint8), scale.reshape(rows, -1).astype(np.float32),
                None if mn is None else mn.reshape(rows, -1).astype(np.float32), zero, bits, group)
