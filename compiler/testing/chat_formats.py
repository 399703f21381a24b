"""The chat formats of the synthetic checkpoints (kiln.testing.synthetic): each family's special
tokens and its Jinja chat template, written in the form the published checkpoints use."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ChatFormat:
    name: str
    special_tokens: tuple[str, ...]   # each one encodes to a single id
    specials_first: bool              # ids 0..n-1 (sentencepiece-era models) or after the BPE vocab
    bos: str | None                   # None: the family has no BOS (Qwen2)
    eos: str                          # the tokenizer's eos: ends an assistant turn
    pad: str
    stop_tokens: tuple[str, ...]      # generation_config eos_token_id (eos first)
    add_bos: bool                     # tokenizer prepends bos when encoding plain text
    template: str


# [INST] format as Llama 2 chat documents it: every user turn opens with bos, every assistant
# turn closes with eos, and the system prompt sits inside the first user turn in a <<SYS>> block.
LLAMA2_TEMPLATE = """\
{%- if messages and messages[0]['role'] == 'system' -%}
    {%- set system_prompt = messages[0]['content'] | trim -%}
    {%- set messages = messages[1:] -%}
{%- else -%}
    {%- set system_prompt = none -%}
{%- endif -%}
{%- for message in messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{- raise_exception('roles must alternate user, assistant, ... after an optional system') -}}
    {%- endif -%}
    {%- if message['role'] == 'user' -%}
        {%- set text = message['content'] | trim -%}
        {%- if loop.first and system_prompt is not none -%}
            {%- set text = '<<SYS>>\\n' + system_prompt + '\\n<</SYS>>\\n\\n' + text -%}
        {%- endif -%}
        {{- bos_token + '[INST] ' + text + ' [/INST]' -}}
    {%- else -%}
        {{- ' ' + message['content'] | trim + ' ' + eos_token -}}
    {%- endif -%}
{%- endfor -%}
"""

# Llama 3 header format: one bos, then each message as a header block closed by <|eot_id|>; the
# generation prompt is an open assistant header.
LLAMA3_TEMPLATE = """\
{{- bos_token -}}
{%- for message in messages -%}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' -}}
    {{- message['content'] | trim + '<|eot_id|>' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}
{%- endif -%}
"""

# Mistral instruct format: one bos for the whole conversation, [INST] ... [/INST] around user
# turns, eos after each assistant turn; a system prompt is prepended to the first user turn.
MISTRAL_TEMPLATE = """\
{%- if messages and messages[0]['role'] == 'system' -%}
    {%- set system_prompt = messages[0]['content'] | trim -%}
    {%- set messages = messages[1:] -%}
{%- else -%}
    {%- set system_prompt = none -%}
{%- endif -%}
{{- bos_token -}}
{%- for message in messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{- raise_exception('roles must alternate user, assistant, ... after an optional system') -}}
    {%- endif -%}
    {%- if message['role'] == 'user' -%}
        {%- set text = message['content'] | trim -%}
        {%- if loop.first and system_prompt is not none -%}
            {%- set text = system_prompt + '\\n\\n' + text -%}
        {%- endif -%}
        {{- '[INST] ' + text + ' [/INST]' -}}
    {%- else -%}
        {{- message['content'] | trim + eos_token -}}
    {%- endif -%}
{%- endfor -%}
"""

# ChatML: every message is <|im_start|>role\n content <|im_end|>\n; no bos.
CHATML_TEMPLATE = """\
{%- for message in messages -%}
    {{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{- '<|im_start|>assistant\\n' -}}
{%- endif -%}
"""

LLAMA2_CHAT = ChatFormat(
    name="llama2", special_tokens=("<unk>", "<s>", "</s>", "[INST]", "[/INST]", "<<SYS>>", "<</SYS>>"),
    specials_first=True, bos="<s>", eos="</s>", pad="</s>", stop_tokens=("</s>",), add_bos=True,
    template=LLAMA2_TEMPLATE)
LLAMA3_CHAT = ChatFormat(
    name="llama3",
    special_tokens=("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                    "<|eot_id|>", "<|finetune_right_pad_id|>"),
    specials_first=False, bos="<|begin_of_text|>", eos="<|eot_id|>", pad="<|finetune_right_pad_id|>",
    stop_tokens=("<|eot_id|>", "<|end_of_text|>"), add_bos=True, template=LLAMA3_TEMPLATE)
MISTRAL_CHAT = ChatFormat(
    name="mistral", special_tokens=("<unk>", "<s>", "</s>", "[INST]", "[/INST]"),
    specials_first=True, bos="<s>", eos="</s>", pad="</s>", stop_tokens=("</s>",), add_bos=True,
    template=MISTRAL_TEMPLATE)
CHATML_CHAT = ChatFormat(
    name="chatml", special_tokens=("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
    specials_first=False, bos=None, eos="<|im_end|>", pad="<|endoftext|>",
    stop_tokens=("<|im_end|>", "<|endoftext|>"), add_bos=False, template=CHATML_TEMPLATE)
