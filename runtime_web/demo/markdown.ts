// Markdown for model replies, escaped by construction: the text is parsed into a small tree and
// rendered with createElement (from a fixed list of tags, no attributes but a code block's
// class) and createTextNode. Nothing the model writes is ever parsed as HTML, so `<img onerror>`
// shows up as those characters. Supported: paragraphs, line breaks, # headings, > quotes,
// - / * / + and 1. lists, ``` fenced code (an unclosed fence runs to the end, as while
// streaming), `code`, **bold** / __bold__, *italic* / _italic_. No links or images: a reply
// cannot make the page fetch anything.

export type Inline =
  | { type: "text"; text: string }
  | { type: "code"; text: string }
  | { type: "strong" | "em"; children: Inline[] }
  | { type: "br" };

export type Block =
  | { type: "p"; lines: string[] }
  | { type: "heading"; level: number; text: string }
  | { type: "code"; lang: string; text: string }
  | { type: "list"; ordered: boolean; start: number; items: string[] }
  | { type: "quote"; blocks: Block[] };

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)/;
const HEADING = /^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
const BULLET = /^ {0,3}[-*+]\s+(.*)$/;
const ORDERED = /^ {0,3}(\d{1,9})[.)]\s+(.*)$/;
const QUOTE = /^ {0,3}>\s?(.*)$/;

/** Splits text into blocks. Pure: no DOM, so node:test checks it; the rendering is checked in
 * Chromium (tests/test_demo_site.py). */
