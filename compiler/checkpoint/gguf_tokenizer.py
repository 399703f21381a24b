"""tokenizer.json and tokenizer_config.json for a GGUF file, made by transformers' own GGUF
tokenizer conversion, so that ids equal those of `AutoTokenizer.from_pretrained(dir, gguf_file=...)`.

A GGUF file has no tokenizer.json: it stores the vocabulary, merges, token types and special token
ids as `tokenizer.ggml.*` metadata. transformers turns those into a `tokenizers` pipeline
(byte-level BPE for `gpt2` vocabularies, sentencepiece-style BPE for `llama` ones, the split regex
llama.cpp's `tokenizer.ggml.pre` names); its TokenizersBackend then adds the BOS/EOS the file asks
for. kiln calls exactly those two steps on metadata it read itself: transformers' own GGUF reader
imports torch, which a build does not need.
"""

from __future__ import annotations

import json
from typing import Any

from kiln.errors import CheckpointError, UnsupportedError

# Special token name -> the GGUF metadata key of its id.
SPECIAL_TOKEN_IDS = {"bos_token": "tokenizer.ggml.bos_token_id", "eos_token": "tokenizer.ggml.eos_token_id",
                     "unk_token": "tokenizer.ggml.unknown_token_id", "pad_token": "tokenizer.ggml.padding_token_id"}


def _transformers_inputs(metadata: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(tokenizer dict for convert_gguf_tokenizer, tokenizer config kwargs): the metadata under the
    names transformers gives them (its GGUF_TOKENIZER_MAPPING)."""
    from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_TOKENIZER_MAPPING

    groups = {group: {name: metadata[f"tokenizer.{key}"] for key, name in renames.items()
                      if f"tokenizer.{key}" in metadata}
              for group, renames in GGUF_TOKENIZER_MAPPING.items()}
    tokenizer, config = groups["tokenizer"], groups["tokenizer_config"]
    if "tokens" not in tokenizer:
        raise UnsupportedError("the GGUF file has no tokenizer (no tokenizer.ggml.tokens metadata); kiln needs "
                               "the model's vocabulary in the file.")
    if tokenizer.get("tokenizer_type") == "llama":
        # A sentencepiece vocabulary without the flag gets BOS, as in llama.cpp and transformers.
        config.setdefault("add_bos_token", True)
    for name, key in SPECIAL_TOKEN_IDS.items():
        token_id = metadata.get(key)
        if token_id is not None and not 0 <= token_id < len(tokenizer["tokens"]):
            raise CheckpointError(f"the GGUF file's {key} is {token_id}, outside its {len(tokenizer['tokens'])}-token "
                                  "vocabulary; the file is corrupt: download or convert it again.")
        config[name] = tokenizer["tokens"][token_id] if token_id is not None else None
    return tokenizer, config


def tokenizer_files(metadata: dict[str, Any], context_length: int) -> dict[str, str]:
    """{"tokenizer.json": text, "tokenizer_config.json": text} for a GGUF file's tokenizer."""
    from transformers.integrations.gguf.gguf_tokenizer_mapping import convert_gguf_tokenizer
    from transformers.tokenization_utils_tokenizers import TokenizersBackend

    tokenizer_dict, config = _transformers_inputs(metadata)
    try:
        backend, _ = convert_gguf_tokenizer(metadata["general.architecture"], tokenizer_dict)
    except ValueError as err:  # a tokenizer model transformers cannot build
        raise UnsupportedError(f"the GGUF file's tokenizer cannot be converted: {err}") from None
    tokenizer = TokenizersBackend(tokenizer_object=backend, **config)
    tokenizer_config = {
        "tokenizer_class": "TokenizersBackend",
        **{name: value for name, value in config.items() if name in SPECIAL_TOKEN_IDS and value is not None},
        "add_bos_token": bool(config.get("add_bos_token", False)),
        "add_eos_token": bool(config.get("add_eos_token", False)),
        "clean_up_tokenization_spaces": bool(tokenizer.clean_up_tokenization_spaces),
        "model_max_length": context_length,
    }
    if config.get("chat_template"):
        tokenizer_config["chat_template"] = config["chat_template"]
    return {"tokenizer.json": tokenizer.backend_tokenizer.to_str(),
            "tokenizer_config.json": json.dumps(tokenizer_config, indent=2, ensure_ascii=False)}
