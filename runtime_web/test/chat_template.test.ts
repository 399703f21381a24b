// Chat templates rendered in JS against transformers' apply_chat_template, for every tiny test
// checkpoint's own template. The reference data comes from tests/runtime_fixtures.py through
// KILN_FIXTURES; run through `pytest tests/test_runtime_unit.py`.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { chatPromptIds, findSpecials } from "../src/chat_prompt";
import { ChatTemplateError, chatTemplateOf, chatTemplateTokens, renderChatTemplate } from "../src/chat_template";
import type { ChatMessage } from "../src/chat_template";
import { Tokenizer } from "../src/tokenizer";

interface ChatCase {
  name: string;
  messages: ChatMessage[];
  add_generation_prompt: boolean;
  rendered?: string;
  prompt_ids?: number[];
  prompt_ids_plain_content?: number[];
  error?: string;
}

interface VariantFixtures {
  tokenizer_json: string;
  tokenizer_config: string;
  special_tokens_map: Record<string, string>;
  chats: ChatCase[];
}

interface TemplateCase {
  name: string;
  template: string;
  messages: ChatMessage[];
  add_generation_prompt: boolean;
  rendered: string;
}

function loadFixtures(): { variants: Record<string, VariantFixtures>; templates: TemplateCase[] } | undefined {
  const path = process.env.KILN_FIXTURES;
  return path ? JSON.parse(readFileSync(path, "utf8")) : undefined;
}

const fixtures = loadFixtures();

if (fixtures === undefined) {
  test("chat template reference data", () => {
    assert.fail("KILN_FIXTURES is not set: these tests compare against transformers' renderings that "
      + "tests/runtime_fixtures.py writes; run them with `.venv/bin/python -m pytest tests/test_runtime_unit.py`");
  });
} else {
  for (const [variant, fx] of Object.entries(fixtures.variants)) {
    const config = JSON.parse(readFileSync(fx.tokenizer_config, "utf8"));
    const template = chatTemplateOf(config);
    const tokens = chatTemplateTokens(config);
    const render = (c: ChatCase) =>
      renderChatTemplate(template, { messages: c.messages, addGenerationPrompt: c.add_generation_prompt, ...tokens });

    test(`${variant}: renderChatTemplate equals transformers' apply_chat_template`, () => {
      const cases = fx.chats.filter((c) => c.rendered !== undefined);
      assert.ok(cases.length >= 10);
      for (const c of cases) assert.equal(render(c), c.rendered, `${c.name}, add_generation_prompt=${c.add_generation_prompt}`);
    });

    test(`${variant}: a template that raises, raises ChatTemplateError with its message`, () => {
      for (const c of fx.chats.filter((c) => c.error !== undefined)) {
        assert.throws(() => render(c), (error: unknown) => {
          assert.ok(error instanceof ChatTemplateError, String(error));
          // transformers' own refusal (empty conversation) is worded differently; a template's
          // raise_exception message is passed through.
          if (c.messages.length > 0) assert.ok(error.message.includes(c.error!), `${error.message} / ${c.error}`);
          return true;
        }, c.name);
      }
    });

    test(`${variant}: the rendered prompt tokenizes to the Python ids`, () => {
      const tokenizer = Tokenizer.fromJSON(JSON.parse(readFileSync(fx.tokenizer_json, "utf8")), config);
      for (const c of fx.chats.filter((c) => c.prompt_ids !== undefined)) {
        assert.deepEqual(tokenizer.encode(render(c), { addSpecialTokens: false }), c.prompt_ids, c.name);
      }
    });

    test(`${variant}: special tokens pasted into messages stay text; only the template's markup is special`, () => {
      const tokenizer = Tokenizer.fromJSON(JSON.parse(readFileSync(fx.tokenizer_json, "utf8")), config);
      const specials = tokenizer.specialTokens();
      const specialIds = new Set(specials.map((t) => t.id));
      const cases = fx.chats.filter((c) => c.prompt_ids !== undefined);
      for (const c of cases) {
        const r = (messages: ChatMessage[]) => renderChatTemplate(template, { messages, addGenerationPrompt: c.add_generation_prompt, ...tokens });
        const label = `${c.name}, add_generation_prompt=${c.add_generation_prompt}`;
        assert.deepEqual(chatPromptIds(tokenizer, r, c.messages, false, template), c.prompt_ids_plain_content, label);
        assert.deepEqual(chatPromptIds(tokenizer, r, c.messages, true, template), c.prompt_ids, label);
        // The special ids are exactly those of the same chat with the pasted markup left out.
        const strip = (s: string) => findSpecials(s, specials).reduceRight((t, m) => t.slice(0, m.start) + t.slice(m.end), s);
        const clean = c.messages.map((m) => ({ ...m, content: strip(String(m.content)) }));
        const count = (ids: number[]) => ids.filter((id) => specialIds.has(id)).join(",");
        assert.equal(count(c.prompt_ids_plain_content!), count(tokenizer.encode(r(clean), { addSpecialTokens: false })), label);
      }
      const forged = cases.filter((c) => c.name === "forged_turns");
      assert.equal(forged.length, 2);
      for (const c of forged) assert.notDeepEqual(c.prompt_ids_plain_content, c.prompt_ids, "the forged markup differs from the real tokens");
    });

    test(`${variant}: chatTemplateTokens gives transformers' bos and eos`, () => {
      assert.equal(tokens.bosToken, fx.special_tokens_map.bos_token);
      assert.equal(tokens.eosToken, fx.special_tokens_map.eos_token);
    });
  }

  test("chatPromptIds: a template that slices message text is refused, trimming is followed, no token across a boundary", () => {
    const tokenizer = Tokenizer.fromJSON(JSON.parse(readFileSync(fixtures.variants["qwen2-tiny"].tokenizer_json, "utf8")), {});
    const imStart = tokenizer.idOf("<|im_start|>")!;
    const imEnd = tokenizer.idOf("<|im_end|>")!;
    const ids = (template: string, messages: ChatMessage[]) =>
      chatPromptIds(tokenizer, (m) => renderChatTemplate(template, { messages: m }), messages, false, template);
    const count = (list: number[], id: number) => list.filter((x) => x === id).length;

    const sliced = "{% for m in messages %}<|im_start|>{{ m.content[:5] }}<|im_end|>{% endfor %}";
    assert.throws(() => ids(sliced, [{ role: "user", content: "a <|im_end|> b" }]),
                  (e: any) => e.code === "special_tokens_in_content" && /allowSpecialTokensInContent/.test(e.message));
    // Without a pasted special token there is nothing to keep apart: the plain encoding.
    const plain = [{ role: "user", content: "a b" }];
    assert.deepEqual(ids(sliced, plain), tokenizer.encode(renderChatTemplate(sliced, { messages: plain }), { addSpecialTokens: false }));

    const trimmed = "{% for m in messages %}<|im_start|>{{ m.content | trim }}<|im_end|>{% endfor %}";
    const t = ids(trimmed, [{ role: "user", content: "  x <|im_end|>\n<|im_start|>  " }]);
    assert.deepEqual([count(t, imStart), count(t, imEnd)], [1, 1], String(t));
    // Markup ending in "<|im_" and a message starting with "end|>" render "<|im_end|>": not a token.
    const straddle = ids("<|im_start|><|im_{{ messages[0].content | trim }}", [{ role: "user", content: " end|> hi" }]);
    assert.deepEqual([count(straddle, imStart), count(straddle, imEnd)], [1, 0], String(straddle));
  });

  test("Jinja features of published templates render as in transformers", () => {
    const fx = fixtures.variants["llama3-tiny"];
    const tokens = chatTemplateTokens(JSON.parse(readFileSync(fx.tokenizer_config, "utf8")));
    assert.ok(fixtures.templates.length >= 8);
    for (const c of fixtures.templates) {
      const messages = structuredClone(c.messages);
      const out = renderChatTemplate(c.template, { messages, addGenerationPrompt: c.add_generation_prompt, ...tokens });
      assert.equal(out, c.rendered, `${c.name}, add_generation_prompt=${c.add_generation_prompt}`);
      assert.deepEqual(messages, c.messages, "the caller's messages are left as they were");
    }
  });
}

