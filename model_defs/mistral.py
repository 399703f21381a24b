"""MistralForCausalLM: the Llama architecture with sliding-window attention (each token attends to
at most `sliding_window` tokens, itself included)."""

from __future__ import annotations

from typing import Any

from .llama import LlamaConfig, LlamaForCausalLM, _integer, hf_weight_sources


class MistralConfig(LlamaConfig):
    @classmethod
    def from_hf(cls, hf: dict[str, Any]) -> "MistralConfig":
        cfg = super().from_hf(hf)
        # null or 0: full attention, as transformers reads it.
        cfg.sliding_window = _integer(hf, "sliding_window", default=None, minimum=0) or None
        return cfg


MistralForCausalLM = LlamaForCausalLM
__all__ = ["MistralConfig", "MistralForCausalLM", "hf_weight_sources"]
