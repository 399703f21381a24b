"""Which format each weight matrix of a bundle gets.

Float weights (a Hugging Face folder, a float GGUF tensor) get the quantization's own format. Under
kiln's layout (`q4*_2`) a GGUF matrix keeps the grid its blocks already have, in the cheapest
format that holds it exactly (gguf_blocks.GRID_FORMATS; for a fused matrix, one that holds all its
parts), so that its dequantized values equal the file's; a matrix with a float part (an F16 file,
say) is quantized from its values like a float checkpoint's. MLC's layout (`q4*_1`) and `q0*` are
one format for every matrix.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from kiln.model_defs.layers import WeightFormats

from kiln.checkpoint.folder import Checkpoint
from kiln.model_defs.weight_format import WeightFormat
from kiln.weights.quantize import Quantization


@dataclass
class FormatPlan:
    formats: WeightFormats
    # (source types, e.g. "Q4_1" or "Q4_K+Q6_K", kiln format) -> number of matrices
    choices: Counter

    def summary(self) -> list[str]:
        """One line per (source type -> kiln format), for the build log."""
        return [f"{count:4d} x {source} -> {fmt}" for (source, fmt), count in sorted(self.choices.items())]


def matrix_sources(ckpt: Checkpoint, tensors) -> dict[str, list[str]]:
    """Kiln matrix prefix (model.layers.0.mlp.down_proj) -> the checkpoint tensors it is made of."""
    return {name[: -len(".weight")]: parts for name, parts in ckpt.family.weight_sources(ckpt.model_config).items()
            if name.endswith(".weight") and len(tensors.shape(parts[0])) == 2}


def plan_formats(ckpt: Checkpoint, quant: Quantization, tensors=None) -> FormatPlan:
    from kiln.checkpoint.gguf_blocks import covering_format, grid_format

    tensors = tensors if tensors is not None else ckpt.open_tensors()
    default = quant.weight_format()
    carries_grids = quant.layout == 2 and hasattr(tensors, "grid")
    per_matrix: dict[str, WeightFormat] = {}
    choices: Counter = Counter()
    for prefix, parts in matrix_sources(ckpt, tensors).items():
        source = "+".join(sorted({tensors.dtype(p) for p in parts}))
        fmt = default
        grids = [grid_format(tensors.dtype(p), quant.model_dtype) for p in parts] if carries_grids else [None]
        if all(grids):
            fmt = per_matrix[prefix] = covering_format(grids, quant.model_dtype)
        choices[source, fmt.describe()] += 1
    return FormatPlan(WeightFormats(default, per_matrix), choices)
