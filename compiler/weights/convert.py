"""Checkpoint tensors -> the bundle's weight shards, streamed: one Hugging Face tensor is read at a
time, converted (cast, or packed in its matrix's format, compiler/weights/plan.py), and appended
to the current shard. A fused kiln weight (q/k/v -> qkv_proj, gate/up -> gate_up_proj) holds its
converted parts until it is complete. A GGUF tensor whose grid the format holds is repacked from its
blocks (exactly); any other is read as floats and quantized by compiler/weights/quantize.py's search."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from kiln.checkpoint.folder import Checkpoint
from kiln.errors import CheckpointError
from kiln.model_defs.weight_format import WeightFormat
from kiln.weights.quantize import Quantization, pack, quantize
from kiln.checkpoint.safetensors_stream import CheckpointTensors
from kiln.weights.tensor_cache import TensorCacheWriter

QUANTIZED_SUFFIXES = (".q_weight", ".q_scale", ".q_min")
PACK_ROWS = 4096


def logical_name(param_name: str) -> str:
    """`x.q_weight`, `x.q_scale` and `x.q_min` are all made from the checkpoint's `x.weight`."""
    for suffix in QUANTIZED_SUFFIXES:
        if param_name.endswith(suffix):
            return param_name[: -len(suffix)] + ".weight"
    return param_name


def check_present(ckpt: Checkpoint, tensors: CheckpointTensors) -> None:
    """Every tensor the model needs exists and holds floating-point values, checked from the
    headers alone (validate.py calls this before any compiling)."""
    for parts in ckpt.family.weight_sources(ckpt.model_config).values():
        for part in parts:
            if part not in tensors:
                raise CheckpointError(
                    f"the checkpoint lacks tensor {part}; its weight files are incomplete or belong to "
                    f"another model than its config describes."
                )
            if not tensors.is_float(part):
                raise CheckpointError(
                    f"tensor {part} is stored as {tensors.dtype(part)}, but a model weight holds floating-point "
                    "values (F32, F16, BF16 or F64); the file is damaged or was written with a wrong dtype tag: re-download "
                    "or re-save the checkpoint.")


def check_sources(ckpt: Checkpoint, tensors: CheckpointTensors, logical_shapes: dict[str, list[int]]) -> None:
    """Every tensor the model needs exists with a shape that fits, checked from the safetensors
    headers alone, before anything is written."""
    check_present(ckpt, tensors)
    sources = ckpt.family.weight_sources(ckpt.model_config)
    arch = ckpt.family.model_class.__name__
    for name, parts in sources.items():
        want = logical_shapes[name]
        rows = 0
        for part in parts:
            shape = list(tensors.shape(part))
            if shape[1:] != want[1:] or len(shape) != len(want):
                raise CheckpointError(
                    f"tensor {part} has shape {shape} but {arch} with this config.json needs "
                    f"[..., {', '.join(map(str, want[1:]))}]; the weights do not match config.json."
                )
            rows += shape[0]
        if rows != want[0]:
            raise CheckpointError(
                f"tensors {', '.join(parts)} have {rows} rows in all but {arch} with this config.json needs "
                f"{want[0]} for {name}; the weights do not match config.json."
            )


