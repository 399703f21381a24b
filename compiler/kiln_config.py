"""kiln-config.json: what the runtime needs to know about a bundle, validated against
compiler/schema/kiln-config.schema.json whenever it is written."""

from __future__ import annotations

import json
import math
from importlib import metadata
from pathlib import Path
from typing import Any

import jsonschema

from .checkpoint import Checkpoint
from .errors import ConfigFieldError
from .quantize import Quantization

SCHEMA_PATH = Path(__file__).with_name("schema") / "kiln-config.schema.json"
CONFIG_FILE = "kiln-config.json"
SAMPLING_DEFAULTS = {"temperature": 1.0, "top_p": 1.0, "top_k": 0, "repetition_penalty": 1.0}
DTYPE_BYTES = {"float32": 4, "float16": 2}
# The config.json key by which compiler/synthetic.py marks its random-weight checkpoints.
SYNTHETIC_MARK = "kiln_synthetic"


def _token_id(value: Any, field: str, source: str, vocab_size: int, *, negative_ok: bool = False) -> int:
    if type(value) is not int or not (negative_ok or 0 <= value < vocab_size):
        raise ConfigFieldError(field, f"is {json.dumps(value)[:40]}; it must be a token id from 0 to {vocab_size - 1}",
                               source=source, fix=f"fix {source} or download the checkpoint again")
    return value


def token_ids(ckpt: Checkpoint) -> dict[str, Any]:
    """bos / eos / pad ids; generation_config.json wins over config.json, as in transformers.
    Ids are checked here, where they are read: an id outside the vocabulary would index past the
    embedding in the runtime."""
    gen, hf, vocab = ckpt.generation_config, ckpt.hf_config, ckpt.model_config.vocab_size

    def read(key: str, many: bool = False, negative_ok: bool = False):
        source = "generation_config.json" if key in gen else "config.json"
        value = gen[key] if key in gen else hf.get(key)
        if value is None:
            return [] if many else None
        if many and isinstance(value, list):
            return [_token_id(v, key, source, vocab) for v in value]
        checked = _token_id(value, key, source, vocab, negative_ok=negative_ok)
        return [checked] if many else checked

    eos = read("eos_token_id", many=True)
    # Some configs say pad_token_id -1 for "none"; the runtime never feeds the pad id to the model.
    return {"bos_token_id": read("bos_token_id"), "eos_token_ids": eos, "stop_token_ids": list(eos),
            "pad_token_id": read("pad_token_id", negative_ok=True)}


# generation_config.json field -> (lowest, highest, lowest excluded): the ranges the runtime accepts.
SAMPLING_RANGES = {"temperature": (0, math.inf, False), "top_p": (0, 1, True), "top_k": (0, math.inf, False),
                   "repetition_penalty": (0, math.inf, True)}


def sampling_defaults(ckpt: Checkpoint) -> dict[str, Any]:
    gen, out = ckpt.generation_config, {}
    for key, default in SAMPLING_DEFAULTS.items():
        value = gen.get(key)
        if value is None:
            out[key] = default
            continue
        low, high, open_low = SAMPLING_RANGES[key]
        whole = isinstance(default, int)
        number = type(value) in (int, float) and math.isfinite(value) and (not whole or float(value).is_integer())
        if not number or not (low < value if open_low else low <= value) or not value <= high:
            bounds = f"{'above' if open_low else 'at least'} {low}" + (f" and at most {high}" if high < math.inf else "")
            raise ConfigFieldError(key, f"is {json.dumps(value)[:40]}; it must be a {'whole ' if whole else ''}"
                                   f"number {bounds}", source="generation_config.json",
                                   fix="fix generation_config.json or delete the field")
        out[key] = type(default)(value)
    return out


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
