"""The checkpoint's own chat template, rendered as transformers' `apply_chat_template` renders it:
the same sandboxed Jinja environment options and helpers. kiln build uses it to check the template
(bundle/validate.py) and to derive WebLLM's conv_template (webllm/conv_template.py); the runtime
renders the same template in the browser."""

from __future__ import annotations

import datetime
import functools
import json

from kiln.errors import UnsupportedError


def special_tokens(tokenizer_config: dict) -> dict[str, str]:
    """The named special tokens `apply_chat_template` passes to a template (bos_token, ...)."""
    out = {}
    for key in ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"):
        value = tokenizer_config.get(key)
        if isinstance(value, dict):  # a serialized AddedToken
            value = value.get("content")
        if isinstance(value, str):
            out[key] = value
    return out


def template_of(tokenizer_config: dict):
    """tokenizer_config's chat_template as the file has it; of a list of named templates, the
    "default" one. Not checked: bundle/validate.py says what is wrong with a bad one."""
    template = tokenizer_config.get("chat_template")
    if isinstance(template, list):  # named templates: [{"name": "default", "template": ...}, ...]
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    return template


def _chat_template(tokenizer_config: dict) -> str:
    template = template_of(tokenizer_config)
    if not isinstance(template, str) or not template:
        raise UnsupportedError(
            "the checkpoint has no chat_template in tokenizer_config.json (or chat_template.jinja); "
            "add the model family's chat template to it to build a chat bundle."
        )
    return template


def load_jinja():
    try:
        import jinja2
        import jinja2.ext
        import jinja2.nodes
        import jinja2.sandbox
    except ImportError:
        raise UnsupportedError(
            "rendering chat templates needs the Python package jinja2; install it with "
            "`pip install jinja2`."
        ) from None
    return jinja2


def _environment(now: datetime.datetime | None):
    """A sandboxed Jinja environment with the options and helpers `transformers` gives chat
    templates: trim_blocks, lstrip_blocks, loop controls, {% generation %} blocks (rendered as
    their body), raise_exception, strftime_now and a tojson that keeps non-ASCII text."""
    jinja2 = load_jinja()
    ImmutableSandboxedEnvironment = jinja2.sandbox.ImmutableSandboxedEnvironment

    class GenerationBlock(jinja2.ext.Extension):
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.Scope(body).set_lineno(lineno)

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    def strftime_now(fmt):
        return (now or datetime.datetime.now()).strftime(fmt)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True,
        extensions=[GenerationBlock, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


@functools.lru_cache(maxsize=16)
def _compiled(template: str, now: datetime.datetime | None):
    # Deriving a conv_template renders the same template some twenty times; compile it once.
    return _environment(now).from_string(template)


def render_chat_template(tokenizer_config: dict, messages: list[dict], *,
                         add_generation_prompt: bool = True,
                         now: datetime.datetime | None = None) -> str:
    """The checkpoint's chat template rendered as `apply_chat_template(messages, tokenize=False,
    add_generation_prompt=...)` renders it. `now` fixes what strftime_now() sees."""
    template = _compiled(_chat_template(tokenizer_config), now)
    return template.render(messages=messages, add_generation_prompt=add_generation_prompt,
                           tools=None, documents=None, **special_tokens(tokenizer_config))
