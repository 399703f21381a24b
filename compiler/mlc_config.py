"""`mlc-chat-config.json` for WebLLM (and MLC), with MLC's `conv_template` derived from the
checkpoint's own Jinja chat template.

WebLLM 0.2.86 does not run Jinja: it builds a prompt from `conv_template` (its `Conversation`
class, `getPromptArray`), as a list of text pieces that it tokenizes one by one and concatenates
after `system_prefix_token_ids`:

    system piece   system_template with "{system_message}" replaced by the request's system
                   message, or by `system_message` when there is none; no piece when that message
                   is "" and render_empty_system_message is false
    message i      roles[role] + role_content_sep + content + seps[i % len(seps)]
                   (no role prefix for i == 0 when add_role_after_system_message is false and
                   there is a system piece; i counts messages after the system one)
    reply header   roles["assistant"] + role_empty_sep

`derive_conv_template` renders the checkpoint's template (the same Jinja environment options as
`transformers`' `apply_chat_template`) on probe conversations whose contents are sentinel words,
reads the pieces off the rendered strings, and then checks that the pieces reproduce the template
exactly on every probe. A template that cannot be expressed this way (a system message placed in
the last user turn, content rewritten beyond trimming, ...) raises UnsupportedError instead.

Known limits of the format, not of the derivation: WebLLM cannot trim or rewrite message content,
so templates that `| trim` content (Llama 3's does) match only for contents without surrounding
whitespace; and it tokenizes each piece separately, which can differ from tokenizing the whole
rendered string where a piece boundary falls inside a run of ordinary text.
"""

from __future__ import annotations

import datetime
import functools
import json

from .errors import UnsupportedError

MLC_CONFIG_VERSION = "0.1.0"
SYSTEM_PLACEHOLDER = "{system_message}"

# Sentinel contents for probing templates: plain words that no template rewrites.
_PROBE = {
    "system": "KilnProbeSystemQx",
    "user": ["KilnProbeUserAq", "KilnProbeUserBq", "KilnProbeUserCq"],
    "assistant": ["KilnProbeAssistantAq", "KilnProbeAssistantBq"],
}
# Second set, with inner punctuation and line breaks, used only to verify the derived template.
_CHECK = {
    "system": "You are kiln's probe.\nBe brief.",
    "user": ["What is 2+2?", "And\ntwice that?", "Thanks!"],
    "assistant": ["It is 4.", "It is 8."],
}
# Two different days: a template whose output changes between them depends on today's date.
_PROBE_DAYS = (datetime.datetime(2024, 1, 2, 3, 4, 5), datetime.datetime(2031, 11, 29, 22, 8, 9))


# ------------------------------------------------------------------------------ chat templates


def special_tokens(tokenizer_config: dict) -> dict[str, str]:
    """The named special tokens `apply_chat_template` passes to a template (bos_token, ...)."""
    out = {}
    for key in ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token",
                "mask_token"):
        value = tokenizer_config.get(key)
        if isinstance(value, dict):  # a serialized AddedToken
            value = value.get("content")
        if isinstance(value, str):
            out[key] = value
    return out


def _chat_template(tokenizer_config: dict) -> str:
    template = tokenizer_config.get("chat_template")
    if isinstance(template, list):  # named templates: [{"name": "default", "template": ...}, ...]
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    if not isinstance(template, str) or not template:
        raise UnsupportedError(
            "the checkpoint has no chat_template in tokenizer_config.json (or chat_template.jinja); "
            "add the model family's chat template to it to build a chat bundle."
        )
    return template


def _jinja():
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
    jinja2 = _jinja()
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


# ------------------------------------------------------------------- WebLLM's prompt assembly


def _js_replace(text: str, pattern: str, replacement: str) -> str:
    """JavaScript's `text.replace(pattern, replacement)` for a string pattern: the first
    occurrence only, with the replacement's $$, $&, $` and $' patterns expanded."""
    at = text.find(pattern)
    if at < 0:
        return text
    before, after = text[:at], text[at + len(pattern):]
    out, i = [], 0
    while i < len(replacement):
        two = replacement[i:i + 2]
        expanded = {"$$": "$", "$&": pattern, "$`": before, "$'": after}.get(two)
        if expanded is not None:
            out.append(expanded)
            i += 2
        else:
            out.append(replacement[i])
            i += 1
    return before + "".join(out) + after


