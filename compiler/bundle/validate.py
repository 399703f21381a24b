"""Checks of a loaded checkpoint that `kiln build` runs in its first seconds, before any compiling:
everything the runtime will need from the checkpoint's files, so that a bad file stops the build
with one line instead of after minutes of compiling, or worse, in a bundle the runtime refuses.

    config.json fields           checked where they are parsed (model_defs, Checkpoint loading)
    tokenizer.json               JSON object with a `model`, loaded by the `tokenizers` library
                                 (the format the runtime's tokenizer reads)
    chat template                parses as Jinja and renders a probe conversation, with the
                                 environment transformers uses (checkpoint/chat_template.py)
    token ids, sampling fields   in range (checkpoint/facts.py, read once for both configs)
    weight headers               every tensor the model needs is present and floating-point;
                                 safetensors offsets tile the data (safetensors_stream)

Weight values (NaN, inf) are checked as they stream during conversion (convert_weights).
"""

from __future__ import annotations

import json
from typing import Any

from kiln.checkpoint.facts import ChatFacts, chat_facts
from kiln.checkpoint.folder import Checkpoint
from kiln.errors import CheckpointError, describe_exception

# A conversation every chat template must render: the shape every chat request takes.
PROBE_CONVERSATION = [
    {"role": "user", "content": "Hello."},
    {"role": "assistant", "content": "Hello! How can I help?"},
    {"role": "user", "content": "What is a kiln?"},
]
TOKENIZER_FIX = "re-download it, or save it again with transformers' AutoTokenizer(...).save_pretrained(folder)"


def validate_checkpoint(ckpt: Checkpoint) -> ChatFacts:
    """Raise a KilnError naming the first problem; return the checkpoint's chat facts."""
    from kiln.weights.convert import check_present

    tokenizer_json = check_tokenizer(ckpt)
    check_chat_template(ckpt)
    facts = chat_facts(ckpt, tokenizer_json)  # token ids and sampling fields, checked as they are read
    check_present(ckpt, ckpt.open_tensors())
    return facts


def _where(ckpt: Checkpoint, name: str) -> str:
    return f"{name} (made from {ckpt.folder.name})" if name in ckpt.tokenizer_texts else str(ckpt.folder / name)


def check_tokenizer(ckpt: Checkpoint) -> dict[str, Any]:
    """tokenizer.json loads with the `tokenizers` library and has a model; returns it parsed."""
    from tokenizers import Tokenizer

    where = _where(ckpt, "tokenizer.json")
    try:
        text = ckpt.tokenizer_text("tokenizer.json")
    except UnicodeDecodeError:
        raise CheckpointError(f"{where} is not UTF-8 text; {TOKENIZER_FIX}.") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{where} is not valid JSON ({err.msg} at line {err.lineno}); {TOKENIZER_FIX}.") from None
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise CheckpointError(f"{where} has no tokenizer `model`, so it is not a Hugging Face tokenizer.json; "
                              f"{TOKENIZER_FIX}.")
    try:
        Tokenizer.from_str(text)
    except Exception as err:  # noqa: BLE001 - the library's own reason goes into the one line
        raise CheckpointError(f"{where} cannot be loaded by the tokenizers library "
                              f"({describe_exception(err, 160)}); {TOKENIZER_FIX}.") from None
    return data


def check_chat_template(ckpt: Checkpoint) -> str:
    """The chat template exists, parses as Jinja and renders a user/assistant/user conversation."""
    import jinja2

    from kiln.checkpoint.chat_template import render_chat_template

    source = ckpt.chat_template_source
    template = ckpt.chat_template
    if template is None:
        raise CheckpointError(
            f"the checkpoint has no chat template (no chat_template in {source}, no chat_template.jinja); kiln "
            "builds chat bundles: add the model family's chat template to tokenizer_config.json.")
    if not isinstance(template, str) or not template.strip():
        raise CheckpointError(f"the chat template in {source} is {json.dumps(template)[:40]}, not Jinja text; "
                              "fix it, or add the model family's chat template.")
    config = {**ckpt.tokenizer_config, "chat_template": template}
    try:
        render_chat_template(config, PROBE_CONVERSATION, add_generation_prompt=True)
    except jinja2.TemplateSyntaxError as err:
        raise CheckpointError(f"the chat template in {source} is not valid Jinja ({err.message} at line "
                              f"{err.lineno}); fix the template.") from None
    except Exception as err:  # noqa: BLE001 - raise_exception(), undefined names, sandbox refusals, ...
        raise CheckpointError(f"the chat template in {source} fails on a user/assistant/user conversation "
                              f"({describe_exception(err, 160)}); fix the template.") from None
    return template
