"""Quantization schemes by name, the weight formats they store, and how weights are packed.

Names (the field's convention, `q{bits}f{model dtype}_{layout}`):

  q0f32, q0f16       no quantization: weights in the model dtype.
  q4f32_1, q4f16_1   MLC's layout (INTEROP.md), so the weights are also a WebLLM/MLC model: int4 in
                     groups of 32 along the input dimension, `q_scale` in the model dtype, value
                     `(q - 7) * scale`. kiln stores q in 0..15, so all 16 levels are used (steps -7..+8;
                     a negative scale mirrors them to -8..+7), with the scale chosen per group by a
                     search that minimises the group's squared error.
  q4f32_2, q4f16_2   kiln's layout: int4 in groups of 32 with a scale AND a min per group, value
                     `q * scale + min`, both stored as float16 (5 bits per parameter, as llama.cpp's
                     Q4_1), chosen by a search. From a GGUF file each tensor instead keeps the grid
                     its blocks already have (WeightFormat per tensor: 4 or 8 bits, with or without a
                     min, float16 or float32 scales, groups of 32 or 16), so that the bundle's weights
                     dequantize to exactly the file's values; compiler/checkpoint/gguf_blocks.py reads them.

Packing, for every quantized WeightFormat: `q_weight` uint32 `[out, in_padded * bits / 32]` with
value r of a word at bits `bits*r ..`; `q_scale` (and `q_min`) per group, either as their dtype
`[out, groups]` or, for F16_PAIRS, two float16 values per uint32 `[out, ceil(groups / 2)]` (group g
in the low half of word g // 2 when g is even), which any WebGPU adapter reads without the
`shader-f16` feature. The kernels compute `(q - zero) * scale + min` in float32 and cast the value
to the model dtype (model_defs/layers.py).

`in` that is not a multiple of the group size is padded with zeros up to the next multiple; the
model dequantizes the padded weight and slices it back to `in`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from kiln.errors import UnsupportedError
from kiln.model_defs.weight_format import F16_PAIRS, Grid, WeightFormat

@dataclass(frozen=True)
class Quantization:
    name: str           # "q0f32" | "q0f16" | "q4f32_1" | "q4f16_1" | "q4f32_2" | "q4f16_2"
    model_dtype: str    # "float32" | "float16": activations, norms, embeddings' dtype
    bits: int           # 0 (weights kept in model_dtype) or 4
    group_size: int     # elements per scale along the input dimension; 0 when not quantized
    layout: int = 0     # 1: MLC's symmetric layout; 2: kiln's scale + min layout with per-tensor formats

    @property
    def quantized(self) -> bool:
        return self.bits > 0

    @property
    def webllm_layout(self) -> bool:
        """Whether the weights follow MLC's layout (so MLC's own model libraries could use them)."""
        return self.layout != 2

    def weight_format(self) -> WeightFormat:
        """The format of a weight quantized from float values (every matrix of an HF checkpoint)."""
        if self.layout == 1:
            return WeightFormat(self.model_dtype, 4, self.group_size, zero=Q4_ZERO, scale_dtype=self.model_dtype)
        if self.layout == 2:
            return WeightFormat(self.model_dtype, 4, self.group_size, has_min=True, scale_dtype=F16_PAIRS)
        return WeightFormat(self.model_dtype)


QUANTIZATIONS: dict[str, Quantization] = {
    q.name: q for q in (
        Quantization("q0f32", "float32", 0, 0),
        Quantization("q0f16", "float16", 0, 0),
        Quantization("q4f32_1", "float32", 4, 32, 1),
        Quantization("q4f16_1", "float16", 4, 32, 1),
        Quantization("q4f32_2", "float32", 4, 32, 2),
        Quantization("q4f16_2", "float16", 4, 32, 2),
    )
}
# kiln build's default: GGUF input keeps its grids exactly (float32 arithmetic); float checkpoints
# get kiln's searched scale + min format with float16 activations (half the memory).
DEFAULT_GGUF_QUANTIZATION = "q4f32_2"
DEFAULT_QUANTIZATION = "q4f16_2"


def get_quantization(name: str) -> Quantization:
    try:
        return QUANTIZATIONS[name.strip().lower()]
    except KeyError:
        raise UnsupportedError(
            f"quantization {name!r} is not supported; use one of "
            f"{', '.join(sorted(QUANTIZATIONS))}.") from None


Q4_ZERO = 7   # MLC's stored value of 0.0: stored 0..15 are steps -7..+8 of `scale`


def _stored(values: np.ndarray, scale_dtype: str) -> np.ndarray:
    """Per-group floats rounded to how `scale_dtype` stores them, as float32."""
    dtype = np.float32 if scale_dtype == "float32" else np.float16
    with np.errstate(over="ignore"):
        out = values.astype(dtype)
    if not np.isfinite(out).all():
        raise ValueError(f"weight values are too large for {np.dtype(dtype).name} scales")
    return out.astype(np.float32)


def pack(grid: Grid, fmt: WeightFormat) -> dict[str, np.ndarray]:
    """Parameter suffix -> array, for a grid already in `fmt`'s shape (Grid.to_format). Raises
    ValueError if a scale or min is not exactly storable in fmt.scale_dtype."""
    if grid.bits != fmt.bits or grid.group != fmt.group_size or (grid.min is not None) != fmt.has_min:
        raise ValueError(f"grid ({grid.bits} bits, groups of {grid.group}) is not in format {fmt.describe()}")
    rows, cols = grid.q.shape
    per_word = fmt.per_word
    q = grid.q.astype(np.uint32).reshape(rows, cols // per_word, per_word)
    words = np.zeros((rows, cols // per_word), np.uint32)
    for r in range(per_word):  # value r of a word at bits bits*r ..
        words |= q[:, :, r] << np.uint32(fmt.bits * r)
    out = {"q_weight": words, "q_scale": _side(grid.scale, fmt)}
    if fmt.has_min:
        out["q_min"] = _side(grid.min, fmt)
    return out


def _side(values: np.ndarray, fmt: WeightFormat) -> np.ndarray:
    if fmt.scale_dtype != F16_PAIRS:
        out = values.astype(fmt.scale_dtype)
        if not np.array_equal(out.astype(np.float32), values):
            raise ValueError(f"per-group values are not exactly storable as {fmt.scale_dtype}")
        return out
    half = values.astype(np.float16)
    if not np.array_equal(half.astype(np.float32), values):
        raise ValueError("per-group values are not exactly storable as float16")
    rows, groups = half.shape
    bits = np.zeros((rows, groups + groups % 2), np.uint16)
    bits[:, :groups] = half.view(np.uint16)
    return (bits[:, 0::2].astype(np.uint32) | (bits[:, 1::2].astype(np.uint32) << np.uint32(16)))


def _unside(stored: np.ndarray, fmt: WeightFormat, groups: int) -> np.ndarray:
    if fmt.scale_dtype != F16_PAIRS:
        return stored.astype(np.float32)
    halves = np.stack([stored & np.uint32(0xFFFF), stored >> np.uint32(16)], axis=-1).astype(np.uint16)
    return halves.reshape(stored.shape[0], -1)[:, :groups].view(np.float16).astype(np.float32)


def unpack(params: dict[str, np.ndarray], fmt: WeightFormat, in_features: int) -> np.ndarray:
    """Dequantize packed parameters (`pack`'s output) to float32 `[out, in_features]`, as the
    kernels do: the reference for kernel tests and the exact carry-over checks."""
    words = params["q_weight"]
    if words.dtype != np.uint32 or words.ndim != 2:
        raise ValueError("unpack takes a 2-D uint32 q_weight")
    rows = words.shape[0]
    cols = words.shape[1] * fmt.per_word
    if cols % fmt.group_size or not 0 <= in_features <= cols:
        raise ValueError(f"q_weight {words.shape} does not hold {in_features} columns of {fmt.describe()}")
    groups = cols // fmt.group_size
    shifts = np.arange(0, 32, fmt.bits, dtype=np.uint32)
    q = ((words[:, :, None] >> shifts) & np.uint32((1 << fmt.bits) - 1)).reshape(rows, cols).astype(np.uint8)
    scale = _unside(params["q_scale"], fmt, groups)
    mn = _unside(params["q_min"], fmt, groups) if fmt.has_min else None
    if scale.shape != (rows, groups):
        raise ValueError(f"q_scale {params['q_scale'].shape} does not match q_weight {words.shape}")
    grid = Grid(q, scale, mn, fmt.zero, fmt.bits, fmt.group_size)
    return np.ascontiguousarray(grid.values()[:, :in_features])


# ------------------------------------------------------------------------------ float -> grid search


def _padded_groups(weight: np.ndarray, group: int) -> np.ndarray:
    if weight.ndim != 2:
        raise ValueError(f"quantizing takes a 2-D [out, in] weight, got shape {weight.shape}")
    rows, cols = weight.shape
    groups = -(-cols // group)
    w = np.zeros((rows, groups * group), dtype=np.float32)
    w[:, :cols] = weight  # pads the input dimension with zeros (see module docstring)
    if not np.isfinite(w).all():
        raise ValueError("weight has NaN or infinite values and cannot be quantized")
    return w.reshape(rows, groups, group)


# Candidate step counts for the group's extreme value (or span), around the plain rule, as llama.cpp's
# quantizers search (they step by 0.1; steps of 0.25 kept 99 % of the gain at 40 % of the time on
# a random [4096, 576] weight with outliers). -1 includes MLC's max|w| / 7 for the "_1" layout.
SEARCH_OFFSETS = np.arange(-1.0, 1.01, 0.25, dtype=np.float32)


def _best(err: np.ndarray, best_err: np.ndarray, *pairs) -> None:
    better = err < best_err
    best_err[better] = err[better]
    for best, value in pairs:
        best[better] = value[better]


def quantize_sym(weight: np.ndarray, fmt: WeightFormat) -> Grid:
    """A searched symmetric grid: per group the scale (its sign included) minimising the squared
    error of (q - zero) * scale, q in 0 .. 2**bits - 1, with the scale as fmt stores it."""
    w = _padded_groups(weight, fmt.group_size)
    top = (1 << fmt.bits) - 1
    lo, hi = -fmt.zero, top - fmt.zero  # the step range, e.g. -7 .. +8
    # The element of largest magnitude goes to the longer side of the range (signed scale).
    idx = np.abs(w).argmax(axis=2)[..., None]
    extreme = np.take_along_axis(w, idx, axis=2)[..., 0]
    steps = np.float32(max(hi, -lo))
    safe = np.where(extreme == 0, np.float32(1), extreme)
    best_scale = extreme / steps
    best_err = np.full(extreme.shape, np.inf, np.float32)
    for offset in SEARCH_OFFSETS:
        inv = (steps + offset) / safe
        k = np.clip(np.round(w * inv[..., None]), lo, hi)
        kk, kx = (k * k).sum(axis=2), (k * w).sum(axis=2)
        kk = np.where(kk == 0, np.float32(1), kk)
        scale = kx / kk  # least squares for this k; its squared error is sum(w^2) - kx^2 / kk
        _best(-kx * scale, best_err, (best_scale, scale))
    scale = _stored(best_scale, fmt.scale_dtype)
    divisor = np.where(scale == 0, np.float32(1), scale)
    q = np.clip(np.round(w / divisor[..., None]), lo, hi) + fmt.zero
    q[scale == 0] = fmt.zero  # an all-zero group (or a scale that underflowed) is exactly 0
    rows = w.shape[0]
    return Grid(q.astype(np.uint8).reshape(rows, -1), scale, None, fmt.zero, fmt.bits, fmt.group_size)


def quantize_affine(weight: np.ndarray, fmt: WeightFormat) -> Grid:
    """A searched scale + min grid: per group the (scale, min) minimising the squared error of
    q * scale + min, q in 0 .. 2**bits - 1, with both as fmt stores them."""
    w = _padded_groups(weight, fmt.group_size)
    top = np.float32((1 << fmt.bits) - 1)
    n = np.float32(fmt.group_size)
    lo, hi = w.min(axis=2), w.max(axis=2)
    span = hi - lo
    safe = np.where(span == 0, np.float32(1), span)
    best_scale, best_min = span / top, lo.copy()
    best_err = np.full(lo.shape, np.inf, np.float32)
    sum_x = w.sum(axis=2)
    centred = w - lo[..., None]
    for offset in SEARCH_OFFSETS:
        k = np.clip(np.round(centred * ((top + offset) / safe)[..., None]), 0, top)
        sum_k, sum_kk, sum_kx = k.sum(axis=2), (k * k).sum(axis=2), (k * w).sum(axis=2)
        det = n * sum_kk - sum_k * sum_k
        ok = det > 0
        det = np.where(ok, det, 1)
        scale = np.where(ok, (n * sum_kx - sum_k * sum_x) / det, 0)  # least squares for this k
        mn = np.where(ok, (sum_x - scale * sum_k) / n, lo)
        # The squared error less sum(w^2), from the sums alone.
        err = scale * (scale * sum_kk + 2 * mn * sum_k - 2 * sum_kx) + mn * (n * mn - 2 * sum_x)
        _best(err, best_err, (best_scale, scale), (best_min, mn))
    scale = _stored(best_scale, fmt.scale_dtype)
    mn = _stored(best_min, fmt.scale_dtype)
    divisor = np.where(scale == 0, np.float32(1), scale)
    q = np.clip(np.round((w - mn[..., None]) / divisor[..., None]), 0, top)
    q[scale == 0] = 0
    rows = w.shape[0]
    return Grid(q.astype(np.uint8).reshape(rows, -1), scale, mn, 0, fmt.bits, fmt.group_size)


def quantize(weight: np.ndarray, fmt: WeightFormat) -> dict[str, np.ndarray]:
    """A float `[out, in]` weight -> fmt's parameters (suffix -> array), by the searched grid."""
    grid = quantize_affine(weight, fmt) if fmt.has_min else quantize_sym(weight, fmt)
    return pack(grid, fmt)


# ---------------------------------------------------------------- MLC's _1 layout, by its old names


def _q4_1_format(scale_dtype) -> WeightFormat:
    scale_dtype = np.dtype(scale_dtype).name
    if scale_dtype not in ("float32", "float16"):
        raise ValueError(f"scale_dtype must be float32 or float16, got {scale_dtype}")
    return WeightFormat(scale_dtype, 4, 32, zero=Q4_ZERO, scale_dtype=scale_dtype)


def pack_q4(weight: np.ndarray, group_size: int = 32, scale_dtype="float32") -> tuple[np.ndarray, np.ndarray]:
    """MLC's q4 "_1": (q_weight uint32 [out, in_padded/8], q_scale scale_dtype [out, in_padded/32])."""
    fmt = replace(_q4_1_format(scale_dtype), group_size=group_size)
    params = quantize(weight, fmt)
    return params["q_weight"], params["q_scale"]


def unpack_q4(q_weight: np.ndarray, q_scale: np.ndarray, in_features: int) -> np.ndarray:
    """Dequantize MLC's q4 "_1" to float32 `[out, in_features]`."""
    if q_weight.ndim != 2 or q_scale.ndim != 2 or q_scale.shape[0] != q_weight.shape[0] or not q_scale.shape[1] \
            or (q_weight.shape[1] * 8) % q_scale.shape[1]:
        raise ValueError(f"q_scale shape {q_scale.shape} does not match q_weight {q_weight.shape}")
    fmt = replace(_q4_1_format(q_scale.dtype), group_size=q_weight.shape[1] * 8 // q_scale.shape[1])
    return unpack({"q_weight": q_weight, "q_scale": q_scale}, fmt, in_features)
