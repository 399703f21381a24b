// Unit tests of the demo app's Markdown parser (demo/markdown.ts) and its text helpers
// (demo/format.ts). The parser is pure; what the renderer makes of its tree in a real DOM, and that
// model text never becomes markup there, is checked in Chromium by tests/test_demo_site.py.
// Run: cd runtime_web && node build.mjs --tests && node --test .build/test/demo_markdown.test.mjs
import assert from "node:assert/strict";
import { test } from "node:test";

import { backendLabel, backendNeeds, describeProgress, formatMB, titleFrom } from "../demo/format";
import { Inline, parseBlocks, parseInline } from "../demo/markdown";

/** An inline tree as compact text: **x** -> <strong>x</strong>, `x` -> <code>x</code>, a break -> <br>. */
function show(nodes: Inline[]): string {
  return nodes.map((n) => n.type === "text" ? n.text : n.type === "br" ? "<br>" : n.type === "code"
    ? `<code>${n.text}</code>` : `<${n.type}>${show(n.children)}</${n.type}>`).join("");
}

const inline = (text: string) => show(parseInline(text));

test("HTML in model text is plain text to the parser", () => {
  const attack = '<img src=x onerror="alert(1)"> <script>alert(2)</script> [x](javascript:alert(3))';
  assert.deepEqual(parseInline(attack), [{ type: "text", text: attack }]);
  assert.equal(inline("**<b>bold</b>**"), "<strong><b>bold</b></strong>");
  assert.deepEqual(parseBlocks("```html\n<iframe src=//evil></iframe>\n```"),
                   [{ type: "code", lang: "html", text: "<iframe src=//evil></iframe>" }]);
});

test("paragraphs, line breaks, emphasis, code spans", () => {
  assert.deepEqual(parseBlocks("one\ntwo\n\nthree"), [{ type: "p", lines: ["one", "two"] }, { type: "p", lines: ["three"] }]);
  assert.equal(inline("one\ntwo"), "one<br>two");
  assert.equal(inline("a **bold** and *it* and _it2_ and `x*y*`"),
               "a <strong>bold</strong> and <em>it</em> and <em>it2</em> and <code>x*y*</code>");
  assert.equal(inline("**bold *nested* text**"), "<strong>bold <em>nested</em> text</strong>");
  // Unmatched or spaced markers, and underscores inside words, stay as they are.
  assert.equal(inline("2 * 3 * 4 and snake_case_name and **open"), "2 * 3 * 4 and snake_case_name and **open");
  assert.equal(inline("\\*not em\\*"), "*not em*");
});

test("fenced code keeps its text verbatim; an unclosed fence (still streaming) runs to the end", () => {
  assert.deepEqual(parseBlocks("Look:\n```js\nconst a = 1 < 2 && **b**;\n\n  indented\n```\nafter"), [
    { type: "p", lines: ["Look:"] },
    { type: "code", lang: "js", text: "const a = 1 < 2 && **b**;\n\n  indented" },
    { type: "p", lines: ["after"] },
  ]);
  assert.deepEqual(parseBlocks("```\nhalf a block"), [{ type: "code", lang: "", text: "half a block" }]);
});

test("lists, headings, quotes", () => {
  assert.deepEqual(parseBlocks("- a\n- **b**\n* c"), [{ type: "list", ordered: false, start: 1, items: ["a", "**b**", "c"] }]);
  assert.deepEqual(parseBlocks("3. x\n4. y"), [{ type: "list", ordered: true, start: 3, items: ["x", "y"] }]);
  assert.deepEqual(parseBlocks("# Title\ntext"), [{ type: "heading", level: 1, text: "Title" }, { type: "p", lines: ["text"] }]);
  assert.deepEqual(parseBlocks("> quoted\n> more"), [{ type: "quote", blocks: [{ type: "p", lines: ["quoted", "more"] }] }]);
  assert.deepEqual(parseBlocks("para\n- item").map((b) => b.type), ["p", "list"]);
});

test("UI text: sizes, progress, backend needs, titles", () => {
  assert.equal(formatMB(1_234_567), "1.2 MB");
  assert.equal(formatMB(250_000_000), "250 MB");
  assert.equal(describeProgress({ phase: "download", bytesDone: 2e6, bytesTotal: 8e6, mbPerSecond: 1.5, etaSeconds: 4 }),
               "Downloading weights · 2.0 MB / 8.0 MB · 25 % · 1.5 MB/s · 4 s left");
  assert.equal(describeProgress({ phase: "upload", bytesDone: 8e6, bytesTotal: 8e6, mbPerSecond: 0, etaSeconds: 0 }),
               "Loading into the backend · 8.0 MB / 8.0 MB · 100 %");
  assert.equal(describeProgress({ phase: "compile", bytesDone: 12, bytesTotal: 48, mbPerSecond: 0, etaSeconds: null }),
               "Compiling GPU shaders · 12 / 48 · 25 % · estimating time left");
  assert.equal(backendNeeds({ backends: ["webgpu", "wasm"], webgpu_features: [] }), "WebGPU or WASM");
  assert.equal(backendNeeds({ backends: ["webgpu", "wasm"], webgpu_features: ["shader-f16"] }), "WebGPU with shader-f16 or WASM");
  assert.equal(backendLabel("wasm", 2), "WASM, 2 threads");
  assert.equal(backendLabel("wasm", 1), "WASM");
  assert.equal(backendLabel("webgpu"), "WebGPU");
  assert.equal(backendNeeds({ backends: ["wasm"], webgpu_features: [] }), "WASM");
  assert.equal(titleFrom("  hello\nworld"), "hello");
  assert.equal(titleFrom("x".repeat(60)).length, 48);
});
