"""mlc-chat-config.json and the conv_template derived from a checkpoint's chat template.
Longer than 400 lines: its cases share one run of WebLLM's own prompt code per checkpoint.

The reference for prompts is `transformers`' apply_chat_template(..., add_generation_prompt=True)
on the synthetic checkpoints (compiler/testing/synthetic.py: Llama 2 [INST]/<<SYS>>, Llama 3 headers,
Mistral [INST], ChatML). WebLLM's side is computed by WebLLM itself: tests/js/webllm_prompt.mjs
loads the installed @mlc-ai/web-llm bundle and runs its Conversation code and its tokenizer, so
nothing of WebLLM is reimplemented here; kiln.webllm.conv_template.webllm_prompt (the Python
description kiln uses to verify derivations) is checked against it.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import subprocess
from pathlib import Path

import pytest

from kiln import toolchain
from kiln.checkpoint import chat_template
from kiln.checkpoint.facts import chat_facts
from kiln.checkpoint.folder import load_checkpoint
from kiln.testing import synthetic
from kiln.errors import UnsupportedError
from kiln.webllm import conv_template, mlc_config

FAMILIES = ["llama2-tiny", "llama3-tiny", "mistral-tiny", "qwen2-tiny"]
WEBLLM_INDEX = (toolchain.REPO_ROOT / "runtime_web" / "node_modules" / "@mlc-ai" / "web-llm"
                / "lib" / "index.js")
PROMPT_JS = Path(__file__).parent / "js" / "webllm_prompt.mjs"

SYSTEM = {"role": "system", "content": "You are a terse assistant.\nAnswer in one line."}
CONVERSATIONS = [
    [SYSTEM, {"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Hello there"}],
    [SYSTEM, {"role": "user", "content": "Hi"},
     {"role": "assistant", "content": "Hello! How can I help?"},
     {"role": "user", "content": "Tell me a joke about compilers."}],
    [{"role": "user", "content": "One"}, {"role": "assistant", "content": "Two"},
     {"role": "user", "content": "Three"}, {"role": "assistant", "content": "Four"},
     {"role": "user", "content": "Five, six: $& and $$ stay as they are"}],
]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlc_config")
    return {name: synthetic.make_checkpoint(name, root / name) for name in FAMILIES}


def read(checkpoint: Path, name: str) -> dict:
    return json.loads((checkpoint / name).read_text())


def load_tokenizer(checkpoint: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(checkpoint)


def hf_prompt(tokenizer, messages, tokenize=False, chat_template=None):
    out = tokenizer.apply_chat_template(messages, tokenize=tokenize, add_generation_prompt=True,
                                        chat_template=chat_template)
    if tokenize and not isinstance(out, list):
        out = out["input_ids"]
    return out


def derive(checkpoint: Path, **kwargs) -> dict:
    """The conv_template from the checkpoint's files and its token ids (kiln.checkpoint.facts)."""
    facts = chat_facts(load_checkpoint(checkpoint), read(checkpoint, "tokenizer.json"))
    return conv_template.derive_conv_template(read(checkpoint, "tokenizer_config.json"), facts.tokens,
                                              tokenizer_json=read(checkpoint, "tokenizer.json"), **kwargs)


def webllm_run(cases: list[dict]) -> list[dict]:
    """WebLLM's own prompt pieces (and token ids, for cases with a tokenizer_json path)."""
    # Never a skip: setup installs WebLLM from the lockfile, so its absence is a failure.
    assert WEBLLM_INDEX.is_file(), "@mlc-ai/web-llm is not installed in runtime_web/node_modules; run scripts/setup.sh"
    proc = subprocess.run([toolchain.find_tool("node"), str(PROMPT_JS), str(WEBLLM_INDEX)],
                          input=json.dumps(cases), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def prefix_text(tokenizer, ids: list[int]) -> str:
    return "".join(tokenizer.convert_ids_to_tokens(ids))


# ------------------------------------------------------------------------------------ prompts


@pytest.mark.parametrize("family", FAMILIES)
def test_render_matches_transformers(checkpoints, family):
    """kiln's Jinja environment renders exactly what apply_chat_template renders."""
    checkpoint = checkpoints[family]
    tokenizer = load_tokenizer(checkpoint)
    tokenizer_config = read(checkpoint, "tokenizer_config.json")
    for messages in CONVERSATIONS:
        for gen in (True, False):
            want = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)
            got = chat_template.render_chat_template(tokenizer_config, messages,
                                                  add_generation_prompt=gen)
            assert got == want


