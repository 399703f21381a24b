"""kiln-config.json: what the runtime needs to know about a bundle, validated against
compiler/schema/kiln-config.schema.json (kiln.schemas) whenever it is written."""

from __future__ import annotations

from importlib import metadata
from typing import Any

from kiln import schemas
from kiln.checkpoint.facts import ChatFacts
from kiln.checkpoint.folder import Checkpoint
from kiln.weights.quantize import Quantization

CONFIG_FILE = "kiln-config.json"
DTYPE_BYTES = {"float32": 4, "float16": 2}
# The config.json key by which compiler/testing/synthetic.py marks its random-weight checkpoints.
SYNTHETIC_MARK = "kiln_synthetic"


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


def make_kiln_config(ckpt: Checkpoint, facts: ChatFacts, quant: Quantization, *, context_window: int, prefill_chunk: int,
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
        "sampling": facts.sampling.as_dict(),
        "tokens": {"bos_token_id": facts.tokens.bos, "eos_token_ids": list(facts.tokens.eos),
                   "stop_token_ids": list(facts.tokens.stop), "pad_token_id": facts.tokens.pad},
        "chat_template": facts.chat_template,
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
    schemas.validate(config, schemas.KILN_CONFIG)
