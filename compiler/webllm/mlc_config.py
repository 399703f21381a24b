"""`mlc-chat-config.json`, what WebLLM (and MLC) read next to a model library: written from the
checkpoint's parsed config and its ChatFacts (kiln.checkpoint.facts), the same facts kiln-config.json
is written from, with the conv_template derived by webllm/conv_template.py."""

from __future__ import annotations

import datetime

from kiln.checkpoint.facts import ChatFacts
from kiln.checkpoint.folder import Checkpoint
from kiln.errors import UnsupportedError
from kiln.webllm.conv_template import derive_conv_template

MLC_CONFIG_VERSION = "0.1.0"


def tokenizer_info(tokenizer_json: dict | None) -> dict:
    """MLC's tokenizer_info, read from tokenizer.json: how decoded tokens map to bytes
    (byte_level for GPT-2 style BPE, byte_fallback for sentencepiece style), whether encoding
    prepends a space (a Prepend("▁") normalizer) and whether decoding strips one (a Strip decoder).
    """
    info = {"token_postproc_method": "byte_fallback", "prepend_space_in_encode": False,
            "strip_space_in_decode": False}
    if not tokenizer_json:
        return info

    def parts(node, key):
        if not isinstance(node, dict):
            return []
        return node.get(key) or [] if node.get("type") == "Sequence" else [node]

    for decoder in parts(tokenizer_json.get("decoder"), "decoders"):
        if decoder.get("type") == "ByteLevel":
            info["token_postproc_method"] = "byte_level"
        elif decoder.get("type") == "ByteFallback":
            info["token_postproc_method"] = "byte_fallback"
        elif (decoder.get("type") == "Strip" and decoder.get("content") == " "
              and decoder.get("start") == 1 and decoder.get("stop") == 0):
            info["strip_space_in_decode"] = True
    for normalizer in parts(tokenizer_json.get("normalizer"), "normalizers"):
        if normalizer.get("type") == "Prepend" and normalizer.get("prepend") == "\u2581":
            info["prepend_space_in_encode"] = True
    return info


def mlc_chat_config(ckpt: Checkpoint, facts: ChatFacts, *, quantization: str, context_window: int,
                    prefill_chunk: int, sliding_window: int, attention_sink: int = 0,
                    today: datetime.date | None = None) -> dict:
    """The `mlc-chat-config.json` WebLLM reads next to a model library.

    `sliding_window` > 0 builds a sliding-window KV cache of that size (WebLLM then needs
    context_window_size -1 and an attention sink >= 0, `attention_sink`); otherwise the cache holds
    `context_window` tokens. Token ids, stop tokens and sampling defaults are `facts`'; `today` is
    passed to derive_conv_template.
    """
    if "tokenizer.json" not in ckpt.tokenizer_files:
        raise UnsupportedError(
            "WebLLM needs tokenizer.json beside the model; add it to the bundle's tokenizer files."
        )
    if context_window <= 0 and sliding_window <= 0:
        raise UnsupportedError("set a context window (or a sliding window) larger than 0.")
    if prefill_chunk <= 0:
        raise UnsupportedError("set a prefill chunk size larger than 0.")

    cfg = ckpt.model_config  # the architecture's own parse of config.json, with its defaults
    sliding = sliding_window if sliding_window and sliding_window > 0 else -1
    context = -1 if sliding > 0 else int(context_window)
    model_config = {
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.num_key_value_heads,
        "head_dim": cfg.head_dim,
        "num_hidden_layers": cfg.num_hidden_layers,
        "rms_norm_eps": cfg.rms_norm_eps,
        "vocab_size": cfg.vocab_size,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "position_embedding_base": cfg.rope_theta,
        "rope_scaling": cfg.rope_scaling,
        "hidden_act": ckpt.hf_config.get("hidden_act", "silu"),
        "context_window_size": context,
        "sliding_window_size": sliding,
        "prefill_chunk_size": int(prefill_chunk),
        "tensor_parallel_shards": 1,
        "pipeline_parallel_stages": 1,
        "max_batch_size": 1,
    }
    tokens, sampling = facts.tokens, facts.sampling
    return {
        "version": MLC_CONFIG_VERSION,
        "model_type": ckpt.family.model_type,
        "quantization": quantization,
        "model_config": model_config,
        "vocab_size": cfg.vocab_size,
        "context_window_size": context,
        "sliding_window_size": sliding,
        "prefill_chunk_size": int(prefill_chunk),
        "attention_sink_size": int(attention_sink) if sliding > 0 else -1,
        "tensor_parallel_shards": 1,
        "pipeline_parallel_stages": 1,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "repetition_penalty": sampling.repetition_penalty,
        "tokenizer_files": list(ckpt.tokenizer_files),
        "tokenizer_info": tokenizer_info(facts.tokenizer_json),
        "conv_template": derive_conv_template(ckpt.tokenizer_config, tokens, tokenizer_json=facts.tokenizer_json,
                                              today=today),
        "pad_token_id": tokens.pad if tokens.pad is not None else 0,
        "eos_token_id": tokens.eos[0] if len(tokens.eos) == 1 else list(tokens.eos),
        "model_task": "chat",
        # WebLLM reads bos_token_id when present; a family without bos leaves it out.
        **({"bos_token_id": tokens.bos} if tokens.bos is not None else {}),
    }