def _sep(conv: dict, key: str) -> str:
    # WebLLM: `conv[key] || conv[key] == "" ? conv[key] : ": "`
    value = conv.get(key)
    return value if isinstance(value, str) else ": "


def webllm_prompt(conv: dict, messages: list[dict]) -> tuple[list[int], list[str]]:
    """What WebLLM 0.2.86 prefills for a chat request `messages` (an optional system message
    first, then alternating user/assistant, ending with a user message): the token ids it puts
    first (`system_prefix_token_ids`) and the text pieces it then tokenizes one by one.

    A Python description of `getConversationFromChatCompletionRequest`, `appendMessage`,
    `appendReplyHeader` and `Conversation.getPromptArrayInternal` for text-only messages, down to
    String.replace's `$` patterns, which WebLLM applies to the system message (so a system message
    containing "$&" or "$$" reaches the model altered); tests/js/webllm_prompt.mjs runs WebLLM's
    own code to check it.
    """
    system = conv.get("system_message", "")
    rest = list(messages)
    if rest and rest[0]["role"] == "system":
        system = rest.pop(0)["content"]
    if system == "" and conv.get("render_empty_system_message") is False:
        system_prompt = ""
    else:
        system_prompt = _js_replace(conv["system_template"], SYSTEM_PLACEHOLDER, system)
    pieces = [system_prompt] if system_prompt != "" else []
    placeholders = {"user": "{user_message}", "assistant": "{assistant_message}",
                    "tool": "{tool_message}"}
    for i, message in enumerate(rest):
        role = message["role"]
        text = message["content"]
        templates = conv.get("role_templates")
        if templates is not None and templates.get(role) is not None:
            text = _js_replace(templates[role], placeholders[role], text)
            text = _js_replace(text, "{function_string}", "")
        if conv.get("add_role_after_system_message") is False and system_prompt != "" and i == 0:
            prefix = ""
        else:
            prefix = conv["roles"][role] + _sep(conv, "role_content_sep")
        pieces.append(prefix + text + conv["seps"][i % len(conv["seps"])])
    pieces.append(conv["roles"]["assistant"] + _sep(conv, "role_empty_sep"))
    return list(conv.get("system_prefix_token_ids") or []), pieces


# ------------------------------------------------------------------------ template derivation


def _conversations(words: dict, with_system: bool) -> list[list[dict]]:
    """[U], [U A U], [U A U A U], each optionally after a system message."""
    convs = []
    for turns in (1, 2, 3):
        conv = [{"role": "system", "content": words["system"]}] if with_system else []
        for t in range(turns):
            conv.append({"role": "user", "content": words["user"][t]})
            if t + 1 < turns:
                conv.append({"role": "assistant", "content": words["assistant"][t]})
        convs.append(conv)
    return convs


def _added_tokens(tokenizer_config: dict, tokenizer_json: dict | None) -> dict[int, str]:
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


def _token_id(added: dict[int, str], token: str) -> int | None:
    ids = [i for i, text in added.items() if text == token]
    return min(ids) if ids else None


def _ids(value) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]


