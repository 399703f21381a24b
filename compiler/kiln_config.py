"""kiln-config.json: what the runtime needs to know about a bundle, validated against
compiler/schema/kiln-config.schema.json whenever it is written."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path
from typing import Any

import jsonschema

from .checkpoint import Checkpoint
from .quantize import Quantization

SCHEMA_PATH = Path(__file__).with_name("schema") / "kiln-config.schema.json"
CONFIG_FILE = "kiln-config.json"
SAMPLING_DEFAULTS = {"temperature": 1.0, "top_p": 1.0, "top_k": 0, "repetition_penalty": 1.0}
DTYPE_BYTES = {"float32": 4, "float16": 2}
# The config.json key by which compiler/synthetic.py marks its random-weight checkpoints.
SYNTHETIC_MARK = "kiln_synthetic"


def _ids(value: Any) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in (value if isinstance(value, list) else [value])]


def token_ids(ckpt: Checkpoint) -> dict[str, Any]:
    """bos / eos / pad ids; generation_config.json wins over config.json, as in transformers."""
    gen, hf = ckpt.generation_config, ckpt.hf_config
    eos = _ids(gen.get("eos_token_id", hf.get("eos_token_id")))
    bos = gen.get("bos_token_id", hf.get("bos_token_id"))
    pad = gen.get("pad_token_id", hf.get("pad_token_id"))
    return {"bos_token_id": bos, "eos_token_ids": eos, "stop_token_ids": list(eos), "pad_token_id": pad}


def sampling_defaults(ckpt: Checkpoint) -> dict[str, Any]:
    gen = ckpt.generation_config
    return {key: type(default)(gen.get(key) if gen.get(key) is not None else default)
            for key, default in SAMPLING_DEFAULTS.items()}


def estimated_memory(ckpt: Checkpoint, quant: Quantization, weight_bytes: int, context_window: int,
                     prefill_chunk: int) -> dict[str, int]:
    """Device memory: weights, the KV cache at full context, and the larger prefill activations."""
    cfg = ckpt.model_config
    elem = DTYPE_BYTES[quant.model_dtype]
    kv = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * cfg.head_dim * context_window * elem
    width = 3 * cfg.hidden_size + 2 * cfg.intermediate_size + (cfg.num_attention_heads + 2 * cfg.num_key_value_heads) * cfg.head_dim
    activations = prefill_chunk * width * elem + cfg.vocab_size * 4
    return {"weights": weight_bytes, "kv_cache": kv, "activations": activations,
            "total": weight_bytes + kv + activations}


def make_kiln_config(ckpt: Checkpoint, quant: Quantization, *, context_window: int, prefill_chunk: int,
                     libraries: dict[str, str], tensor_cache: dict[str, Any]) -> dict[str, Any]:
    cfg = ckpt.model_config
    meta = tensor_cache["metadata"]
    config = {
        "kiln_version": metadata.version("kiln"),
        "format_version": 1,
        "architecture": cfg.architecture,
        "model_type": ckpt.family.model_type,
        "model_config": cfg.to_dict(),
        "quantization": quant.name,
        "context_window_size": context_window,
        "prefill_chunk_size": prefill_chunk,
        "sliding_window_size": cfg.sliding_window or -1,
        "sampling": sampling_defaults(ckpt),
        "tokens": token_ids(ckpt),
        "chat_template": ckpt.chat_template,
        "tokenizer_files": list(ckpt.tokenizer_files),
        "libraries": libraries,
        "tensor_cache": "tensor-cache.json",
        "webgpu_features": ["shader-f16"] if quant.model_dtype == "float16" else [],
        "estimated_memory_bytes": estimated_memory(ckpt, quant, meta["ParamBytes"], context_window, prefill_chunk),
        "params": {"count": meta["ParamSize"], "bytes": meta["ParamBytes"],
                   "bits_per_param": round(meta["BitsPerParam"], 4)},
    }
    if ckpt.license:
        config["license"] = ckpt.license
    if ckpt.hf_config.get(SYNTHETIC_MARK):
        config["synthetic"] = True
    validate(config)
    return config


def validate(config: dict[str, Any]) -> None:
    """Raises jsonschema.ValidationError: a config that breaks the schema is a kiln bug."""
    jsonschema.validate(config, json.loads(SCHEMA_PATH.read_text()))