@pytest.mark.parametrize("family", FAMILIES)
def test_webllm_prompt_equals_transformers(checkpoints, family):
    """WebLLM's prompt (its own code and tokenizer, on the derived conv_template) is
    transformers' prompt: the same text and the same token ids."""
    checkpoint = checkpoints[family]
    tokenizer = load_tokenizer(checkpoint)
    conv = derive(checkpoint)
    cases = [{"conv_template": conv, "messages": messages,
              "tokenizer_json": str(checkpoint / "tokenizer.json")} for messages in CONVERSATIONS]
    for messages, webllm in zip(CONVERSATIONS, webllm_run(cases)):
        # kiln's description of WebLLM's assembly agrees with WebLLM's own code ...
        assert (webllm["prefix_ids"], webllm["pieces"]) == conv_template.webllm_prompt(conv, messages)
        # ... and the prompt text is transformers' exactly.
        text = prefix_text(tokenizer, webllm["prefix_ids"]) + "".join(webllm["pieces"])
        assert text == hf_prompt(tokenizer, messages)
        # ... and so are the token ids, although WebLLM tokenizes each piece on its own: the
        # piece boundaries fall on special tokens or on whitespace runs these tokenizers split
        # the same way. (A sentencepiece tokenizer that prepends "\u2581" to every encode call
        # would differ after a Llama 2 <<SYS>> block; see compiler/webllm/conv_template.py.)
        assert webllm["token_ids"] == hf_prompt(tokenizer, messages, tokenize=True)


def test_python_description_follows_webllm_string_replace(checkpoints):
    """WebLLM puts the system message in with String.replace, which expands "$&", "$$", ...;
    kiln's description does too (so it can tell when a prompt will not match)."""
    conv = derive(checkpoints["qwen2-tiny"])
    messages = [{"role": "system", "content": "Costs $$5, see $& or $` and $'."},
                {"role": "user", "content": "$& $$"}]
    [webllm] = webllm_run([{"conv_template": conv, "messages": messages}])
    assert (webllm["prefix_ids"], webllm["pieces"]) == conv_template.webllm_prompt(conv, messages)
    assert "Costs $5" in webllm["pieces"][0] and "$& $$" in webllm["pieces"][1]


def test_derived_templates_per_family(checkpoints):
    """The derived pieces are the ones a person would write for these formats."""
    llama3 = derive(checkpoints["llama3-tiny"])
    assert llama3["system_template"] == (
        "<|start_header_id|>system<|end_header_id|>\n\n{system_message}<|eot_id|>")
    assert llama3["roles"] == {"user": "<|start_header_id|>user",
                               "assistant": "<|start_header_id|>assistant"}
    assert llama3["role_content_sep"] == llama3["role_empty_sep"] == "<|end_header_id|>\n\n"
    assert llama3["seps"] == ["<|eot_id|>"]
    bos_id = read(checkpoints["llama3-tiny"], "generation_config.json")["bos_token_id"]
    assert llama3["system_prefix_token_ids"] == [bos_id]

    chatml = derive(checkpoints["qwen2-tiny"])
    assert chatml["system_template"] == "<|im_start|>system\n{system_message}<|im_end|>\n"
    assert chatml["seps"] == ["<|im_end|>\n"] and chatml["system_prefix_token_ids"] == []
    assert "<|im_end|>" in chatml["stop_str"]

    llama2 = derive(checkpoints["llama2-tiny"])
    assert llama2["system_template"] == "[INST] <<SYS>>\n{system_message}\n<</SYS>>\n\n"
    assert llama2["add_role_after_system_message"] is False
    assert llama2["seps"] == [" [/INST]", " </s><s>"]

    for conv in (llama3, chatml, llama2):
        assert conv["stop_token_ids"], "no stop tokens"
        assert "role_templates" not in conv  # WebLLM's String.replace would rewrite "$&" in content


