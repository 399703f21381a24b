"""Building blocks shared by the architectures: linear and embedding layers that hold either plain
weights or packed integer groups (weight_format.py's WeightFormat, chosen per matrix), with
dequantization written as a tensor expression so that Relax fuses it into the consuming matmul /
GEMV kernel: no full-precision copy of a quantized weight is ever materialised at run time.

Parameter names follow MLC's layout (`weight`, or `q_weight` plus `q_scale`, and `q_min` for
kiln's scale + min formats), so that a q4*_1 kiln bundle is also a valid WebLLM model.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Iterator, Mapping

from tvm import te, tirx
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import op

from .weight_format import F16_PAIRS, WeightFormat

__all__ = ["Embedding", "Linear", "WeightFormat", "WeightFormats"]


@dataclass(frozen=True)
class WeightFormats:
    """The format of every matrix of a model: `default`, except the matrices named (by their kiln
    parameter prefix, e.g. `model.embed_tokens`) in `per_matrix`."""

    default: WeightFormat
    per_matrix: Mapping[str, WeightFormat] = field(default_factory=dict)

    @property
    def model_dtype(self) -> str:
        return self.default.model_dtype

    def __call__(self, name: str) -> WeightFormat:
        return self.per_matrix.get(name, self.default)


def padded(n: int, multiple: int) -> int:
    return (n + multiple - 1) // multiple * multiple


_FIELDS_IN_PLACE = ContextVar("kiln_fields_in_place", default=False)


@contextmanager
def fields_in_place(on: bool) -> Iterator[None]:
    """While a model is exported inside this, its quantized weights dequantize with
    `_field_in_place` (on: GPU targets) rather than `_field`. CPU targets keep `_field`: WebAssembly
    SIMD shifts all lanes by a constant in one instruction, and a first in-place form (2**-place as
    a division) made LinearCPURule's decode kernels 3.6x slower; not pursued further.
    compiler/kernels/model_module.py exports every model inside it."""
    token = _FIELDS_IN_PLACE.set(on)
    try:
        yield
    finally:
        _FIELDS_IN_PLACE.reset(token)


def _u32(value: int) -> tirx.PrimExpr:
    return tirx.const(value, "uint32")


def _field(word: tirx.PrimExpr, index: tirx.PrimExpr, bits: int) -> tirx.PrimExpr:
    """Value `index` of a uint32 holding 32 / bits of them (value r at bits bits*r ..)."""
    shift = (index % (32 // bits) * bits).astype("uint32")
    return tirx.bitwise_and(tirx.shift_right(word, shift), _u32((1 << bits) - 1))


def _float16_bits(h: tirx.PrimExpr) -> tirx.PrimExpr:
    """The float32 value of IEEE float16 bits `h` (uint32), exact for every finite value, without a
    branch: WGSL without `shader-f16` has no float16 type, and a Select on loaded values becomes an
    if/else per use in WGSL. |value| = significand * 2^(max(exponent, 1) - 25), the significand
    with its implicit 1 for normal numbers, the power of two built from its float32 bits (biased
    exponent max(exponent, 1) - 25 + 127); the sign bit moves to float32's."""
    exponent = tirx.bitwise_and(tirx.shift_right(h, _u32(10)), _u32(31))
    significand = tirx.bitwise_or(tirx.bitwise_and(h, _u32(1023)),
                                  tirx.shift_left(tirx.min(exponent, _u32(1)), _u32(10)))
    power = tirx.reinterpret("float32", tirx.shift_left(tirx.max(exponent, _u32(1)) + _u32(102), _u32(23)))
    magnitude = significand.astype("float32") * power
    sign = tirx.shift_left(tirx.bitwise_and(h, _u32(0x8000)), _u32(16))
    return tirx.reinterpret("float32", tirx.bitwise_or(tirx.reinterpret("uint32", magnitude), sign))