def convert_weights(
    ckpt: Checkpoint,
    params: list[dict[str, Any]],
    logical_shapes: dict[str, list[int]],
    quant: Quantization,
    out_dir: Path,
    on_tensor: Callable[[str, int], None] = lambda name, nbytes: None,
    formats=None,
) -> dict[str, Any]:
    """Write tensor-cache.json and params_shard_*.bin for `params` (from the model module built
    with `formats`, a model_defs.layers.WeightFormats; default: `quant`'s format everywhere) into
    `out_dir`; returns the tensor cache index. `on_tensor` reports progress."""
    from kiln.model_defs.layers import WeightFormats

    formats = formats or WeightFormats(quant.weight_format())
    tensors = ckpt.open_tensors()
    check_sources(ckpt, tensors, logical_shapes)
    sources = ckpt.family.weight_sources(ckpt.model_config)
    pending: dict[str, np.ndarray] = {}
    with TensorCacheWriter(out_dir) as writer:
        for param in params:
            name = param["name"]
            if name in pending:
                # A scale or min: the parameters it encodes were counted with its q_weight.
                writer.add(name, _checked(pending.pop(name), param), param_count=0)
                continue
            logical = logical_name(name)
            parts = sources[logical]
            if name.endswith(".q_weight"):
                prefix = name[: -len(".q_weight")]
                fmt = formats(prefix)
                carry = prefix in formats.per_matrix  # its format holds the GGUF grids of its parts
                packed = [_pack(tensors, p, fmt, quant, carry, on_tensor) for p in parts]
                for suffix in packed[0]:
                    pending[f"{prefix}.{suffix}"] = np.concatenate([p[suffix] for p in packed], axis=0)
                count = int(np.prod(logical_shapes[logical]))
                writer.add(name, _checked(pending.pop(name), param), param_count=count)
            else:
                array = np.concatenate([_cast(_read(tensors, p, on_tensor), param["dtype"], p) for p in parts], axis=0)
                writer.add(name, _checked(array, param))
        return writer.close()


def _pack(tensors: CheckpointTensors, name: str, fmt: WeightFormat, quant: Quantization, carry: bool,
          on_tensor) -> dict[str, np.ndarray]:
    """One checkpoint tensor in `fmt`: its GGUF grid repacked where `fmt` holds it, else quantized
    from its float values in blocks of rows (rows are independent, so the temporaries stay small
    next to the tensor itself; a big embedding would otherwise need several copies)."""
    grid = tensors.grid(name) if carry else None
    try:
        if grid is not None:
            packed = pack(grid.to_format(fmt), fmt)
            on_tensor(name, tensors.nbytes(name))
            return packed
        weight = _read(tensors, name, on_tensor)
        blocks = [quantize(weight[i:i + PACK_ROWS], fmt) for i in range(0, weight.shape[0], PACK_ROWS)]
    except ValueError as err:  # NaN / inf weights, or scales out of range for f16
        raise CheckpointError(f"tensor {name} cannot be quantized to {quant.name}: {err}; build with "
                              "--quantization q0f32 instead.") from None
    return {suffix: np.concatenate([b[suffix] for b in blocks]) for suffix in blocks[0]}


def _read(tensors: CheckpointTensors, name: str, on_tensor) -> np.ndarray:
    array = tensors.read(name)
    if not all_finite(array):
        # A NaN in any weight (a norm's, say) makes every output NaN: the runtime could only fail.
        raise CheckpointError(
            f"tensor {name} holds NaN or infinite values; the checkpoint is damaged (or comes from a diverged "
            "training run): re-download or re-export it.")
    on_tensor(name, tensors.nbytes(name))
    return array


def _cast(array: np.ndarray, dtype: str, name: str) -> np.ndarray:
    out = array.astype(dtype)
    if out.dtype != array.dtype and not all_finite(out):
        raise CheckpointError(f"tensor {name} has values beyond the range of {dtype}; build an f32 variant "
                              "(q0f32, q4f32_1) instead.")
    return out


def all_finite(array: np.ndarray, block: int = 1 << 22) -> bool:
    """np.isfinite(array).all() in blocks, so that a big embedding needs no full-size mask."""
    flat = array.reshape(-1)
    return all(np.isfinite(flat[i:i + block]).all() for i in range(0, flat.size, block))


def _checked(array: np.ndarray, param: dict[str, Any]) -> np.ndarray:
    """A last guard: what is written must be exactly what the compiled functions will read."""
    if list(array.shape) != list(param["shape"]) or str(array.dtype) != param["dtype"]:
        raise AssertionError(
            f"kiln made {param['name']} as {list(array.shape)} {array.dtype}, the model reads "
            f"{param['shape']} {param['dtype']}"
        )
    return array