def test_stop_tokens_from_generation_config(checkpoints):
    checkpoint = checkpoints["llama3-tiny"]
    conv = derive(checkpoint)
    tokenizer = load_tokenizer(checkpoint)
    eos_ids = read(checkpoint, "generation_config.json")["eos_token_id"]
    assert conv["stop_token_ids"][:len(eos_ids)] == eos_ids
    assert conv["stop_str"] == tokenizer.convert_ids_to_tokens(conv["stop_token_ids"])


# --------------------------------------------------------------------------- other templates

DEFAULT_SYSTEM_CHATML = """\
{%- if messages[0]['role'] == 'system' -%}
{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' -}}
{%- set messages = messages[1:] -%}
{%- else -%}
{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' -}}
{%- endif -%}
{%- for message in messages -%}
{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}
{%- endfor -%}
{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif -%}
"""

# Llama 3.1-style: a system block that is always there and carries a date line.
DATED_LLAMA3 = """\
{{- bos_token -}}
{%- if messages[0]['role'] == 'system' -%}
{%- set system_message = messages[0]['content'] | trim -%}
{%- set messages = messages[1:] -%}
{%- else -%}
{%- set system_message = '' -%}
{%- endif -%}
{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' -}}
{{- 'Today Date: ' + strftime_now('%d %b %Y') + '\\n\\n' -}}
{{- system_message + '<|eot_id|>' -}}
{%- for message in messages -%}
{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' -}}
{{- message['content'] | trim + '<|eot_id|>' -}}
{%- endfor -%}
{%- if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif -%}
"""

# Mistral v0.3-style: the system message goes into the LAST user turn, which WebLLM cannot do.
SYSTEM_IN_LAST_TURN = """\
{%- if messages[0]['role'] == 'system' -%}
{%- set system_message = messages[0]['content'] -%}
{%- set loop_messages = messages[1:] -%}
{%- else -%}
{%- set loop_messages = messages -%}
{%- endif -%}
{{- bos_token -}}
{%- for message in loop_messages -%}
{%- if message['role'] == 'user' -%}
{%- if loop.last and system_message is defined -%}
{{- '[INST] ' + system_message + '\\n\\n' + message['content'] + '[/INST]' -}}
{%- else -%}
{{- '[INST] ' + message['content'] + '[/INST]' -}}
{%- endif -%}
{%- else -%}
{{- message['content'] + eos_token -}}
{%- endif -%}
{%- endfor -%}
"""

# Gemma-style: no system role at all.
NO_SYSTEM = """\
{{- bos_token -}}
{%- for message in messages -%}
{%- if message['role'] == 'system' -%}{{ raise_exception('System role not supported') }}{%- endif -%}
{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}
{{- '<start_of_turn>' + role + '\\n' + message['content'] + '<end_of_turn>\\n' -}}
{%- endfor -%}
{%- if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif -%}
"""


def with_template(checkpoint: Path, template: str) -> dict:
    return {**read(checkpoint, "tokenizer_config.json"), "chat_template": template}


def test_default_system_message(checkpoints):
    checkpoint = checkpoints["qwen2-tiny"]
    tokenizer = load_tokenizer(checkpoint)
    config = with_template(checkpoint, DEFAULT_SYSTEM_CHATML)
    conv = conv_template.derive_conv_template(config, tokenizer_json=read(checkpoint, "tokenizer.json"))
    assert conv["system_message"] == "You are a helpful assistant."
    cases = [{"conv_template": conv, "messages": m} for m in CONVERSATIONS]
    for messages, webllm in zip(CONVERSATIONS, webllm_run(cases)):
        assert "".join(webllm["pieces"]) == hf_prompt(tokenizer, messages,
                                                       chat_template=DEFAULT_SYSTEM_CHATML)