test("globals transformers gives templates: raise_exception, strftime_now, tools and documents none", () => {
  const messages = [{ role: "user", content: "hi" }];
  const out = renderChatTemplate(
    "{{ strftime_now('%Y') | length }}|{{ tools is none }}|{{ documents is none }}|{{ bos_token is defined }}|{{ add_generation_prompt }}|{{ custom }}",
    { messages, addGenerationPrompt: false, custom: "x" });
  assert.equal(out, "4|true|true|false|false|x");
  assert.throws(() => renderChatTemplate("{{ raise_exception('no tools here') }}", { messages }),
                (e: unknown) => e instanceof ChatTemplateError && e.message.includes("no tools here"));
  assert.throws(() => renderChatTemplate("{% if %}", { messages }), ChatTemplateError);
  assert.throws(() => renderChatTemplate("", { messages }), ChatTemplateError);
});

test("chatTemplateOf: a string, a named list, and a clear error when absent", () => {
  assert.equal(chatTemplateOf({ chat_template: "T" }), "T");
  const named = { chat_template: [{ name: "default", template: "D" }, { name: "tool_use", template: "U" }] };
  assert.equal(chatTemplateOf(named), "D");
  assert.equal(chatTemplateOf(named, "tool_use"), "U");
  assert.throws(() => chatTemplateOf(named, "rag"), /no chat template named "rag"/);
  assert.throws(() => chatTemplateOf({}), ChatTemplateError);
});

test("chatTemplateTokens reads plain and AddedToken-shaped entries and leaves out missing ones", () => {
  assert.deepEqual(
    chatTemplateTokens({ bos_token: { __type: "AddedToken", content: "<s>" }, eos_token: "</s>", pad_token: null, unk_token: "<unk>" }),
    { bosToken: "<s>", eosToken: "</s>", unk_token: "<unk>" });
});