def _common_suffix(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[len(a) - 1 - n] == b[len(b) - 1 - n]:
        n += 1
    return a[len(a) - n:]


def _split(text: str, words: list[str]) -> list[str]:
    """The text around `words`, which must appear once each and in order."""
    parts, pos = [], 0
    for word in words:
        if text.count(word) != 1:
            raise ValueError(f"{word!r} appears {text.count(word)} times")
        at = text.index(word)
        if at < pos:
            raise ValueError(f"{word!r} is out of order")
        parts.append(text[pos:at])
        pos = at + len(word)
    parts.append(text[pos:])
    return parts


def derive_conv_template(tokenizer_config: dict, generation_config: dict | None = None, *,
                         tokenizer_json: dict | None = None,
                         today: datetime.date | None = None) -> dict:
    """MLC's `conv_template` object that makes WebLLM's prompt for a chat request equal the
    checkpoint's `chat_template` rendered by `transformers` with add_generation_prompt=True.

    Token ids (of the bos and eos tokens) are looked up in tokenizer_config's added_tokens_decoder
    or `tokenizer_json`'s (the parsed tokenizer.json) added_tokens, then in generation_config.
    Stop tokens are generation_config's eos_token_id(s) plus the tokenizer's eos token. A template
    that reads today's date (strftime_now) is only accepted with `today`, the date WebLLM's
    template will then always carry. Raises UnsupportedError, naming the reason, for templates
    WebLLM's format cannot express.
    """
    generation_config = generation_config or {}
    template_name = "kiln-derived"
    added = _added_tokens(tokenizer_config, tokenizer_json)

    def fail(reason: str):
        raise UnsupportedError(
            f"the checkpoint's chat template cannot be expressed as WebLLM's conv_template: "
            f"{reason}."
        )

    # 0. Today's date: only a template that shows it needs one.
    def render(messages, gen=True, now=None):
        return render_chat_template(tokenizer_config, messages, add_generation_prompt=gen,
                                    now=now)

    jinja2 = _jinja()
    probe_u = _conversations(_PROBE, with_system=False)

    def renders_on(day):
        out = [render(probe_u[1], now=day)]
        try:
            out.append(render(_conversations(_PROBE, with_system=True)[1], now=day))
        except jinja2.TemplateError:
            pass  # no system role: step 3 deals with it
        return out

    try:
        renders_by_day = [renders_on(day) for day in _PROBE_DAYS]
    except jinja2.TemplateError as err:
        fail(f"rendering a user/assistant/user conversation failed ({err})")
    now = None
    if renders_by_day[0] != renders_by_day[1]:
        if today is None:
            raise UnsupportedError(
                "the checkpoint's chat template shows today's date (strftime_now), which WebLLM's "
                "conv_template cannot compute; pass today=<date> to bake that date into it."
            )
        now = datetime.datetime(today.year, today.month, today.day, 12, 0, 0)

    def render_now(messages, gen=True):
        return render(messages, gen=gen, now=now)

    # 1. BOS: a leading bos_token becomes system_prefix_token_ids (WebLLM encodes pieces without
    #    special tokens).
    specials = special_tokens(tokenizer_config)
    bos = specials.get("bos_token")
    first = render_now(probe_u[0])
    prefix_ids: list[int] = []
    if bos and first.startswith(bos):
        bos_id = _token_id(added, bos)
        if bos_id is None:
            bos_id = generation_config.get("bos_token_id")
        if bos_id is None:
            fail(f"it starts with {bos!r}, whose token id is in none of tokenizer.json's "
                 "added_tokens, tokenizer_config.json's added_tokens_decoder and "
                 "generation_config.json")
        prefix_ids = [int(bos_id)]
    prefix_text = bos if prefix_ids else ""

    def body(text: str) -> str:
        if prefix_ids:
            if not text.startswith(bos):
                fail(f"only some conversations start with {bos!r}")
            return text[len(bos):]
        return text

    # 2. User and assistant turns, from conversations without a system message.
    try:
        u1 = body(render_now(probe_u[0]))
        u1_open = body(render_now(probe_u[0], gen=False))
        uau = body(render_now(probe_u[1]))
    except jinja2.TemplateError as err:
        fail(f"rendering a conversation without a system message failed ({err})")
    if not u1.startswith(u1_open):
        fail("the generation prompt is not appended at the end")
    gen = u1[len(u1_open):]
    U, A = _PROBE["user"], _PROBE["assistant"]
    try:
        head, between_ua, between_au, tail = _split(uau, [U[0], A[0], U[1]])
        head1, tail1 = _split(u1, [U[0]])
    except ValueError as err:
        fail(f"message contents are not rendered verbatim ({err})")
    if head1 != head or tail1 != tail:
        fail("the first user turn renders differently with and without later turns")
    if not tail.endswith(gen):
        fail("the generation prompt does not follow the last user turn")
    user_suffix = tail[:len(tail) - len(gen)]
    if not between_ua.startswith(user_suffix):
        fail("a user turn ends differently before an assistant turn than before the reply")
    assistant_prefix = between_ua[len(user_suffix):]
    if between_au.startswith(user_suffix) and head.endswith(between_au[len(user_suffix):]):
        user_prefix = between_au[len(user_suffix):]  # the usual case: both turns end alike
    else:
        user_prefix = _common_suffix(head, between_au)
    assistant_suffix = between_au[:len(between_au) - len(user_prefix)]
    no_system = head[:len(head) - len(user_prefix)]

    # WebLLM has one role_content_sep for all roles, and the reply header reuses the role string.
    content_sep = _common_suffix(user_prefix, assistant_prefix)
    user_role = user_prefix[:len(user_prefix) - len(content_sep)]
    assistant_role = assistant_prefix[:len(assistant_prefix) - len(content_sep)]
    if not gen.startswith(assistant_role):
        fail(f"the generation prompt {gen!r} does not start with the assistant turn's opening "
             f"{assistant_role!r}")
    empty_sep = gen[len(assistant_role):]

    conv = {
        "name": template_name,
        "system_template": SYSTEM_PLACEHOLDER,
        "system_message": "",
        "system_prefix_token_ids": prefix_ids,
        "add_role_after_system_message": True,
        "render_empty_system_message": False,
        "roles": {"user": user_role, "assistant": assistant_role},
        # No role_templates: WebLLM would pass contents through String.replace, which rewrites
        # "$&", "$$", ... in them; without templates it inserts contents as they are.
        "seps": [user_suffix, assistant_suffix] if assistant_suffix != user_suffix
        else [user_suffix],
        "role_content_sep": content_sep,
        "role_empty_sep": empty_sep,
        "stop_str": [],
        "stop_token_ids": [],
        "messages": [],
        "function_string": "",
        "use_function_calling": False,
    }

    # 3. The system message, from conversations that have one.
    S = _PROBE["system"]
    try:
        su = body(render_now(_conversations(_PROBE, with_system=True)[0]))
    except jinja2.TemplateError:
        su = None  # the template rejects system messages: WebLLM drops them
    candidates = []
    if su is None:
        candidates.append({"system_template": no_system, "system_message": "",
                           "render_empty_system_message": no_system != ""})
    else:
        try:
            before, after = _split(su, [U[0]])
            sys_head, sys_tail = _split(before, [S])
        except ValueError as err:
            fail(f"the system message is not rendered verbatim before the first user turn ({err})")
        if after != tail:
            fail("the first user turn renders differently after a system message")
        system_block = sys_head + SYSTEM_PLACEHOLDER + sys_tail
        if system_block.endswith(user_prefix):
            shapes = [(system_block[:len(system_block) - len(user_prefix)], True)]
        else:
            shapes = []
        shapes.append((system_block, False))  # the system block swallows the first role prefix
        for template, role_after in shapes:
            open_, close = template.split(SYSTEM_PLACEHOLDER)
            defaults = [("", False)]
            # A default system message: the no-system rendering is the same block around it.
            if role_after and no_system.startswith(open_) and no_system.endswith(close) and len(
                    no_system) >= len(open_) + len(close):
                defaults.insert(0, (no_system[len(open_):len(no_system) - len(close)], True))
            for message, render_empty in defaults:
                candidates.append({"system_template": template, "system_message": message,
                                   "add_role_after_system_message": role_after,
                                   "render_empty_system_message": render_empty})

    # 4. Keep the first candidate that reproduces every probe and check conversation exactly.
    probes = []
    for words in (_PROBE, _CHECK):
        probes += _conversations(words, with_system=False)
        if su is not None:
            probes += _conversations(words, with_system=True)
    expected = [render_now(messages) for messages in probes]
    for candidate in candidates:
        trial = {**conv, **candidate}
        if all(_assemble(trial, messages, prefix_text) == want
               for messages, want in zip(probes, expected)):
            conv = trial
            break
    else:
        for messages, want in zip(probes, expected):
            got = _assemble({**conv, **candidates[0]}, messages, prefix_text)
            if got != want:
                fail(f"for {[m['role'] for m in messages]} it renders {want!r}, but the closest "
                     f"conv_template gives {got!r}")

    # 5. Stop tokens: generation_config's eos ids, then the tokenizer's eos.
    stop_ids = _ids(generation_config.get("eos_token_id"))
    eos = specials.get("eos_token")
    eos_id = _token_id(added, eos) if eos else None
    if eos_id is not None and eos_id not in stop_ids:
        stop_ids.append(eos_id)
    conv["stop_token_ids"] = stop_ids
    conv["stop_str"] = [added[i] for i in stop_ids if i in added]
    return conv


def _assemble(conv: dict, messages: list[dict], prefix_text: str) -> str:
    """WebLLM's prompt as one string, with `prefix_text` standing for its prefix token ids."""
    return prefix_text + "".join(webllm_prompt(conv, messages)[1])


# ------------------------------------------------------------------------- tokenizer and config


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


def mlc_chat_config(hf_config: dict, *, model_type: str, quantization: str, context_window: int,
                    prefill_chunk: int, sliding_window: int, generation_config: dict,
                    tokenizer_config: dict, tokenizer_files: list[str],
                    tokenizer_json: dict | None = None, attention_sink: int = 0,
                    today: datetime.date | None = None) -> dict:
    """The `mlc-chat-config.json` WebLLM reads next to a model library.

    `sliding_window` > 0 builds a sliding-window KV cache of that size (WebLLM then needs
    context_window_size -1 and an attention sink >= 0, `attention_sink`); otherwise the cache holds
    `context_window` tokens. Sampling defaults follow generation_config.json the way `transformers`
    reads it: without do_sample, decoding is greedy (temperature 0). `tokenizer_json` (the parsed
    tokenizer.json) gives tokenizer_info; `today` is passed to derive_conv_template.
    """
    generation_config = generation_config or {}
    if "tokenizer.json" not in tokenizer_files:
        raise UnsupportedError(
            "WebLLM needs tokenizer.json beside the model; add it to the bundle's tokenizer files."
        )
    if context_window <= 0 and sliding_window <= 0:
        raise UnsupportedError("set a context window (or a sliding window) larger than 0.")
    if prefill_chunk <= 0:
        raise UnsupportedError("set a prefill chunk size larger than 0.")

    from .checkpoint import model_config_from_hf

    # The architecture's own parse of config.json (checked, with its defaults), not a second one.
    _, cfg = model_config_from_hf(hf_config)
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
        "hidden_act": hf_config.get("hidden_act", "silu"),
        "context_window_size": context,
        "sliding_window_size": sliding,
        "prefill_chunk_size": int(prefill_chunk),
        "tensor_parallel_shards": 1,
        "pipeline_parallel_stages": 1,
        "max_batch_size": 1,
    }

    do_sample = bool(generation_config.get("do_sample", False))

    def sampling(key, default):
        value = generation_config.get(key)
        return float(default if value is None else value)

    eos_ids = _ids(generation_config.get("eos_token_id", hf_config.get("eos_token_id")))
    bos_id = generation_config.get("bos_token_id", hf_config.get("bos_token_id"))
    pad_id = generation_config.get("pad_token_id", hf_config.get("pad_token_id"))
    return {
        "version": MLC_CONFIG_VERSION,
        "model_type": model_type,
        "quantization": quantization,
        "model_config": model_config,
        "vocab_size": cfg.vocab_size,
        "context_window_size": context,
        "sliding_window_size": sliding,
        "prefill_chunk_size": int(prefill_chunk),
        "attention_sink_size": int(attention_sink) if sliding > 0 else -1,
        "tensor_parallel_shards": 1,
        "pipeline_parallel_stages": 1,
        "temperature": sampling("temperature", 1.0) if do_sample else 0.0,
        "top_p": sampling("top_p", 1.0) if do_sample else 1.0,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "repetition_penalty": sampling("repetition_penalty", 1.0),
        "tokenizer_files": list(tokenizer_files),
        "tokenizer_info": tokenizer_info(tokenizer_json),
        "conv_template": derive_conv_template(tokenizer_config, generation_config,
                                              tokenizer_json=tokenizer_json, today=today),
        "pad_token_id": int(pad_id) if pad_id is not None else 0,
        "eos_token_id": eos_ids[0] if len(eos_ids) == 1 else eos_ids,
        "model_task": "chat",
        # WebLLM reads bos_token_id when present; a family without bos leaves it out.
        **({"bos_token_id": int(bos_id)} if bos_id is not None else {}),
    }
