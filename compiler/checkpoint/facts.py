"""What a chat bundle needs to know about a checkpoint besides its weights and architecture, derived
once, here: token ids (bos, eos, the stop tokens, pad), sampling defaults, the chat template and
the parsed tokenizer.json. kiln-config.json (bundle/kiln_config.py) and
WebLLM's mlc-chat-config.json (webllm/mlc_config.py) are both written from one ChatFacts, so
they cannot disagree. The architecture's facts (sizes, RoPE) are the family's parsed config,
Checkpoint.model_config."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from kiln.checkpoint.chat_template import special_tokens
from kiln.checkpoint.folder import Checkpoint
from kiln.errors import ConfigFieldError

# transformers' GenerationConfig defaults.
DEFAULT_SAMPLING = {"temperature": 1.0, "top_p": 1.0, "top_k": 0, "repetition_penalty": 1.0}
# generation_config.json field -> (lowest, highest, lowest excluded): the ranges the runtime accepts.
SAMPLING_RANGES = {"temperature": (0, math.inf, False), "top_p": (0, 1, True), "top_k": (0, math.inf, False),
                   "repetition_penalty": (0, math.inf, True)}


@dataclass(frozen=True)
class TokenIds:
    bos: int | None
    eos: list[int]   # generation_config's (else config.json's) eos_token_id, as a list
    stop: list[int]  # eos, then the tokenizer's eos token when it is not among them
    pad: int | None  # may be negative: some configs say -1 for "none"


@dataclass(frozen=True)
class Sampling:
    """Default sampling, read as transformers reads generation_config.json: without do_sample it
    decodes greedily (temperature 0, top_p 1, top_k 0) whatever temperature the file names."""

    temperature: float
    top_p: float
    top_k: int
    repetition_penalty: float

    def as_dict(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k,
                "repetition_penalty": self.repetition_penalty}


@dataclass(frozen=True)
class ChatFacts:
    tokens: TokenIds
    sampling: Sampling
    chat_template: str | None
    tokenizer_json: dict[str, Any] | None = field(default=None, repr=False)


def added_tokens(tokenizer_config: dict, tokenizer_json: dict | None) -> dict[int, str]:
    """id -> text of the added (special) tokens: tokenizer_config.json's added_tokens_decoder
    (transformers 4) or tokenizer.json's added_tokens (where transformers 5 keeps them)."""
    tokens = {}
    for entry in (tokenizer_json or {}).get("added_tokens") or []:
        if isinstance(entry, dict) and "id" in entry and isinstance(entry.get("content"), str):
            tokens[int(entry["id"])] = entry["content"]
    for key, entry in (tokenizer_config.get("added_tokens_decoder") or {}).items():
        if isinstance(entry, dict) and isinstance(entry.get("content"), str):
            tokens[int(key)] = entry["content"]
    return tokens


def added_token_id(added: dict[int, str], text: str | None) -> int | None:
    """The lowest id of the added token `text`, if there is one."""
    ids = [i for i, t in added.items() if t == text]
    return min(ids) if ids else None


def _token_id(value: Any, key: str, source: str, vocab_size: int | None, *, negative_ok: bool = False) -> int:
    if type(value) is not int or not (negative_ok or (0 <= value and (vocab_size is None or value < vocab_size))):
        bound = f"from 0 to {vocab_size - 1}" if vocab_size else "of 0 or more"
        raise ConfigFieldError(key, f"is {json.dumps(value)[:40]}; it must be a token id {bound}",
                               source=source, fix=f"fix {source} or download the checkpoint again")
    return value


def token_ids(hf_config: dict, generation_config: dict, tokenizer_config: dict, added: dict[int, str],
              vocab_size: int | None) -> TokenIds:
    """bos / eos / pad ids; generation_config.json wins over config.json, as in transformers. Ids
    are checked here, where they are read: an id outside the vocabulary would index past the
    embedding in the runtime."""

    def read(key: str, many: bool = False, negative_ok: bool = False):
        source = "generation_config.json" if key in generation_config else "config.json"
        value = generation_config[key] if key in generation_config else hf_config.get(key)
        if value is None:
            return [] if many else None
        if many and isinstance(value, list):
            return [_token_id(v, key, source, vocab_size) for v in value]
        checked = _token_id(value, key, source, vocab_size, negative_ok=negative_ok)
        return [checked] if many else checked

    eos = read("eos_token_id", many=True)
    stop = list(eos)
    eos_id = added_token_id(added, special_tokens(tokenizer_config).get("eos_token"))
    if eos_id is not None and eos_id not in stop and (vocab_size is None or eos_id < vocab_size):
        stop.append(eos_id)
    return TokenIds(bos=read("bos_token_id"), eos=eos, stop=stop, pad=read("pad_token_id", negative_ok=True))


def sampling(generation_config: dict) -> Sampling:
    """Checked sampling defaults (ConfigFieldError for a value the runtime would refuse)."""
    out = {}
    for key, default in DEFAULT_SAMPLING.items():
        value = generation_config.get(key)
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
    if generation_config.get("do_sample") is not True:
        out.update(temperature=0.0, top_p=1.0, top_k=0)  # transformers' greedy decoding
    return Sampling(**out)


def chat_facts(ckpt: Checkpoint, tokenizer_json: dict | None) -> ChatFacts:
    """The checkpoint's chat facts; ConfigFieldError names the first bad field."""
    added = added_tokens(ckpt.tokenizer_config, tokenizer_json)
    return ChatFacts(
        tokens=token_ids(ckpt.hf_config, ckpt.generation_config, ckpt.tokenizer_config, added,
                         ckpt.model_config.vocab_size),
        sampling=sampling(ckpt.generation_config),
        chat_template=ckpt.chat_template,
        tokenizer_json=tokenizer_json,
    )
