// The token ids of a chat prompt, where only the chat template's own markup produces special
// tokens. A user who pastes "<|im_end|>\n<|im_start|>system\n..." into a message must not be able
// to end their turn and open a system turn: by default every special-token string inside the
// messages is encoded as the plain text it is.
//
// How: the template is rendered a second time with each message string marked. Inside the
// string's leading and trailing whitespace (so that `trim` and `strip` in templates still work) it
// is wrapped in boundary markers, and each special-token string in it is replaced by a
// placeholder; markers and placeholders are made of a private-use character that occurs nowhere
// in the messages, the template or the special tokens, with digits. Every special-token string
// left in that rendering comes from the template itself. Putting the messages' text back must
// give exactly the plain rendering (otherwise the template changed a message in a way this cannot
// follow, e.g. by slicing it, and the request is refused); the template's special tokens are then
// encoded as special ids and all other text, message text included, as plain text.

import { ChatMessage } from "./chat_template";
import { EngineError } from "./errors";
import { SpecialToken, Tokenizer } from "./tokenizer";

interface Match { start: number; end: number; token: SpecialToken }

/** Leftmost-longest occurrences of the special tokens in `text`, as the tokenizer splits them. */
export function findSpecials(text: string, specials: SpecialToken[]): Match[] {
  const byFirst = new Map<string, SpecialToken[]>(); // longest first, as specials is sorted
  for (const t of specials) {
    const list = byFirst.get(t.content[0]) ?? [];
    list.push(t);
    byFirst.set(t.content[0], list);
  }
  const out: Match[] = [];
  for (let i = 0; i < text.length;) {
    const token = byFirst.get(text[i])?.find((t) => text.startsWith(t.content, i));
    if (token) {
      out.push({ start: i, end: i + token.content.length, token });
      i += token.content.length;
    } else {
      i++;
    }
  }
  return out;
}

/** Every string in a message (content, name, tool call arguments, ...) except its role. */
function mapStrings<T>(value: T, f: (s: string) => string, isMessage = false): T {
  if (typeof value === "string") return f(value) as T;
  if (Array.isArray(value)) return value.map((v) => mapStrings(v, f)) as T;
  if (value !== null && typeof value === "object") {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = isMessage && k === "role" ? v : mapStrings(v, f);
    return out as T;
  }
  return value;
}

function collectStrings(value: unknown, into: string[]): void {
  if (typeof value === "string") into.push(value);
  else if (Array.isArray(value)) value.forEach((v) => collectStrings(v, into));
  else if (value !== null && typeof value === "object") Object.values(value).forEach((v) => collectStrings(v, into));
}

/** A private-use character found in none of `texts`. */
function unusedMarker(texts: string[]): string {
  for (let code = 0xe000; code <= 0xf8ff; code++) {
    const c = String.fromCharCode(code);
    if (!texts.some((t) => t.includes(c))) return c;
  }
  throw new EngineError("invalid_request", "the messages use every private-use character U+E000..U+F8FF; kiln cannot mark their text apart from the chat template");
}

/**
 * The ids of the prompt `render(messages)` renders. With `allowSpecialTokensInContent` the whole
 * rendering is encoded as is (special-token strings in messages become special tokens); without,
 * only the template's markup does.
 */
export function chatPromptIds(tokenizer: Tokenizer, render: (messages: ChatMessage[]) => string,
                              messages: ChatMessage[], allowSpecialTokensInContent: boolean,
                              template = ""): number[] {
  const rendered = render(messages);
  if (allowSpecialTokensInContent) return tokenizer.encode(rendered, { addSpecialTokens: false });
  const specials = tokenizer.specialTokens();
  if (specials.length === 0) return tokenizer.encode(rendered, { addSpecialTokens: false });

  const strings: string[] = [];
  collectStrings(messages, strings);
  const m = unusedMarker([...strings, template, ...specials.map((t) => t.content)]);
  const originals: string[] = [];
  const mark = (s: string): string => {
    const core = s.trim();
    if (core.length === 0) return s;
    const lead = s.slice(0, s.length - s.trimStart().length);
    const tail = s.slice(lead.length + core.length);
    let marked = "";
    let at = 0;
    for (const { start, end } of findSpecials(core, specials)) {
      originals.push(core.slice(start, end));
      marked += core.slice(at, start) + `${m}${originals.length - 1}${m}`;
      at = end;
    }
    // `${m}${m}` is an empty boundary: no special token of the template can reach into the message.
    return `${lead}${m}${m}${marked}${core.slice(at)}${m}${m}${tail}`;
  };
  let markedRendering: string;
  try {
    markedRendering = render(messages.map((msg) => mapStrings(msg, mark, true)));
  } catch {
    markedRendering = m; // a template that cannot take the marked text: handled as a mismatch below
  }

  // Put the messages' text back, noting where the template's own special tokens end up.
  const placeholder = new RegExp(`${m}(\\d*)${m}`, "g");
  const restore = (s: string) => s.replace(placeholder, (_, k: string) => (k === "" ? "" : originals[Number(k)] ?? m));
  const spans: { start: number; end: number }[] = [];
  let text = "";
  let at = 0;
  for (const { start, end } of findSpecials(markedRendering, specials)) {
    text += restore(markedRendering.slice(at, start));
    spans.push({ start: text.length, end: text.length + (end - start) });
    text += markedRendering.slice(start, end);
    at = end;
  }
  text += restore(markedRendering.slice(at));
  if (text !== rendered || text.includes(m)) {
    const found = strings.flatMap((s) => findSpecials(s, specials)).map((x) => x.token.content);
    if (found.length === 0) return tokenizer.encode(rendered, { addSpecialTokens: false }); // nothing to protect
    throw new EngineError("special_tokens_in_content",
      `a message contains the special token ${JSON.stringify(found[0])}, and this chat template transforms message text in a way kiln cannot follow to keep it plain text; remove it from the message or create the engine with allowSpecialTokensInContent: true`);
  }
  return tokenizer.encodeWithSpecialSpans(text, spans);
}
