"""How one weight matrix is stored (WeightFormat: plain, or integer groups with a scale and maybe a
min) and a matrix held exactly on such a grid (Grid). The model definitions read their parameters
in these formats; kiln.weights.quantize puts float weights on grids, kiln.checkpoint.gguf_blocks
reads a GGUF file's blocks as grids."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

F16_PAIRS = "float16x2"  # float16 values stored two per uint32 (see module docstring)
STORED_BITS = {"float32": 32, "float16": 16, F16_PAIRS: 16}


@dataclass(frozen=True)
class WeightFormat:
    """How one weight matrix is stored. Unquantized (bits 0): `weight` in model_dtype. Quantized:
    per group of `group_size` along the input dimension, value = (q - zero) * scale (+ min)."""

    model_dtype: str  # activations, norms, biases: "float32" or "float16"
    bits: int = 0  # 0: plain weight; 4 or 8: packed integers
    group_size: int = 32
    zero: int = 0  # the stored integer that means 0 steps (sym formats)
    has_min: bool = False
    scale_dtype: str = "float32"  # "float32", "float16" or F16_PAIRS

    @property
    def quantized(self) -> bool:
        return self.bits > 0

    @property
    def per_word(self) -> int:
        return 32 // self.bits

    def param_shapes(self, rows: int, cols: int) -> dict[str, tuple[tuple[int, ...], str]]:
        """Parameter suffix -> (shape, dtype) for a [rows, cols] matrix."""
        if not self.quantized:
            return {"weight": ((rows, cols), self.model_dtype)}
        groups = -(-cols // self.group_size)
        words = groups * self.group_size // self.per_word
        if self.scale_dtype == F16_PAIRS:
            side = ((rows, -(-groups // 2)), "uint32")
        else:
            side = ((rows, groups), self.scale_dtype)
        shapes = {"q_weight": ((rows, words), "uint32"), "q_scale": side}
        if self.has_min:
            shapes["q_min"] = side
        return shapes

    @property
    def bits_per_param(self) -> float:
        if not self.quantized:
            return 8.0 * np.dtype(self.model_dtype).itemsize
        side = STORED_BITS[self.scale_dtype] * (2 if self.has_min else 1)
        return self.bits + side / self.group_size

    def describe(self) -> str:
        """A short name for build summaries, e.g. `int4+min/32 f16` or `float32`."""
        if not self.quantized:
            return self.model_dtype
        kind = "+min" if self.has_min else f" zero {self.zero}"
        scales = "f16" if self.scale_dtype in ("float16", F16_PAIRS) else "f32"
        return f"int{self.bits}{kind}/{self.group_size} {scales}"


@dataclass
class Grid:
    """A weight held exactly as integers and per-group floats:
    w[r, c] = (q[r, c] - zero) * scale[r, c // group] (+ min[r, c // group]), in float32."""

    q: np.ndarray  # uint8 [rows, cols], 0 .. 2**bits - 1
    scale: np.ndarray  # float32 [rows, groups]
    min: np.ndarray | None  # float32 [rows, groups] or None
    zero: int
    bits: int
    group: int

    def rows(self, index) -> "Grid":
        """The grid of some rows (a slice, or an index array that reorders them)."""
        return replace(self, q=self.q[index], scale=self.scale[index],
                       min=None if self.min is None else self.min[index])

    def values(self) -> np.ndarray:
        """float32 [rows, cols], computed as the kernels compute it."""
        rows, cols = self.q.shape
        q = self.q.reshape(rows, -1, self.group).astype(np.float32) - np.float32(self.zero)
        w = q * self.scale[:, :, None]
        if self.min is not None:
            w += self.min[:, :, None]
        return w.reshape(rows, cols)

    def to_format(self, fmt: WeightFormat) -> "Grid":
        """The same values on `fmt`'s grid (more bits, smaller groups, a min): exact, as every
        conversion here only shifts integers or multiplies floats by powers of two."""
        if fmt.bits < self.bits or self.group % fmt.group_size or (self.min is not None and not fmt.has_min):
            raise ValueError(f"a {self.bits}-bit grid in groups of {self.group} does not fit {fmt.describe()}")
        q, scale, mn = self.q, self.scale, self.min
        if fmt.has_min and mn is None:
            mn = scale * np.float32(-self.zero)  # a power-of-two multiple for the zeros used here
            zero = 0
        elif fmt.has_min:
            zero = self.zero
        else:
            zero = fmt.zero
            q = (q.astype(np.int16) + (fmt.zero - self.zero)).astype(np.uint8)
        repeat = self.group // fmt.group_size
        if repeat > 1:
            scale = np.repeat(scale, repeat, axis=1)
            mn = None if mn is None else np.repeat(mn, repeat, axis=1)
        return Grid(q, scale, mn, zero, fmt.bits, fmt.group_size)
