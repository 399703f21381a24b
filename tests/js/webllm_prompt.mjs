// Builds WebLLM's prompt for chat requests with WebLLM's own code (the installed
// @mlc-ai/web-llm package), for tests/test_mlc_config.py:
//
//   node tests/js/webllm_prompt.mjs PATH/TO/@mlc-ai/web-llm/lib/index.js < cases.json > out.json
//
// cases.json: [{conv_template, messages: [{role, content}], tokenizer_json?: "path"}]
// out.json:   [{prefix_ids, pieces, token_ids?}]
//
// It follows what LLMChatPipeline does for a chat completion: the conversation comes from
// getConversationFromChatCompletionRequest (all messages but the last), the last user message is
// appended and an assistant reply header added, then getPromptArray() gives the text pieces.
// With a tokenizer, token_ids are what getInputData() prefills: system_prefix_token_ids, then
// each piece encoded on its own with WebLLM's bundled tokenizer (@mlc-ai/web-tokenizers).
//
// Those functions are internal to WebLLM's bundle (not exported), so the bundle is loaded from a
// temporary copy with one export line appended; nothing of WebLLM is reimplemented here.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const [indexJs] = process.argv.slice(2);
if (!indexJs) {
  console.error("usage: node webllm_prompt.mjs WEBLLM_LIB_INDEX_JS < cases.json");
  process.exit(2);
}
// The tokenizer's emscripten glue, built for browsers and bundled by WebLLM, needs these in Node:
// a base URL (it resolves "./" against location.href) and a CommonJS require.
globalThis.location = { href: import.meta.url };
globalThis.createRequire = () => createRequire(import.meta.url);
globalThis.require = createRequire(import.meta.url);

const dir = mkdtempSync(join(tmpdir(), "kiln-webllm-"));
let webllm;
try {
  const file = join(dir, "webllm_with_internals.mjs");
  writeFileSync(file, readFileSync(indexJs, "utf8") +
    "\nexport { getConversationFromChatCompletionRequest as kilnConversationFromRequest," +
    " Role as kilnRole, libExports as kilnTokenizers };\n");
  webllm = await import(pathToFileURL(file).href);
} finally {
  rmSync(dir, { recursive: true, force: true });
}

const cases = JSON.parse(readFileSync(0, "utf8"));
const tokenizers = new Map();
const results = [];
for (const { conv_template, messages, tokenizer_json } of cases) {
  const config = { conv_template, conv_config: undefined };
  const conversation = webllm.kilnConversationFromRequest({ messages }, config);
  const last = messages[messages.length - 1];
  conversation.appendMessage(webllm.kilnRole.user, last.content);
  conversation.appendReplyHeader(webllm.kilnRole.assistant);
  const pieces = conversation.getPromptArray(config);
  const prefix_ids = [...(conversation.config.system_prefix_token_ids ?? [])];
  const result = { prefix_ids, pieces };
  if (tokenizer_json) {
    if (!tokenizers.has(tokenizer_json)) {
      const bytes = readFileSync(tokenizer_json);
      const buffer = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
      tokenizers.set(tokenizer_json, await webllm.kilnTokenizers.Tokenizer.fromJSON(buffer));
    }
    const tokenizer = tokenizers.get(tokenizer_json);
    result.token_ids = [...prefix_ids];
    for (const piece of pieces) {
      result.token_ids.push(...Array.from(tokenizer.encode(piece)));
    }
  }
  results.push(result);
}
process.stdout.write(JSON.stringify(results));
