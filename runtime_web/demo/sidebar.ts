// The sidebar's list of saved conversations: open one, or delete it.

import type { Conversation } from "./conversations";

export interface SidebarActions {
  open(id: string): void;
  remove(id: string): void;
}

export function renderConversationList(list: HTMLElement, conversations: Conversation[], currentId: string | null,
                                       actions: SidebarActions): void {
  const items = conversations.map((c) => {
    const li = document.createElement("li");
    li.dataset.id = c.id;
    const open = document.createElement("button");
    open.type = "button";
    open.className = "open-conversation";
    open.textContent = c.title;
    open.title = `${c.title} (${new Date(c.updated).toLocaleString()})`;
    if (c.id === currentId) open.setAttribute("aria-current", "true");
    open.addEventListener("click", () => actions.open(c.id));
    const del = document.createElement("button");
    del.type = "button";
    del.className = "delete-conversation";
    del.textContent = "×";
    del.setAttribute("aria-label", `Delete conversation: ${c.title}`);
    del.addEventListener("click", () => actions.remove(c.id));
    li.append(open, del);
    return li;
  });
  if (items.length === 0) {
    const li = document.createElement("li");
    li.className = "none";
    li.textContent = "No saved conversations yet.";
    items.push(li);
  }
  list.replaceChildren(...items);
}
