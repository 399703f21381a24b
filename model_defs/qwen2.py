"""Qwen2ForCausalLM: the Llama architecture with a bias on the q, k and v projections."""

from __future__ import annotations

from typing import Any

from kiln.errors import UnsupportedError

from .llama import LlamaConfig, LlamaForCausalLM, _flag, hf_weight_sources


class Qwen2Config(LlamaConfig):
    @classmethod
    def from_hf(cls, hf: dict[str, Any]) -> "Qwen2Config":
        if _flag(hf, "use_sliding_window"):
            raise UnsupportedError(
                "Qwen2ForCausalLM with use_sliding_window=true is not supported; kiln supports Qwen2 "
                "with full attention (use_sliding_window=false)."
            )
        cfg = super().from_hf(hf)
        cfg.qkv_bias, cfg.o_bias = True, False
        return cfg


Qwen2ForCausalLM = LlamaForCausalLM
__all__ = ["Qwen2Config", "Qwen2ForCausalLM", "hf_weight_sources"]