export function parseBlocks(text: string): Block[] {
  const lines = text.replace(/\r\n?/g, "\n").split("\n");
  const blocks: Block[] = [];
  let i = 0;
  const startsBlock = (line: string) =>
    FENCE.test(line) || HEADING.test(line) || BULLET.test(line) || ORDERED.test(line) || QUOTE.test(line);
  while (i < lines.length) {
    const line = lines[i];
    if (line.trim() === "") { i++; continue; }
    const fence = FENCE.exec(line);
    if (fence) {
      const marker = fence[1];
      const body: string[] = [];
      i++;
      // The closing fence is the same character, at least as long; missing means "still streaming".
      while (i < lines.length && !(lines[i].trim().startsWith(marker) && lines[i].trim().replace(/[`~]/g, "") === "")) {
        body.push(lines[i]);
        i++;
      }
      i++;
      blocks.push({ type: "code", lang: fence[2], text: body.join("\n") });
      continue;
    }
    const heading = HEADING.exec(line);
    if (heading) {
      blocks.push({ type: "heading", level: heading[1].length, text: heading[2] });
      i++;
      continue;
    }
    if (QUOTE.test(line)) {
      const inner: string[] = [];
      while (i < lines.length && QUOTE.test(lines[i])) inner.push(QUOTE.exec(lines[i++])![1]);
      blocks.push({ type: "quote", blocks: parseBlocks(inner.join("\n")) });
      continue;
    }
    const bullet = BULLET.exec(line);
    const ordered = ORDERED.exec(line);
    if (bullet || ordered) {
      const pattern = bullet ? BULLET : ORDERED;
      const items: string[] = [];
      while (i < lines.length) {
        const m = pattern.exec(lines[i]);
        if (m) {
          items.push(bullet ? m[1] : m[2]);
        } else if (lines[i].trim() !== "" && /^\s+/.test(lines[i]) && items.length) {
          items[items.length - 1] += "\n" + lines[i].trim(); // an indented continuation line
        } else {
          break;
        }
        i++;
      }
      blocks.push({ type: "list", ordered: !bullet, start: ordered ? Number(ordered[1]) : 1, items });
      continue;
    }
    const para: string[] = [];
    while (i < lines.length && lines[i].trim() !== "" && (para.length === 0 || !startsBlock(lines[i]))) {
      para.push(lines[i].trim());
      i++;
    }
    blocks.push({ type: "p", lines: para });
  }
  return blocks;
}

/** Parses emphasis and code spans; newlines become line breaks. Unmatched markers stay text. */
export function parseInline(text: string): Inline[] {
  const out: Inline[] = [];
  let plain = "";
  const flush = () => {
    if (plain) out.push({ type: "text", text: plain });
    plain = "";
  };
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    if (c === "\\" && i + 1 < text.length && /[\\`*_#>\-+.!\[\]()~]/.test(text[i + 1])) {
      plain += text[i + 1];
      i += 2;
      continue;
    }
    if (c === "\n") {
      flush();
      out.push({ type: "br" });
      i++;
      continue;
    }
    if (c === "`") {
      let ticks = 1;
      while (text[i + ticks] === "`") ticks++;
      const marker = "`".repeat(ticks);
      const end = text.indexOf(marker, i + ticks);
      if (end > i + ticks) {
        flush();
        out.push({ type: "code", text: text.slice(i + ticks, end).replace(/\n/g, " ").trim() || " " });
        i = end + ticks;
        continue;
      }
      plain += marker;
      i += ticks;
      continue;
    }
    if (c === "*" || c === "_") {
      const double = text[i + 1] === c;
      const marker = double ? c + c : c;
      const close = findClose(text, i + marker.length, marker);
      // A marker must hug its text ("* not emphasis *"), and _ inside words (snake_case) is text.
      const opens = close > 0 && !/\s/.test(text[i + marker.length] ?? " ") &&
        !(c === "_" && /\w/.test(text[i - 1] ?? ""));
      if (opens) {
        flush();
        out.push({ type: double ? "strong" : "em", children: parseInline(text.slice(i + marker.length, close)) });
        i = close + marker.length;
        continue;
      }
      plain += marker;
      i += marker.length;
      continue;
    }
    plain += c;
    i++;
  }
  flush();
  return out;
}

/** Index of the marker closing an emphasis opened before `from`, or -1. */
function findClose(text: string, from: number, marker: string): number {
  let j = from;
  while (j < text.length) {
    if (text[j] === "\\") { j += 2; continue; }
    if (text[j] === "`") { // a code span inside emphasis: skip over it
      const end = text.indexOf("`", j + 1);
      if (end < 0) return -1;
      j = end + 1;
      continue;
    }
    if (text.startsWith(marker, j) && j > from && !/\s/.test(text[j - 1])) {
      const single = marker.length === 1;
      // For *x*, do not stop at the first star of a **: it belongs to a nested strong.
      if (single && text[j + 1] === marker) {
        const inner = findClose(text, j + 2, marker + marker);
        if (inner > 0) { j = inner + 2; continue; }
      }
      if (marker === "_" && /\w/.test(text[j + 1] ?? "")) { j++; continue; }
      return j;
    }
    j++;
  }
  return -1;
}

function renderInline(doc: Document, parent: Node, nodes: Inline[]): void {
  for (const node of nodes) {
    if (node.type === "text") parent.appendChild(doc.createTextNode(node.text));
    else if (node.type === "br") parent.appendChild(doc.createElement("br"));
    else if (node.type === "code") {
      const code = doc.createElement("code");
      code.textContent = node.text;
      parent.appendChild(code);
    } else {
      const el = doc.createElement(node.type);
      renderInline(doc, el, node.children);
      parent.appendChild(el);
    }
  }
}

function renderBlocks(doc: Document, parent: Node, blocks: Block[]): void {
  for (const block of blocks) {
    let el: HTMLElement;
    switch (block.type) {
      case "p":
        el = doc.createElement("p");
        renderInline(doc, el, parseInline(block.lines.join("\n")));
        break;
      case "heading":
        // Headings in a reply sit below the page's own h1/h2: h3..h6.
        el = doc.createElement(`h${Math.min(6, block.level + 2)}`);
        renderInline(doc, el, parseInline(block.text));
        break;
      case "code": {
        el = doc.createElement("pre");
        const code = doc.createElement("code");
        if (/^[A-Za-z0-9_+-]{1,30}$/.test(block.lang)) code.className = `language-${block.lang}`;
        code.textContent = block.text;
        el.appendChild(code);
        break;
      }
      case "list":
        el = doc.createElement(block.ordered ? "ol" : "ul");
        if (block.ordered && block.start !== 1) (el as HTMLOListElement).start = block.start;
        for (const item of block.items) {
          const li = doc.createElement("li");
          renderInline(doc, li, parseInline(item));
          el.appendChild(li);
        }
        break;
      case "quote":
        el = doc.createElement("blockquote");
        renderBlocks(doc, el, block.blocks);
        break;
    }
    parent.appendChild(el);
  }
}

/** Model text -> a DocumentFragment of p/h3-h6/pre/code/ul/ol/li/blockquote/strong/em/br and text. */
export function renderMarkdown(text: string, doc: Document = document): DocumentFragment {
  const fragment = doc.createDocumentFragment();
  renderBlocks(doc, fragment, parseBlocks(text));
  return fragment;
}
