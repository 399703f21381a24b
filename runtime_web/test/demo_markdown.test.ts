// Unit tests of the demo app's Markdown renderer (demo/markdown.ts) and its text helpers
// (demo/format.ts). The renderer runs against a small fake document that records every element
// created, so the test sees exactly which tags the renderer makes: model text must never become
// markup. Run: cd runtime_web && node build.mjs --tests && node --test .build/test/demo_markdown.test.mjs
import assert from "node:assert/strict";
import { test } from "node:test";

import { backendNeeds, describeProgress, formatMB, titleFrom } from "../demo/format";
import { parseBlocks, parseInline, renderMarkdown } from "../demo/markdown";

interface FakeNode {
  tag: string; // "#text" for text nodes, "#fragment" for fragments
  text?: string;
  children: FakeNode[];
  props: Record<string, unknown>;
}

/** A document with just what renderMarkdown may use; innerHTML and friends do not exist on purpose. */
function fakeDocument() {
  const created: string[] = [];
  const element = (tag: string): any => {
    const node: any = {
      tag, children: [] as FakeNode[], props: {} as Record<string, unknown>,
      appendChild(child: FakeNode) { node.children.push(child); return child; },
      set textContent(value: string) { node.children = [{ tag: "#text", text: value, children: [], props: {} }]; },
      set className(value: string) { node.props.className = value; },
      set start(value: number) { node.props.start = value; },
    };
    return node;
  };
  return {
    created,
    doc: {
      createElement(tag: string) { created.push(tag); return element(tag); },
      createTextNode(text: string) { return { tag: "#text", text, children: [], props: {} }; },
      createDocumentFragment() { return element("#fragment"); },
    },
  };
}

function textOf(node: FakeNode): string {
  return node.tag === "#text" ? node.text ?? "" : node.children.map(textOf).join("");
}

/** A compact serialization: <tag>children</tag>, text as is (escaping < so markup would be visible). */
function show(node: FakeNode): string {
  if (node.tag === "#text") return (node.text ?? "").replace(/</g, "&lt;");
  const inner = node.children.map(show).join("");
  return node.tag === "#fragment" ? inner : `<${node.tag}>${inner}</${node.tag}>`;
}

function render(text: string) {
  const { doc, created } = fakeDocument();
  const root = renderMarkdown(text, doc) as unknown as FakeNode;
  return { root, created, html: show(root) };
}

const ALLOWED = new Set(["p", "br", "strong", "em", "code", "pre", "ul", "ol", "li", "blockquote", "h3", "h4", "h5", "h6"]);

test("HTML in model text stays text: no element but the renderer's own", () => {
  const attack = '<img src=x onerror="alert(1)"> <script>alert(2)</script> **<b>bold</b>** `<i>` [x](javascript:alert(3))\n' +
    "```html\n<iframe src=//evil></iframe>\n```\n- <svg onload=alert(4)>";
  const { root, created, html } = render(attack);
  for (const tag of created) assert.ok(ALLOWED.has(tag), `renderer created <${tag}>`);
  const text = textOf(root);
  for (const raw of ['<img src=x onerror="alert(1)">', "<script>alert(2)</script>", "<b>bold</b>", "<i>",
                     "<iframe src=//evil></iframe>", "<svg onload=alert(4)>", "[x](javascript:alert(3))"]) {
    assert.ok(text.includes(raw), `${raw} is shown as text`);
  }
  assert.match(html, /<strong>&lt;b>bold&lt;\/b><\/strong>/);
  assert.match(html, /<pre><code>&lt;iframe/);
});

test("paragraphs, line breaks, emphasis, code spans", () => {
  assert.equal(render("one\ntwo\n\nthree").html, "<p>one<br></br>two</p><p>three</p>");
  assert.equal(render("a **bold** and *it* and _it2_ and `x*y*`").html,
               "<p>a <strong>bold</strong> and <em>it</em> and <em>it2</em> and <code>x*y*</code></p>");
  assert.equal(render("**bold *nested* text**").html, "<p><strong>bold <em>nested</em> text</strong></p>");
  // Unmatched or spaced markers, and underscores inside words, stay as they are.
  assert.equal(render("2 * 3 * 4 and snake_case_name and **open").html, "<p>2 * 3 * 4 and snake_case_name and **open</p>");
  assert.equal(render("\\*not em\\*").html, "<p>*not em*</p>");
});

test("fenced code keeps its text verbatim; an unclosed fence (still streaming) runs to the end", () => {
  const { html, root } = render("Look:\n```js\nconst a = 1 < 2 && **b**;\n\n  indented\n```\nafter");
  assert.equal(html, "<p>Look:</p><pre><code>const a = 1 &lt; 2 && **b**;\n\n  indented</code></pre><p>after</p>");
  const pre = root.children[1].children[0];
  assert.equal(pre.props.className, "language-js");
  assert.equal(render("```\nhalf a block").html, "<pre><code>half a block</code></pre>");
  // A language tag that is not a plain word does not become a class.
  assert.equal(render('```x" onload="y\ncode\n```').root.children[0].children[0].props.className, undefined);
});

test("lists, headings, quotes", () => {
  assert.equal(render("- a\n- **b**\n* c").html, "<ul><li>a</li><li><strong>b</strong></li><li>c</li></ul>");
  const ordered = render("3. x\n4. y");
  assert.equal(ordered.html, "<ol><li>x</li><li>y</li></ol>");
  assert.equal(ordered.root.children[0].props.start, 3);
  assert.equal(render("# Title\ntext").html, "<h3>Title</h3><p>text</p>");
  assert.equal(render("> quoted\n> more").html, "<blockquote><p>quoted<br></br>more</p></blockquote>");
  assert.deepEqual(parseBlocks("para\n- item").map((b) => b.type), ["p", "list"]);
  assert.deepEqual(parseInline("a\nb").map((n) => n.type), ["text", "br", "text"]);
});

test("UI text: sizes, progress, backend needs, titles", () => {
  assert.equal(formatMB(1_234_567), "1.2 MB");
  assert.equal(formatMB(250_000_000), "250 MB");
  assert.equal(describeProgress({ phase: "download", bytesDone: 2e6, bytesTotal: 8e6, mbPerSecond: 1.5, etaSeconds: 4 }),
               "Downloading weights · 2.0 MB / 8.0 MB · 25 % · 1.5 MB/s · 4 s left");
  assert.equal(describeProgress({ phase: "upload", bytesDone: 8e6, bytesTotal: 8e6, mbPerSecond: 0, etaSeconds: 0 }),
               "Loading into the backend · 8.0 MB / 8.0 MB · 100 %");
  assert.equal(backendNeeds({ backends: ["webgpu", "wasm"], webgpu_features: [] }), "WebGPU or WASM");
  assert.equal(backendNeeds({ backends: ["webgpu", "wasm"], webgpu_features: ["shader-f16"] }), "WebGPU with shader-f16 or WASM");
  assert.equal(backendNeeds({ backends: ["wasm"], webgpu_features: [] }), "WASM");
  assert.equal(titleFrom("  hello\nworld"), "hello");
  assert.equal(titleFrom("x".repeat(60)).length, 48);
});