def test_template_without_system_role(checkpoints):
    checkpoint = checkpoints["llama3-tiny"]
    tokenizer = load_tokenizer(checkpoint)
    config = with_template(checkpoint, NO_SYSTEM)
    conv = conv_template.derive_conv_template(config, tokenizer_json=read(checkpoint, "tokenizer.json"))
    assert "{system_message}" not in conv["system_template"]  # WebLLM drops system messages
    assert conv["roles"]["assistant"].endswith("model")
    no_system = [m for m in CONVERSATIONS if m[0]["role"] != "system"]
    cases = [{"conv_template": conv, "messages": m} for m in no_system]
    for messages, webllm in zip(no_system, webllm_run(cases)):
        text = prefix_text(tokenizer, webllm["prefix_ids"]) + "".join(webllm["pieces"])
        assert text == hf_prompt(tokenizer, messages, chat_template=NO_SYSTEM)


def test_system_in_last_turn_is_unsupported(checkpoints):
    config = with_template(checkpoints["mistral-tiny"], SYSTEM_IN_LAST_TURN)
    with pytest.raises(UnsupportedError, match="cannot be expressed"):
        conv_template.derive_conv_template(
            config, tokenizer_json=read(checkpoints["mistral-tiny"], "tokenizer.json"))


def test_missing_chat_template_is_unsupported(checkpoints):
    config = read(checkpoints["llama3-tiny"], "tokenizer_config.json")
    del config["chat_template"]
    with pytest.raises(UnsupportedError, match="no chat_template"):
        conv_template.derive_conv_template(config)


def test_dated_template_needs_a_date(checkpoints, monkeypatch):
    checkpoint = checkpoints["llama3-tiny"]
    config = with_template(checkpoint, DATED_LLAMA3)
    tokenizer_json = read(checkpoint, "tokenizer.json")
    with pytest.raises(UnsupportedError, match="today's date"):
        conv_template.derive_conv_template(config, tokenizer_json=tokenizer_json)

    day = datetime.date(2025, 3, 14)
    conv = conv_template.derive_conv_template(config, tokenizer_json=tokenizer_json, today=day)
    assert "14 Mar 2025" in conv["system_template"]
    # transformers on that day renders what WebLLM prefills.
    import transformers.utils.chat_template_utils as ctu

    class Day(datetime.datetime):
        @classmethod
        def now(cls, tz=None):
            return cls(day.year, day.month, day.day, 9, 30)

    monkeypatch.setattr(ctu, "datetime", Day)
    tokenizer = load_tokenizer(checkpoint)
    cases = [{"conv_template": conv, "messages": m} for m in CONVERSATIONS]
    for messages, webllm in zip(CONVERSATIONS, webllm_run(cases)):
        text = prefix_text(tokenizer, webllm["prefix_ids"]) + "".join(webllm["pieces"])
        assert text == hf_prompt(tokenizer, messages, chat_template=DATED_LLAMA3)


# --------------------------------------------------------------------- mlc-chat-config.json

# What WebLLM 0.2.86 reads (ChatConfig, ConvTemplateConfig) and what INTEROP.md lists.
REQUIRED = ["version", "model_type", "quantization", "model_config", "vocab_size",
            "context_window_size", "sliding_window_size", "prefill_chunk_size",
            "attention_sink_size", "temperature", "top_p", "presence_penalty",
            "frequency_penalty", "repetition_penalty", "tokenizer_files", "tokenizer_info",
            "conv_template", "pad_token_id", "bos_token_id", "eos_token_id", "model_task"]
MODEL_CONFIG = ["hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads",
                "head_dim", "num_hidden_layers", "rms_norm_eps", "vocab_size",
                "tie_word_embeddings", "position_embedding_base", "rope_scaling",
                "context_window_size", "prefill_chunk_size"]
CONV = ["name", "system_template", "system_message", "roles", "seps", "role_content_sep",
        "role_empty_sep", "stop_str", "stop_token_ids", "system_prefix_token_ids",
        "add_role_after_system_message"]


def chat_config(checkpoint: Path, generation_config: dict | None = None, tokenizer_files: list[str] | None = None,
                **overrides) -> dict:
    """mlc-chat-config.json for the checkpoint, with its generation_config or tokenizer files replaced."""
    ckpt = load_checkpoint(checkpoint)
    if generation_config is not None:
        ckpt = dataclasses.replace(ckpt, generation_config=generation_config)
    if tokenizer_files is not None:
        ckpt = dataclasses.replace(ckpt, tokenizer_files=tokenizer_files)
    facts = chat_facts(ckpt, read(checkpoint, "tokenizer.json"))
    kwargs = dict(quantization="q0f32", context_window=256, prefill_chunk=128, sliding_window=-1)
    kwargs.update(overrides)
    return mlc_config.mlc_chat_config(ckpt, facts, **kwargs)


