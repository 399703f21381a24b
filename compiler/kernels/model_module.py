"""A model family + config + quantization -> the Relax IRModule that gets compiled, carrying the
functions and the `_metadata` WebLLM looks up (../shared/INTEROP.md)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from kiln.kernels.attention_decode import ROPE_ATTR, WINDOW_ATTR
from kiln.model_defs.layers import WeightFormats, fields_in_place
from kiln.model_defs.registry import Family

from kiln.weights.quantize import Quantization


@dataclass
class ModelModule:
    mod: Any  # tvm.IRModule
    params: list[dict[str, Any]]  # [{name, shape, dtype}] in the order the functions take them
    metadata: dict[str, Any]


def cache_window(config: Any) -> int:
    window = getattr(config, "sliding_window", None)
    return window - 1 if window else -1


def weight_formats(quant: Quantization) -> WeightFormats:
    """Every matrix in the quantization's format for float weights."""
    return WeightFormats(quant.weight_format())


def build_model_module(
    family: Family,
    config: Any,
    quant: Quantization,
    target,
    *,
    context_window: int,
    prefill_chunk: int,
    with_sampling: bool = True,
    formats: WeightFormats | None = None,
) -> ModelModule:
    """`formats`: each matrix's format (compiler/weights/plan.py chooses them per tensor for GGUF
    input); default: `quant`'s format for float weights everywhere."""
    from tvm import relax
    from tvm.script import relax as R

    formats = formats or weight_formats(quant)
    model = family.model_class(config, formats, target)
    with fields_in_place("gpu" in target.keys):
        mod, named_params = model.export_tvm(spec=model.get_default_spec())
    params = [{"name": name, "shape": [int(d) for d in p.shape], "dtype": p.dtype} for name, p in named_params]
    unused = [m for m in formats.per_matrix if not any(p["name"].startswith(m + ".q_") or p["name"] == m + ".weight"
                                                       for p in params)]
    if unused:
        raise AssertionError(f"formats name matrices the model does not have: {unused[:3]}")
    metadata = {
        "model_type": family.model_type,
        "quantization": quant.name,
        "context_window_size": context_window,
        "prefill_chunk_size": prefill_chunk,
        # The KV cache's window: how many past tokens it keeps for a sequence. A model window W
        # (each token attends to W tokens, itself included) means W - 1 cached tokens.
        "sliding_window_size": cache_window(config),
        "attention_sink_size": 0,
        "tensor_parallel_shards": 1,
        "pipeline_parallel_stages": 1,
        "kv_state_kind": "kv_cache",
        "max_batch_size": 1,
        "params": [{**p, "preprocs": []} for p in params],
    }
    # The attention passes build inline RoPE for a sliding-window cache from these (decode: from
    # the first; prefill: only when the second says the model has a window).
    mod = mod.with_attr(ROPE_ATTR, json.dumps(getattr(config, "rope_scaling", None) or {}))
    mod = mod.with_attr(WINDOW_ATTR, cache_window(config) > 0)
    bb = relax.BlockBuilder(mod)
    with bb.function("_metadata", []):
        bb.emit_func_output(R.str(json.dumps(metadata)))
    mod = bb.get()
    if with_sampling:
        from kiln.webllm.sampling_kernels import add_sampling_functions

        mod = add_sampling_functions(mod, target, vocab_size=config.vocab_size)
    return ModelModule(mod=mod, params=params, metadata=metadata)
