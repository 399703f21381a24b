"""A GGUF file (llama.cpp's single-file format) as a kiln Checkpoint: the Hugging Face config,
tokenizer files and tensors that the rest of `kiln build` consumes, derived from the file.

    metadata (llama.*)           -> hf_config: the config.json transformers derives for the file
    metadata (tokenizer.*)       -> tokenizer.json + tokenizer_config.json (gguf_tokenizer)
    tensors (blk.N.attn_q, ...)  -> GGUFTensors under Hugging Face names (gguf_stream)

kiln reads GGUF files of the llama architecture (Llama 1/2/3, TinyLlama, SmolLM, and Mistral
files, which llama.cpp also labels llama: kiln builds those without a sliding window, where
transformers gives a file named "mistral" a 4096-token one; both agree within kiln's default
context of at most 4096 tokens).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kiln.checkpoint.folder import Checkpoint, model_config_from_hf
from kiln.errors import CheckpointError, ConfigFieldError, UnsupportedError
from kiln.checkpoint.gguf_stream import GGUFTensors, check_tensor_types, hf_to_gguf_names, open_gguf, read_metadata

# GGUF general.architecture -> the Hugging Face architecture kiln builds it as.
GGUF_ARCHITECTURES = {"llama": "LlamaForCausalLM"}
# config field -> the metadata key (after "<architecture>.") it is read from, for error messages.
GGUF_KEYS = {
    "hidden_size": "embedding_length", "intermediate_size": "feed_forward_length", "num_hidden_layers": "block_count",
    "num_attention_heads": "attention.head_count", "num_key_value_heads": "attention.head_count_kv",
    "head_dim": "rope.dimension_count", "rms_norm_eps": "attention.layer_norm_rms_epsilon",
    "rope_theta": "rope.freq_base", "max_position_embeddings": "context_length", "vocab_size": "vocab_size",
}
ROPE_FREQS = "rope_freqs.weight"
# Llama 3's pre-scaling context; any value gives the same frequencies once the factors are fitted.
LLAMA3_ORIGINAL_CONTEXT = 8192


@dataclass
class GGUFCheckpoint(Checkpoint):
    """`folder` is the .gguf file itself. Tokenizer files are made from the metadata, not copied."""

    reader: Any = field(default=None, repr=False)  # gguf.GGUFReader: parsing it takes seconds, so once

    def open_tensors(self) -> GGUFTensors:
        cfg = self.model_config
        sources = self.family.weight_sources(cfg)
        hf_names = sorted({name for parts in sources.values() for name in parts})
        # model_type is the GGUF architecture name (hf_config_from_gguf sets it so).
        names = hf_to_gguf_names(self.hf_config["model_type"], cfg.num_hidden_layers, hf_names)
        # llama.cpp permutes q with the query head count and k with the key/value head count.
        heads = {"q_proj": cfg.num_attention_heads, "k_proj": cfg.num_key_value_heads}
        rotary = {name: heads[proj] for name in hf_names for proj in heads if f".self_attn.{proj}." in name}
        return GGUFTensors(self.reader, names, rotary)

    def weight_bytes(self) -> int:
        tensors = self.open_tensors()  # the tensors a build reads (not e.g. rope_freqs)
        return sum(tensors.nbytes(name) for name in tensors.names())


def load_gguf_checkpoint(path: str | Path) -> GGUFCheckpoint:
    from kiln.checkpoint.gguf_tokenizer import tokenizer_files

    path = Path(path)
    reader = open_gguf(path)
    metadata = read_metadata(reader)
    hf_config = hf_config_from_gguf(path, metadata, reader)
    check_tensor_types(path, reader)
    try:
        family, model_config = model_config_from_hf(hf_config)
    except ConfigFieldError as err:  # name the metadata key the field came from
        key = GGUF_KEYS.get(err.field)
        where = f"metadata {metadata.get('general.architecture')}.{key} (config field {err.field})" if key \
            else f"config field {err.field}"
        raise CheckpointError(f"{path.name}'s {where} {err.problem}; the GGUF file is corrupt: download or convert "
                              "it again.") from None
    texts = tokenizer_files(metadata, model_config.max_position_embeddings)
    tokenizer_config = json.loads(texts["tokenizer_config.json"])
    return GGUFCheckpoint(
        folder=path,
        hf_config=hf_config,
        generation_config=generation_config(metadata),
        tokenizer_config=tokenizer_config,
        family=family,
        model_config=model_config,
        tokenizer_files=list(texts),
        license=metadata.get("general.license"),
        reader=reader,
        tokenizer_texts=texts,
        chat_template_source=f"{path.name}'s tokenizer.chat_template",
    )


def generation_config(metadata: dict[str, Any]) -> dict[str, Any]:
    """Stop on the end-of-turn token too where the file names one apart from EOS (Llama 3's
    <|eot_id|>), as the generation_config.json of such models does."""
    eos = metadata.get("tokenizer.ggml.eos_token_id")
    stops = [i for i in (eos, metadata.get("tokenizer.ggml.eot_token_id")) if i is not None]
    return {"eos_token_id": list(dict.fromkeys(stops))} if len(set(stops)) > 1 else {}


def hf_config_from_gguf(path: Path, metadata: dict[str, Any], reader) -> dict[str, Any]:
    """The config.json of the model, with the values transformers derives from the same file
    (AutoConfig.from_pretrained(dir, gguf_file=...)), plus what transformers leaves out: the
    attention bias and Llama 3's RoPE scaling, which llama.cpp stores as tensors."""
    arch = metadata.get("general.architecture")
    if arch not in GGUF_ARCHITECTURES:
        raise UnsupportedError(
            f"{path.name} holds a GGUF model of architecture {arch!r}, which kiln does not build; kiln reads "
            f"GGUF files of architecture {', '.join(GGUF_ARCHITECTURES)}.")

    def key(name: str, default: Any = None, required: bool = True) -> Any:
        value = metadata.get(f"{arch}.{name}", default)
        if value is None and required:
            raise CheckpointError(f"{path.name} lacks the metadata key {arch}.{name}; the GGUF file is incomplete: "
                                  "download or convert it again.")
        return value

    tensors = {t.name: t for t in reader.tensors}
    heads = key("attention.head_count")
    hidden = key("embedding_length")
    # transformers takes head_dim from the rotary width; a narrower rotary part is not supported.
    # A bad head count is reported by the config check (model_config_from_hf), not divided by here.
    head_dim = key("rope.dimension_count", required=False) or key("attention.key_length", required=False) \
        or (hidden // heads if type(heads) is int and type(hidden) is int and heads > 0 else None)
    if key("attention.key_length", head_dim, required=False) != head_dim:
        raise UnsupportedError(f"{path.name} applies RoPE to {head_dim} of {key('attention.key_length')} head "
                               "dimensions; kiln supports RoPE over the whole head.")
    scaling = key("rope.scaling.type", "none", required=False)
    if scaling != "none":
        raise UnsupportedError(f"{path.name} uses RoPE scaling {scaling!r}; kiln supports GGUF files without RoPE "
                               "scaling or with Llama 3's (a rope_freqs tensor).")
    theta = float(key("rope.freq_base", 10000.0, required=False))
    tokens = metadata.get("tokenizer.ggml.tokens")
    config = {
        "architectures": [GGUF_ARCHITECTURES[arch]],
        "model_type": arch,
        "hidden_act": "silu",
        "hidden_size": hidden,
        "intermediate_size": key("feed_forward_length"),
        "num_hidden_layers": key("block_count"),
        "num_attention_heads": heads,
        "num_key_value_heads": key("attention.head_count_kv", heads, required=False),
        "head_dim": head_dim,
        "rms_norm_eps": float(key("attention.layer_norm_rms_epsilon")),
        "rope_theta": theta,
        "max_position_embeddings": key("context_length"),
        "vocab_size": key("vocab_size", len(tokens) if tokens else None),
        # llama.cpp writes output.weight only when it differs from the token embedding.
        "tie_word_embeddings": "output.weight" not in tensors,
        "attention_bias": "blk.0.attn_q.bias" in tensors,
        "bos_token_id": metadata.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": metadata.get("tokenizer.ggml.eos_token_id"),
        "pad_token_id": metadata.get("tokenizer.ggml.padding_token_id"),
    }
    if ROPE_FREQS in tensors:
        from gguf.quants import dequantize

        rope = tensors[ROPE_FREQS]
        factors = dequantize(rope.data, rope.tensor_type).reshape(-1).astype(np.float64)
        config["rope_scaling"] = llama3_rope_scaling(path, factors, theta, head_dim)
    return config


def llama3_frequency_factors(scaling: dict[str, Any], theta: float, head_dim: int) -> np.ndarray:
    """What each rotary frequency is divided by under Llama 3's RoPE scaling (the values llama.cpp
    stores in rope_freqs.weight): 1 for short wavelengths, `factor` for long ones, blended between."""
    factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    original = scaling["original_max_position_embeddings"]
    wavelength = 2 * math.pi * theta ** (np.arange(0, head_dim, 2) / head_dim)
    smooth = np.clip((original / wavelength - low) / (high - low), 0.0, 1.0)
    return 1.0 / ((1 - smooth) / factor + smooth)


def llama3_rope_scaling(path: Path, factors: np.ndarray, theta: float, head_dim: int) -> dict[str, Any] | None:
    """Llama 3's rope_scaling parameters that give exactly the frequency factors a file stores.

    llama.cpp keeps only the per-frequency factors. Between the two wavelength bounds the blend
    weight is linear in 1/wavelength, so two or more blended frequencies fix low_freq_factor and
    high_freq_factor for a chosen original context (the formula depends on their ratios alone).
    """
    unsupported = UnsupportedError(
        f"{path.name} has a {ROPE_FREQS} tensor that is not Llama 3's RoPE scaling; kiln supports GGUF files "
        "without RoPE scaling or with Llama 3's.")
    if factors.shape != (head_dim // 2,) or not np.all(np.isfinite(factors)) or factors.min() < 1 - 1e-6:
        raise unsupported
    factor = float(factors.max())
    if factor <= 1 + 1e-6:
        return None  # every frequency kept: no scaling
    wavelength = 2 * math.pi * theta ** (np.arange(0, head_dim, 2) / head_dim)
    blended = (factors > 1 + 1e-6) & (factors < factor * (1 - 1e-6))
    if blended.sum() < 2:
        raise unsupported
    smooth = (1 / factors[blended] - 1 / factor) / (1 - 1 / factor)
    slope, intercept = np.polyfit(1 / wavelength[blended], smooth, 1)
    original = LLAMA3_ORIGINAL_CONTEXT
    low = -intercept * original / slope
    scaling = {"rope_type": "llama3", "factor": factor, "low_freq_factor": float(low),
               "high_freq_factor": float(low + original / slope), "original_max_position_embeddings": original}
    if not np.allclose(llama3_frequency_factors(scaling, theta, head_dim), factors, rtol=1e-5, atol=0):
        raise unsupported
    return scaling