@pytest.mark.parametrize("family", FAMILIES)
def test_mlc_chat_config_fields(checkpoints, family):
    checkpoint = checkpoints[family]
    config = chat_config(checkpoint)
    json.dumps(config)  # serializable as is
    assert [key for key in REQUIRED if key not in config] == []
    assert [key for key in MODEL_CONFIG if key not in config["model_config"]] == []
    assert [key for key in CONV if key not in config["conv_template"]] == []
    hf_config = read(checkpoint, "config.json")
    assert config["vocab_size"] == hf_config["vocab_size"]  # the logits' size, not the tokenizer's
    assert config["model_config"]["num_key_value_heads"] == hf_config["num_key_value_heads"]
    assert config["context_window_size"] == 256 and config["sliding_window_size"] == -1
    assert config["prefill_chunk_size"] == 128
    assert config["tokenizer_info"]["token_postproc_method"] == "byte_level"
    assert "tokenizer.json" in config["tokenizer_files"]
    # WebLLM's range checks in sampleFromRawLogits.
    assert config["temperature"] >= 0 and 0 < config["top_p"] <= 1
    assert config["repetition_penalty"] > 0
    assert -2 <= config["presence_penalty"] <= 2 and -2 <= config["frequency_penalty"] <= 2


def test_rope_and_sampling_defaults(checkpoints):
    llama3 = chat_config(checkpoints["llama3-tiny"])
    assert llama3["model_config"]["rope_scaling"]["rope_type"] == "llama3"
    assert llama3["model_config"]["position_embedding_base"] == 500000.0
    assert llama3["model_config"]["tie_word_embeddings"] is True
    generation = read(checkpoints["llama3-tiny"], "generation_config.json")
    assert llama3["temperature"] == generation["temperature"]
    assert llama3["top_p"] == generation["top_p"]
    assert llama3["eos_token_id"] == generation["eos_token_id"]
    # transformers decodes greedily without do_sample: so does WebLLM at temperature 0.
    greedy = chat_config(checkpoints["llama2-tiny"], generation_config={"eos_token_id": 2})
    assert greedy["temperature"] == 0.0 and greedy["top_p"] == 1.0
    assert chat_config(checkpoints["llama2-tiny"])["model_config"]["rope_scaling"] is None


def test_sliding_window_config(checkpoints):
    """WebLLM accepts exactly one of the two windows, and an attention sink with a sliding one."""
    config = chat_config(checkpoints["mistral-tiny"], sliding_window=16, attention_sink=4)
    assert config["sliding_window_size"] == 16 and config["context_window_size"] == -1
    assert config["attention_sink_size"] == 4
    assert config["model_config"]["sliding_window_size"] == 16


def test_config_errors(checkpoints):
    checkpoint = checkpoints["llama3-tiny"]
    with pytest.raises(UnsupportedError, match="tokenizer.json"):
        chat_config(checkpoint, tokenizer_files=["tokenizer.model"])
    with pytest.raises(UnsupportedError, match="prefill chunk"):
        chat_config(checkpoint, prefill_chunk=0)


def test_tokenizer_info_detection():
    assert mlc_config.tokenizer_info(None) == {
        "token_postproc_method": "byte_fallback", "prepend_space_in_encode": False,
        "strip_space_in_decode": False}
    sentencepiece_style = {
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "\u2581"}, {"type": "Replace"}]},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace"}, {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
    }
    assert mlc_config.tokenizer_info(sentencepiece_style) == {
        "token_postproc_method": "byte_fallback", "prepend_space_in_encode": True,
        "strip_space_in_decode": True}
    byte_level = mlc_config.tokenizer_info({"decoder": {"type": "ByteLevel"}})
    assert byte_level["token_postproc_method"] == "byte_level"