def _group_value(tensor: te.Tensor, row, group, fmt: WeightFormat) -> tirx.PrimExpr:
    """A per-group scale or min as float32."""
    if fmt.scale_dtype == F16_PAIRS:
        return _float16_bits(_field(tensor[row, group // 2], group, 16))
    return tensor[row, group].astype("float32")


def _group_stages(weight: list[te.Tensor], fmt: WeightFormat) -> list[te.Tensor]:
    """The scale (and min) of every group as float32 [rows, groups] stages (`group_scale`,
    `group_min`), so that a kernel decodes each once per group rather than once per weight:
    compiler/kernels/schedules.py's LinearRule (GPU) and schedules_cpu.py's LinearCPURule compute
    them per group, for the rows of a thread or of a tile."""
    rows, words = weight[0].shape
    groups = int(words) * fmt.per_word // fmt.group_size  # not q_scale's width: pairs may pad it

    def stage(tensor: te.Tensor, name: str) -> te.Tensor:
        return te.compute((rows, groups), lambda r, g: _group_value(tensor, r, g, fmt), name=name)

    return [stage(t, name) for t, name in zip(weight[1:], ("group_scale", "group_min"))]


def _field_in_place(word: tirx.PrimExpr, index: tirx.PrimExpr, bits: int) -> tuple[tirx.PrimExpr, tirx.PrimExpr]:
    """Value `index` of a uint32 packed as in `_field`, as (int32 of the value times 2**place, place):
    the field masked where it lies, not shifted down. Once a kernel's loop over a word's values is
    unrolled, the mask is a constant and that is one AND and a signed conversion per value.
    SwiftShader (WebGPU on CPUs) runs a vector shift lane by lane and a uint32 conversion as several
    instructions: this form made a decode linear kernel there 2x faster. The top field is taken one
    bit lower (one shift), so that every field fits int32's positive range."""
    shift = index % (32 // bits) * bits
    top = shift == 32 - bits
    source = tirx.Select(top, tirx.shift_right(word, _u32(1)), word)
    place = tirx.Select(top, shift - 1, shift).astype("int32")
    masked = tirx.bitwise_and(source, tirx.shift_left(_u32((1 << bits) - 1), place.astype("uint32")))
    return masked.astype("int32"), place


def _dequantized_value(q_weight: te.Tensor, groups: list, row, col, fmt: WeightFormat) -> tirx.PrimExpr:
    """(q - zero) * scale (+ min), in float32 (exact for the grids GGUF files carry), then in the
    model dtype. `groups`: (row, group) -> the group's scale (and min) as float32. Under
    `fields_in_place`, q comes as q * 2**place (`_field_in_place`): zero is subtracted as
    zero * 2**place, in int32, and the scale is taken times 2**-place, a power of two, so every value
    is still exactly (q - zero) * scale."""
    word, group = q_weight[row, col // fmt.per_word], col // fmt.group_size
    scale = groups[0](row, group)
    if _FIELDS_IN_PLACE.get():
        q, place = _field_in_place(word, col, fmt.bits)
        if fmt.zero:
            q = q - tirx.shift_left(tirx.const(fmt.zero, "int32"), place)
        q = q.astype("float32")
        # 2**-place from its float32 bits (biased exponent 127 - place): exact, where a float
        # literal of it in WGSL (7 digits) is not
        unit = tirx.reinterpret("float32", tirx.shift_left(tirx.const(127, "int32") - place, tirx.const(23, "int32")))
        scale = scale * unit
    else:
        q = _field(word, col, fmt.bits).astype("float32")
        if fmt.zero:
            q = q - tirx.const(fmt.zero, "float32")
    value = q * scale
    if fmt.has_min:
        value = value + groups[1](row, group)
    return value.astype(fmt.model_dtype) if fmt.model_dtype != "float32" else value


class _Matrix(nn.Module):
    """A [rows, cols] parameter matrix: `weight` as is, or integer groups of `group_size` along
    `cols` (zero-padded) in `q_weight`, `q_scale` (and `q_min`). Subclasses decide how it is used."""

    def __init__(self, rows: int, cols: int, fmt: WeightFormat):
        self.rows, self.cols, self.fmt = rows, cols, fmt
        self._names = list(fmt.param_shapes(rows, cols))
        for suffix, (shape, dtype) in fmt.param_shapes(rows, cols).items():
            setattr(self, suffix, nn.Parameter(shape, dtype))

    def _weight_args(self) -> list[nn.Tensor]:
        return [getattr(self, suffix) for suffix in self._names]

    def _element(self, weight: list[te.Tensor], row, col, stages: list[te.Tensor] | None = None) -> tirx.PrimExpr:
        """M[row, col], read straight from the stored (maybe packed) parameters; with `stages`
        (from _group_stages), the group's scale and min come from them."""
        if not self.fmt.quantized:
            return weight[0][row, col]
        if stages is None:
            groups = [lambda r, g, t=t: _group_value(t, r, g, self.fmt) for t in weight[1:]]
        else:
            groups = [lambda r, g, t=t: t[r, g] for t in stages]
        return _dequantized_value(weight[0], groups, row, col, self.fmt)

    def rows_of(self, ids: nn.Tensor) -> nn.Tensor:
        """Only the rows named by `ids` (an embedding lookup)."""

        def compute(*args: te.Tensor):
            *weight, index = args
            return te.compute(
                (index.shape[0], self.cols),
                lambda i, j: self._element(weight, index[i], j),
                name="take_rows",
            )

        return op.tensor_expr_op(compute, "take_rows", [*self._weight_args(), ids])

    def times(self, x: nn.Tensor) -> nn.Tensor:
        """x @ M^T as ONE kernel: the weight is read (and dequantized) inside the reduction, so
        neither a transposed nor a dequantized copy of it is ever written to memory. On GPU targets
        compiler/kernels/schedules.py's LinearRule schedules it (found by its block name, `matmul_nt`)."""

        def compute(x_te: te.Tensor, *weight: te.Tensor):
            *lead, _ = x_te.shape
            k = te.reduce_axis((0, self.cols), name="k")
            stages = _group_stages(list(weight), self.fmt) if self.fmt.quantized else None
            return te.compute(
                (*lead, self.rows),
                lambda *idx: te.sum(
                    x_te[(*idx[:-1], k)] * self._element(weight, idx[-1], k, stages), axis=k
                ),
                name="matmul_nt",
            )

        return op.tensor_expr_op(compute, "matmul_nt", [x, *self._weight_args()])


class Linear(_Matrix):
    """y = x @ W^T (+ b), W of shape [out, in]."""

    def __init__(self, in_features: int, out_features: int, fmt: WeightFormat, bias: bool = False):
        super().__init__(out_features, in_features, fmt)
        self.bias = nn.Parameter((out_features,), fmt.model_dtype) if bias else None

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        y = self.times(x)
        return y + self.bias if self.bias is not None else y


class Embedding(_Matrix):
    """Token embedding [vocab, hidden]; with tied weights `times` is also the output projection."""

    def __init__(self, vocab_size: int, hidden_size: int, fmt: WeightFormat):
        super().__init__(vocab_size, hidden_size, fmt)

    def forward(self, ids: nn.Tensor) -> nn.Tensor:
        return self.rows_of(ids)
