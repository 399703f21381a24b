"""Building blocks shared by the architectures: linear and embedding layers that hold either plain
weights (q0*) or int4 group-quantized ones (q4*_1), with dequantization written as a tensor
expression so that Relax fuses it into the consuming matmul / GEMV kernel: no full-precision copy of
a quantized weight is ever materialised at run time.

Parameter names and packing follow MLC's layout (`weight`, or `q_weight` uint32 [out, in/8] plus
`q_scale` [out, in/32]), so that a kiln bundle is also a valid WebLLM model.
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm import te, tirx
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import op

NIBBLES_PER_WORD = 8  # eight 4-bit values per uint32
ZERO_POINT = 7  # stored value = round(w / scale) + 7, in 0..14


@dataclass(frozen=True)
class WeightFormat:
    """How a model's weights are stored: the subset of a quantization scheme the layers need."""

    model_dtype: str  # activations, norms, biases and scales: "float32" or "float16"
    bits: int = 0  # 0: unquantized; 4: int4 groups
    group_size: int = 32

    @property
    def quantized(self) -> bool:
        return self.bits == 4


def padded(n: int, multiple: int) -> int:
    return (n + multiple - 1) // multiple * multiple


def _nibble(word: tirx.PrimExpr, position: tirx.PrimExpr) -> tirx.PrimExpr:
    shift = (position % NIBBLES_PER_WORD * 4).astype("uint32")
    return tirx.bitwise_and(tirx.shift_right(word, shift), tirx.const(15, "uint32"))


def _dequantized_value(q_weight, q_scale, row, col, fmt: WeightFormat) -> tirx.PrimExpr:
    word = q_weight[row, col // NIBBLES_PER_WORD]
    stored = _nibble(word, col).astype(fmt.model_dtype)
    return (stored - tirx.const(ZERO_POINT, fmt.model_dtype)) * q_scale[row, col // fmt.group_size]


class _Matrix(nn.Module):
    """A [rows, cols] parameter matrix: `weight` as is, or int4 groups of `group_size` along `cols`
    (zero-padded) in `q_weight` and `q_scale`. Subclasses decide how the matrix is used."""

    def __init__(self, rows: int, cols: int, fmt: WeightFormat):
        self.rows, self.cols, self.fmt = rows, cols, fmt
        if fmt.quantized:
            cols_padded = padded(cols, fmt.group_size)
            self.q_weight = nn.Parameter((rows, cols_padded // NIBBLES_PER_WORD), "uint32")
            self.q_scale = nn.Parameter((rows, cols_padded // fmt.group_size), fmt.model_dtype)
        else:
            self.weight = nn.Parameter((rows, cols), fmt.model_dtype)

    def _weight_args(self) -> list[nn.Tensor]:
        return [self.q_weight, self.q_scale] if self.fmt.quantized else [self.weight]

    def _element(self, weight: list[te.Tensor], row, col) -> tirx.PrimExpr:
        """M[row, col], read straight from the stored (maybe packed) parameters."""
        if self.fmt.quantized:
            return _dequantized_value(weight[0], weight[1], row, col, self.fmt)
        return weight[0][row, col]

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
        compiler/schedules.py's LinearRule schedules it (found by its block name, `matmul_nt`)."""

        def compute(x_te: te.Tensor, *weight: te.Tensor):
            *lead, _ = x_te.shape
            k = te.reduce_axis((0, self.cols), name="k")
            return te.compute(
                (*lead, self.rows),
                lambda *idx: te.sum(
                    x_te[(*idx[:-1], k)] * self._element(weight, idx[-1], k), axis=k
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
