// The message list: user messages as plain text, replies as escaped Markdown, a stats line under
// each reply. Re-renders a streaming reply at most once per animation frame.

import type { StoredMessage } from "./conversations";
import { backendLabel, formatRate } from "./format";
import { renderMarkdown } from "./markdown";

export interface MessageView {
  /** Show new text for a streaming reply (rendered on the next animation frame). */
  update(text: string): void;
  /** Final text, stats and stopped flag. */
  finish(message: StoredMessage): void;
  remove(): void;
}

export class ChatView {
  constructor(private readonly list: HTMLElement, private readonly scroller: HTMLElement) {}

  clear(): void {
    this.list.replaceChildren();
  }

  /** Render a whole conversation, e.g. one reopened from the sidebar. */
  show(messages: StoredMessage[]): void {
    this.clear();
    for (const m of messages) this.append(m).finish(m);
    this.scrollToEnd(true);
  }

  showEmpty(text: string): void {
    const p = document.createElement("p");
    p.className = "empty";
    p.textContent = text;
    this.list.replaceChildren(p);
  }

  append(message: StoredMessage, pending = false): MessageView {
    this.list.querySelector(".empty")?.remove();
    const article = document.createElement("article");
    article.className = `message ${message.role}`;
    const who = document.createElement("h3");
    who.className = "who";
    who.textContent = message.role === "user" ? "You" : "Assistant";
    const body = document.createElement("div");
    body.className = "body";
    const meta = document.createElement("p");
    meta.className = "meta";
    article.append(who, body, meta);
    if (pending) article.classList.add("streaming");
    article.setAttribute("aria-busy", String(pending));
    this.list.append(article);

    const render = (text: string) => {
      if (message.role === "user") body.textContent = text; // shown as typed (CSS keeps line breaks)
      else body.replaceChildren(renderMarkdown(text));
    };
    render(message.content);
    let frame = 0;
    let latest = message.content;
    return {
      update: (text: string) => {
        latest = text;
        if (frame) return;
        frame = requestAnimationFrame(() => {
          frame = 0;
          const stick = this.nearEnd();
          render(latest);
          if (stick) this.scrollToEnd();
        });
      },
      finish: (m: StoredMessage) => {
        if (frame) cancelAnimationFrame(frame);
        frame = 0;
        const stick = this.nearEnd();
        render(m.content);
        article.classList.remove("streaming");
        article.setAttribute("aria-busy", "false");
        meta.textContent = statsLine(m);
        if (stick) this.scrollToEnd();
      },
      remove: () => {
        if (frame) cancelAnimationFrame(frame);
        article.remove();
      },
    };
  }

  /** Follow the reply only when the reader is already at the bottom (not while they scroll up). */
  private nearEnd(): boolean {
    const s = this.scroller;
    return s.scrollHeight - s.scrollTop - s.clientHeight < 80;
  }

  scrollToEnd(force = false): void {
    if (force || this.nearEnd()) this.scroller.scrollTop = this.scroller.scrollHeight;
  }
}

/** "WASM · prefill 512 tok/s · decode 48.2 tok/s · 64 tokens · stopped" */
export function statsLine(m: StoredMessage): string {
  const parts: string[] = [];
  if (m.stats) {
    parts.push(backendLabel(m.stats.backend));
    parts.push(`prefill ${formatRate(m.stats.prefillTokensPerS)} tok/s`);
    parts.push(`decode ${formatRate(m.stats.decodeTokensPerS)} tok/s`);
    parts.push(`${m.stats.completionTokens} tokens`);
  }
  if (m.stopped) parts.push("stopped");
  return parts.join(" · ");
}
