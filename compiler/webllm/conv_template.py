"""MLC's `conv_template` for WebLLM, derived from the checkpoint's own Jinja chat template.

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

from kiln.checkpoint.chat_template import load_jinja, render_chat_template, special_tokens
from kiln.checkpoint.facts import TokenIds, added_token_id, added_tokens, token_ids
from kiln.errors import UnsupportedError

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


def derive_conv_template(tokenizer_config: dict, tokens: TokenIds | None = None, *,
                         tokenizer_json: dict | None = None,
                         today: datetime.date | None = None) -> dict:
    """MLC's `conv_template` object that makes WebLLM's prompt for a chat request equal the
    checkpoint's `chat_template` rendered by `transformers` with add_generation_prompt=True.

    The bos token's id is looked up in the added tokens (tokenizer_config's added_tokens_decoder,
    `tokenizer_json`'s added_tokens), then in `tokens` (the checkpoint's ids, kiln.checkpoint.facts;
    without them, the tokenizer's own), whose stop ids become the template's. A template that reads
    today's date (strftime_now) is only accepted with `today`, the date WebLLM's template will then
    always carry. Raises UnsupportedError, naming the reason, for templates WebLLM's format cannot
    express.
    """
    template_name = "kiln-derived"
    added = added_tokens(tokenizer_config, tokenizer_json)
    tokens = tokens or token_ids({}, {}, tokenizer_config, added, None)

    def fail(reason: str):
        raise UnsupportedError(
            f"the checkpoint's chat template cannot be expressed as WebLLM's conv_template: "
            f"{reason}."
        )

    # 0. Today's date: only a template that shows it needs one.
    def render(messages, gen=True, now=None):
        return render_chat_template(tokenizer_config, messages, add_generation_prompt=gen,
                                    now=now)

    jinja2 = load_jinja()
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
        bos_id = added_token_id(added, bos)
        bos_id = tokens.bos if bos_id is None else bos_id
        if bos_id is None:
            fail(f"it starts with {bos!r}, whose token id is in none of tokenizer.json's "
                 "added_tokens, tokenizer_config.json's added_tokens_decoder and "
                 "the checkpoint's config")
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

    # 5. Stop tokens: the checkpoint's (its eos ids, then the tokenizer's eos token).
    conv["stop_token_ids"] = list(tokens.stop)
    conv["stop_str"] = [added[i] for i in tokens.stop if i in added]
    return conv


def _assemble(conv: dict, messages: list[dict], prefix_text: str) -> str:
    """WebLLM's prompt as one string, with `prefix_text` standing for its prefix token ids."""
    return prefix_text + "".join(webllm_prompt(conv, messages)[1])
