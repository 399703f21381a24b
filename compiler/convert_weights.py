"""Checkpoint tensors -> the bundle's weight shards, streamed: one Hugging Face tensor is read at a
time, converted (cast, or packed to int4), and appended to the current shard. A fused kiln weight
(q/k/v -> qkv_proj, gate/up -> gate_up_proj) holds its converted parts until it is complete."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from .checkpoint import Checkpoint
from .errors import CheckpointError
from .quantize import Quantization, pack_q4
from .safetensors_stream import CheckpointTensors
from .tensor_cache import TensorCacheWriter

QUANTIZED_SUFFIXES = (".q_weight", ".q_scale")
PACK_ROWS = 4096


def logical_name(param_name: str) -> str:
    """`x.q_weight` / `x.q_scale` are both made from the checkpoint's `x.weight`."""
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
) -> dict[str, Any]:
    """Write tensor-cache.json and params_shard_*.bin for `params` (from the model module) into
    `out_dir`; returns the tensor cache index. `on_tensor` reports progress."""
    tensors = ckpt.open_tensors()
    check_sources(ckpt, tensors, logical_shapes)
    sources = ckpt.family.weight_sources(ckpt.model_config)
    pending_scales: dict[str, np.ndarray] = {}
    with TensorCacheWriter(out_dir) as writer:
        for param in params:
            name = param["name"]
            if name.endswith(".q_scale"):
                # The parameters a scale encodes were counted with its q_weight.
                writer.add(name, _checked(pending_scales.pop(name), param), param_count=0)
                continue
            logical = logical_name(name)
            parts = sources[logical]
            if name.endswith(".q_weight"):
                packed = [_pack(tensors, p, quant, on_tensor) for p in parts]
                q_weight = np.concatenate([q for q, _ in packed], axis=0)
                pending_scales[name[: -len(".q_weight")] + ".q_scale"] = np.concatenate([s for _, s in packed], axis=0)
                count = int(np.prod(logical_shapes[logical]))
                writer.add(name, _checked(q_weight, param), param_count=count)
            else:
                array = np.concatenate([_cast(_read(tensors, p, on_tensor), param["dtype"], p) for p in parts], axis=0)
                writer.add(name, _checked(array, param))
        return writer.close()


def _pack(tensors: CheckpointTensors, name: str, quant: Quantization, on_tensor) -> tuple[np.ndarray, np.ndarray]:
    """Rows are quantized independently, so packing goes in blocks of rows: the temporaries stay
    small next to the tensor itself (a big embedding would otherwise need several copies)."""
    weight = _read(tensors, name, on_tensor)
    try:
        blocks = [pack_q4(weight[i:i + PACK_ROWS], quant.group_size, quant.model_dtype)
                  for i in range(0, weight.shape[0], PACK_ROWS)]
    except ValueError as err:  # NaN / inf weights, or scales out of range for f16
        raise CheckpointError(f"tensor {name} cannot be quantized to {quant.name}: {err}.") from None
    return np.concatenate([q for q, _ in blocks]), np.concatenate([s for _, s in blocks])


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
