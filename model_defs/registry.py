"""Hugging Face `architectures` names -> kiln model families. Adding an architecture means adding
one file in model_defs/ and one entry here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from kiln.errors import ConfigFieldError, UnsupportedError

from . import llama, mistral, qwen2


@dataclass(frozen=True)
class Family:
    model_type: str  # MLC's model_type, written to mlc-chat-config.json
    config_class: type  # .from_hf(config.json dict) -> config, raising UnsupportedError
    model_class: type  # nn.Module(config, WeightFormats, target)
    weight_sources: Callable[[Any], dict[str, list[str]]]  # kiln weight -> HF tensors to concatenate


ARCHITECTURES: dict[str, Family] = {
    "LlamaForCausalLM": Family("llama", llama.LlamaConfig, llama.LlamaForCausalLM, llama.hf_weight_sources),
    "MistralForCausalLM": Family("mistral", mistral.MistralConfig, mistral.MistralForCausalLM,
                                 mistral.hf_weight_sources),
    "Qwen2ForCausalLM": Family("qwen2", qwen2.Qwen2Config, qwen2.Qwen2ForCausalLM, qwen2.hf_weight_sources),
}


def family_for(hf_config: dict[str, Any]) -> Family:
    names = hf_config.get("architectures") or []
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise ConfigFieldError("architectures", f"is {str(names)[:60]!r}; it must be a list of class names such as "
                               '["LlamaForCausalLM"]')
    for name in names:
        if name in ARCHITECTURES:
            return ARCHITECTURES[name]
    shown = ", ".join(names) if names else "none listed"
    raise UnsupportedError(
        f"architecture {shown} is not supported; kiln supports {', '.join(sorted(ARCHITECTURES))}."
    )
