// Chat formatting with the checkpoint's own Jinja `chat_template`, rendered by @huggingface/jinja
// (a maintained JS Jinja made for chat templates: it already trims blocks as transformers' Jinja
// environment does, and provides raise_exception, strftime_now, namespace and tojson). The output
// equals transformers' `apply_chat_template(messages, add_generation_prompt=..., tokenize=False)`;
// tests/runtime_fixtures.py writes transformers' renderings and runtime_web/test/chat_template.test.ts
// compares.

import { Template } from "@huggingface/jinja";

import { ChatTemplateError } from "./errors";

export interface ChatMessage {
  role: string;
  content: string | null | unknown[];
  [field: string]: unknown; // name, tool_calls, tool_call_id, reasoning_content, ...
}

export interface ChatTemplateInput {
  messages: ChatMessage[];
  /** Append the opening of an assistant turn (what a model continues from). Default false. */
  addGenerationPrompt?: boolean;
  /** The tokenizer's BOS/EOS strings; leave out (not null) when the tokenizer has none. */
  bosToken?: string;
  eosToken?: string;
  tools?: object[] | null;
  documents?: object[] | null;
  /** Further template variables under their Jinja names: unk_token, pad_token, custom kwargs. */
  [variable: string]: unknown;
}

// A template that failed to parse, or raised an exception (raise_exception) while rendering.
export { ChatTemplateError };

/** Names a message's reasoning goes by; transformers fills the first two from any of them. */
const REASONING_FIELDS = ["reasoning_content", "thinking", "reasoning"] as const;

/** As transformers does before rendering: a message with reasoning under any of its names gets it
 *  as `thinking` and `reasoning_content` too (templates read one or the other). */
function aliasReasoningFields(messages: ChatMessage[]): ChatMessage[] {
  return messages.map((message) => {
    if (!message || typeof message !== "object") return message;
    const field = REASONING_FIELDS.find((name) => message[name] !== undefined && message[name] !== null);
    if (field === undefined) return message;
    const reasoning = message[field];
    return { thinking: reasoning, ...message, reasoning_content: reasoning };
  });
}

const compiled = new Map<string, Template>();

function compile(template: string): Template {
  let result = compiled.get(template);
  if (result === undefined) {
    try {
      result = new Template(template);
    } catch (error) {
      throw new ChatTemplateError(`the chat template does not parse: ${(error as Error).message}`);
    }
    if (compiled.size >= 16) compiled.delete(compiled.keys().next().value as string);
    compiled.set(template, result);
  }
  return result;
}

/**
 * Renders `template` for a conversation with the variables transformers gives a chat template:
 * messages, tools and documents (none unless given), add_generation_prompt, the tokenizer's
 * special tokens (bos_token, eos_token, ...), and the globals raise_exception and strftime_now.
 *
 * Known differences of @huggingface/jinja 0.5.11 from Python's Jinja, none of which the chat
 * templates of the supported families depend on: a printed boolean (`{{ x is defined }}`) reads
 * true/false, not True/False; text a loop iteration writes before reaching `{% break %}` or
 * `{% continue %}` is dropped (templates put those first in the body); `|length` and slicing of a
 * string count UTF-16 units, so characters beyond the BMP (emoji) count twice.
 */
export function renderChatTemplate(template: string, input: ChatTemplateInput): string {
  if (typeof template !== "string" || template.length === 0) {
    throw new ChatTemplateError("the bundle has no chat template (tokenizer_config.json `chat_template`)");
  }
  const { messages, addGenerationPrompt = false, bosToken, eosToken, tools = null, documents = null, ...rest } = input;
  if (!Array.isArray(messages)) throw new TypeError("renderChatTemplate: `messages` must be an array");
  if (messages.length === 0) {
    // As transformers: a template given no messages renders nothing a model should continue.
    throw new ChatTemplateError("cannot format an empty conversation: give at least one message");
  }
  const variables: Record<string, unknown> = {
    ...rest,
    messages: aliasReasoningFields(messages),
    tools,
    documents,
    add_generation_prompt: addGenerationPrompt,
  };
  // Like transformers' special_tokens_map: a token the tokenizer lacks is undefined, not None.
  if (bosToken !== undefined && bosToken !== null) variables.bos_token = bosToken;
  if (eosToken !== undefined && eosToken !== null) variables.eos_token = eosToken;
  const parsed = compile(template);
  try {
    return parsed.render(variables);
  } catch (error) {
    throw new ChatTemplateError(`the chat template failed: ${(error as Error).message}`);
  }
}

const SPECIAL_TOKEN_KEYS = ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"];

function tokenString(value: unknown): string | undefined {
  if (typeof value === "string") return value;
  if (value && typeof value === "object" && typeof (value as { content?: unknown }).content === "string") {
    return (value as { content: string }).content; // a serialized AddedToken
  }
  return undefined;
}

/**
 * The special-token variables of tokenizer_config.json, shaped for renderChatTemplate:
 * { bosToken, eosToken, unk_token, pad_token, ... } with only the tokens the config names.
 */
export function chatTemplateTokens(tokenizerConfig: object): Partial<ChatTemplateInput> {
  const config = tokenizerConfig as Record<string, unknown>;
  const out: Record<string, string> = {};
  for (const key of SPECIAL_TOKEN_KEYS) {
    const value = tokenString(config[key]);
    if (value === undefined) continue;
    if (key === "bos_token") out.bosToken = value;
    else if (key === "eos_token") out.eosToken = value;
    else out[key] = value;
  }
  return out;
}

/**
 * The chat template in tokenizer_config.json: a string, or one of a list of named templates
 * ({name, template}; "default" unless `name` is given), as transformers chooses it.
 */
export function chatTemplateOf(tokenizerConfig: object, name?: string): string {
  const value = (tokenizerConfig as { chat_template?: unknown }).chat_template;
  if (typeof value === "string" && name === undefined) return value;
  if (Array.isArray(value)) {
    const wanted = name ?? "default";
    const entry = value.find((t) => t && (t as { name?: unknown }).name === wanted) as { template?: unknown } | undefined;
    if (entry && typeof entry.template === "string") return entry.template;
    const names = value.map((t) => (t as { name?: unknown }).name).join(", ");
    throw new ChatTemplateError(`tokenizer_config.json has no chat template named "${wanted}" (it has: ${names})`);
  }
  if (typeof value === "string") {
    throw new ChatTemplateError(`tokenizer_config.json has a single chat template, not one named "${name}"`);
  }
  throw new ChatTemplateError("tokenizer_config.json has no `chat_template`: this checkpoint cannot format chats");
}
