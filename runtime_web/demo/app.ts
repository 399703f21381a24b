// kiln's demo chat app: pick a model from models.json, load it into a Web Worker, chat with
// streaming replies; conversations in IndexedDB; works offline once loaded (sw.ts).
// Longer than 400 lines: the page's event wiring; views, storage and formatting are their own files.

import { ChatView } from "./chat_view";
import {
  Conversation, StoredMessage, deleteConversation, getConversation, listConversations, newConversation,
  saveConversation,
} from "./conversations";
import { SiteModel, backendLabel, describeModel, formatDuration, formatMB, describeProgress, percent, titleFrom } from "./format";
import type { ChatCompletionChunk, ChatCompletionRequest, ChatMessageParam, LoadProgress } from "./kiln.mjs";
import { ModelHost } from "./model_host";
import { startOffline } from "./offline";
import { DEFAULTS, Settings, loadSettings, sanitize, saveSettings } from "./settings";
import { renderConversationList } from "./sidebar";
import { clearAllData } from "./storage";

const byId = <T extends HTMLElement = HTMLElement>(id: string): T => {
  const found = document.getElementById(id);
  if (!found) throw new Error(`index.html has no #${id}`);
  return found as T;
};

const ui = {
  newChat: byId<HTMLButtonElement>("new-chat"),
  conversationList: byId("conversation-list"),
  clearData: byId<HTMLButtonElement>("clear-data"),
  backendBadge: byId("backend-badge"),
  settingsToggle: byId<HTMLButtonElement>("settings-toggle"),
  loadForm: byId<HTMLFormElement>("load-form"),
  modelSelect: byId<HTMLSelectElement>("model-select"),
  backendSelect: byId<HTMLSelectElement>("backend-select"),
  loadButton: byId<HTMLButtonElement>("load-button"),
  modelInfo: byId("model-info"),
  demoWarning: byId("demo-warning"),
  progressArea: byId("progress-area"),
  progress: byId<HTMLProgressElement>("load-progress"),
  progressText: byId("progress-text"),
  cancelLoad: byId<HTMLButtonElement>("cancel-load"),
  modelStatus: byId("model-status"),
  settings: byId("settings"),
  settingsClose: byId<HTMLButtonElement>("settings-close"),
  system: byId<HTMLTextAreaElement>("system-prompt"),
  temperature: byId<HTMLInputElement>("temperature"),
  topP: byId<HTMLInputElement>("top-p"),
  maxTokens: byId<HTMLInputElement>("max-tokens"),
  scroller: byId("scroller"),
  messages: byId("messages"),
  error: byId("error"),
  composer: byId<HTMLFormElement>("composer"),
  prompt: byId<HTMLTextAreaElement>("prompt"),
  send: byId<HTMLButtonElement>("send"),
  stop: byId<HTMLButtonElement>("stop"),
  regenerate: byId<HTMLButtonElement>("regenerate"),
  clearDialog: byId<HTMLDialogElement>("clear-dialog"),
  clearCancel: byId<HTMLButtonElement>("clear-cancel"),
  clearConfirm: byId<HTMLButtonElement>("clear-confirm"),
};

const EMPTY_TEXT = "Load a model, then type a message. Everything runs on this device.";
const chat = new ChatView(ui.messages, ui.scroller);
const host = new ModelHost();
const offlineReady = startOffline();
let settings: Settings = loadSettings();
let models: SiteModel[] = [];
let conversation: Conversation = newConversation("", settings.system);
let loading: AbortController | null = null;
/** Settles when the load in progress has ended, whichever way. */
let loadTask: Promise<void> = Promise.resolve();
/** The reply being generated: its abort controller and a promise that settles when it ends. */
let generating: { controller: AbortController; done: Promise<void> } | null = null;

// ---------------------------------------------------------------------------------------------
// small helpers

function showError(message: string | null): void {
  ui.error.textContent = message ?? "";
  ui.error.hidden = !message;
}

/** What the app reads of a thrown value (a kiln error, another Error, or anything). */
type Thrown = { message?: unknown; name?: unknown; code?: unknown } | null | undefined;

function errorText(err: unknown): string {
  const e = err as Thrown;
  return e?.message ? String(e.message) : String(err);
}

const isAbort = (err: unknown) => (err as Thrown)?.name === "AbortError" || (err as Thrown)?.code === "aborted";

function updateControls(): void {
  const ready = host.current !== null;
  ui.send.disabled = !ready || generating !== null;
  ui.stop.hidden = generating === null;
  ui.regenerate.disabled = !ready || generating !== null || conversation.messages.length === 0;
  ui.loadButton.disabled = loading !== null || models.length === 0;
  ui.cancelLoad.hidden = loading === null;
  ui.backendBadge.hidden = !ready;
  if (host.current) {
    const { backend, engine } = host.current;
    ui.backendBadge.textContent = backendLabel(backend, engine.threads);
    ui.backendBadge.title = `The model runs on ${backendLabel(backend, engine.threads)}`
      + (engine.threadsReason ? ` (1 thread: ${engine.threadsReason})` : "");
  }
}

// ---------------------------------------------------------------------------------------------
// models

function selectedModel(): SiteModel | undefined {
  return models.find((m) => m.id === ui.modelSelect.value);
}

function showModelInfo(): void {
  const model = selectedModel();
  ui.modelInfo.textContent = model ? describeModel(model) : "";
  ui.demoWarning.hidden = !model?.demo;
}

async function loadModelList(): Promise<void> {
  try {
    const response = await fetch("models.json");
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const data = await response.json();
    models = Array.isArray(data?.models) ? data.models : [];
  } catch (err) {
    showError(`Could not read the list of models (models.json): ${errorText(err)}. Is this a folder made by kiln site?`);
    models = [];
  }
  ui.modelSelect.replaceChildren(...models.map((m) => {
    const option = document.createElement("option");
    option.value = m.id;
    option.textContent = `${m.name} · ${formatMB(m.bytes)}${m.demo ? " (pipeline demo, random weights)" : ""}`;
    return option;
  }));
  if (models.some((m) => m.id === settings.modelId)) ui.modelSelect.value = settings.modelId;
  if (models.length === 0) ui.modelStatus.textContent = "This site has no models.";
  showModelInfo();
  updateControls();
}

let lastProgress: LoadProgress | null = null;

function showProgress(p: LoadProgress): void {
  lastProgress = p;
  ui.progress.value = percent(p);
  ui.progressText.textContent = describeProgress(p);
}

async function loadModel(): Promise<void> {
  const model = selectedModel();
  if (!model || loading) return;
  await stopGenerating();
  const controller = new AbortController();
  loading = controller;
  showError(null);
  ui.progressArea.hidden = false;
  ui.progress.value = 0;
  ui.progressText.textContent = "Starting…";
  ui.modelStatus.textContent = `Loading ${model.name}…`;
  updateControls();
  try {
    await offlineReady; // the first load's files should go through the service worker's cache
    const backend = ui.backendSelect.value as Settings["backend"];
    const started = performance.now();
    lastProgress = null;
    const loaded = await host.load(model, backend, showProgress, controller.signal);
    ui.progress.value = 100;
    const last = lastProgress as LoadProgress | null; // showProgress set it meanwhile
    ui.progressText.textContent = `Loaded ${formatMB(last?.bytesTotal ?? 0)} of weights · 100 % · ` +
      `${formatDuration((performance.now() - started) / 1000)}`;
    settings = { ...settings, modelId: model.id, backend };
    saveSettings(settings);
    ui.modelStatus.textContent = `Ready: ${model.name} on ${backendLabel(loaded.backend, loaded.engine.threads)}${model.demo ? " (pipeline demo, random weights)" : ""}.`;
    ui.prompt.focus();
  } catch (err) {
    ui.progressArea.hidden = true;
    if (isAbort(err)) {
      ui.modelStatus.textContent = "Loading cancelled.";
    } else {
      ui.modelStatus.textContent = "";
      showError(`Could not load ${model.name}: ${errorText(err)}`);
    }
  } finally {
    if (loading === controller) loading = null;
    updateControls();
  }
}

// ---------------------------------------------------------------------------------------------
// conversations

async function refreshConversations(): Promise<void> {
  try {
    renderConversationList(ui.conversationList, await listConversations(), conversation.id,
                           { open: (id) => void openConversation(id), remove: (id) => void removeConversation(id) });
  } catch (err) {
    showError(`Could not read saved conversations: ${errorText(err)}`);
  }
}

async function persist(): Promise<void> {
  conversation.updated = Date.now();
  try {
    await saveConversation(conversation);
  } catch (err) {
    showError(`Could not save the conversation: ${errorText(err)}`);
  }
  await refreshConversations();
}

async function resetEngineChat(): Promise<void> {
  try {
    await host.current?.engine.resetChat();
  } catch {
    // an engine that fails here fails the next request with a clear error
  }
}

async function startNewChat(): Promise<void> {
  await stopGenerating();
  conversation = newConversation(host.current?.model.id ?? "", settings.system);
  chat.showEmpty(EMPTY_TEXT);
  showError(null);
  await resetEngineChat();
  await refreshConversations();
  updateControls();
  ui.prompt.focus();
}

async function openConversation(id: string): Promise<void> {
  await stopGenerating();
  const found = await getConversation(id).catch(() => undefined);
  if (!found) {
    await refreshConversations();
    return;
  }
  conversation = found;
  chat.show(conversation.messages);
  if (!conversation.messages.length) chat.showEmpty(EMPTY_TEXT);
  showError(null);
  await resetEngineChat();
  await refreshConversations();
  updateControls();
}

async function removeConversation(id: string): Promise<void> {
  if (id === conversation.id) await stopGenerating();
  await deleteConversation(id).catch((err) => showError(`Could not delete: ${errorText(err)}`));
  if (id === conversation.id) await startNewChat();
  else await refreshConversations();
}

// ---------------------------------------------------------------------------------------------
// chat

function requestBody(withMaxTokens: boolean): ChatCompletionRequest & { stream: true } {
  const system = settings.system.trim();
  const messages: ChatMessageParam[] = [...(system ? [{ role: "system" as const, content: system }] : []),
                    ...conversation.messages.map(({ role, content }) => ({ role, content }))];
  return { messages, stream: true, temperature: settings.temperature, top_p: settings.top_p,
           ...(withMaxTokens ? { max_tokens: settings.max_tokens } : {}) };
}

/** Generate the assistant's reply to the conversation as it stands, streaming it into the view. */
async function generateReply(): Promise<void> {
  const loaded = host.current;
  if (!loaded || generating) return;
  const controller = new AbortController();
  let finished!: () => void;
  generating = { controller, done: new Promise<void>((r) => { finished = r; }) };
  updateControls();
  showError(null);
  const reply: StoredMessage = { role: "assistant", content: "" };
  const view = chat.append(reply, true);
  chat.scrollToEnd(true);
  let failure: unknown = null;
  try {
    const create = (body: ChatCompletionRequest & { stream: true }) =>
      loaded.engine.chat.completions.create(body, { signal: controller.signal });
    let stream: AsyncIterable<ChatCompletionChunk>;
    try {
      stream = await create(requestBody(true));
    } catch (err) {
      // max_tokens does not fit next to the prompt: let the reply use the room the window has left.
      if ((err as Thrown)?.code !== "context_window_exceeded" || !/max_tokens/.test(errorText(err))) throw err;
      stream = await create(requestBody(false));
    }
    for await (const chunk of stream) {
      const delta = chunk?.choices?.[0]?.delta?.content;
      if (delta) {
        reply.content += delta;
        view.update(reply.content);
      }
      if (chunk?.usage) {
        reply.stats = { backend: loaded.backend, completionTokens: chunk.usage.completion_tokens,
                        prefillTokensPerS: chunk.usage.extra?.prefill_tokens_per_s ?? null,
                        decodeTokensPerS: chunk.usage.extra?.decode_tokens_per_s ?? null };
      }
    }
  } catch (err) {
    if (isAbort(err)) reply.stopped = true;
    else failure = err;
  }
  if (failure !== null) {
    showError(errorText(failure));
    if (!reply.content) view.remove();
  }
  if (reply.content || reply.stopped) {
    view.finish(reply);
    conversation.messages.push(reply);
  }
  generating = null;
  finished();
  updateControls();
  if (conversation.messages.length) await persist();
}

async function send(text: string): Promise<void> {
  if (!text.trim() || generating) return;
  if (!host.current) {
    showError("Load a model first.");
    return;
  }
  const message: StoredMessage = { role: "user", content: text };
  if (conversation.messages.length === 0) {
    conversation.title = titleFrom(text);
    conversation.created = Date.now();
  }
  conversation.modelId = host.current.model.id;
  conversation.system = settings.system;
  conversation.messages.push(message);
  chat.append(message).finish(message);
  chat.scrollToEnd(true);
  ui.prompt.value = "";
  await generateReply();
}

async function regenerate(): Promise<void> {
  if (!host.current || generating || conversation.messages.length === 0) return;
  if (conversation.messages[conversation.messages.length - 1].role === "assistant") {
    conversation.messages.pop();
    chat.show(conversation.messages);
  }
  await generateReply();
}

/** Stop the reply being generated, and wait until it has ended (its partial text is kept). */
async function stopGenerating(): Promise<void> {
  const current = generating;
  if (!current) return;
  current.controller.abort();
  await current.done;
}

// ---------------------------------------------------------------------------------------------
// settings and clearing

function showSettings(): void {
  ui.system.value = settings.system;
  ui.temperature.value = String(settings.temperature);
  ui.topP.value = String(settings.top_p);
  ui.maxTokens.value = String(settings.max_tokens);
  ui.backendSelect.value = settings.backend;
}

function readSettings(): void {
  settings = sanitize({ ...settings, system: ui.system.value, temperature: ui.temperature.valueAsNumber,
                        top_p: ui.topP.valueAsNumber, max_tokens: ui.maxTokens.valueAsNumber });
  saveSettings(settings);
}

async function clearEverything(): Promise<void> {
  // The load must end before its worker goes: a terminated worker never answers the abort.
  loading?.abort();
  await loadTask;
  await stopGenerating();
  await host.unload();
  ui.progressArea.hidden = true;
  try {
    await clearAllData();
    ui.modelStatus.textContent = "All data deleted: the model files, conversations and settings.";
  } catch (err) {
    showError(errorText(err));
  }
  settings = { ...DEFAULTS };
  showSettings();
  conversation = newConversation("", settings.system);
  chat.showEmpty(EMPTY_TEXT);
  // Listing would open (and so re-create) the database just deleted: the list is empty anyway.
  renderConversationList(ui.conversationList, [], null, { open: () => undefined, remove: () => undefined });
  updateControls();
}

// ---------------------------------------------------------------------------------------------
// wiring

ui.loadForm.addEventListener("submit", (e) => {
  e.preventDefault();
  if (!loading) loadTask = loadModel();
});
ui.modelSelect.addEventListener("change", showModelInfo);
ui.cancelLoad.addEventListener("click", () => loading?.abort());
ui.composer.addEventListener("submit", (e) => { e.preventDefault(); void send(ui.prompt.value); });
ui.prompt.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    void send(ui.prompt.value);
  }
});
document.addEventListener("keydown", (e) => {
  if (e.key !== "Escape" || ui.clearDialog.open) return;
  if (generating) {
    e.preventDefault();
    void stopGenerating();
  } else if (!ui.settings.hidden) {
    toggleSettings(false);
  }
});
ui.stop.addEventListener("click", () => void stopGenerating());
ui.regenerate.addEventListener("click", () => void regenerate());
ui.newChat.addEventListener("click", () => void startNewChat());
function toggleSettings(open: boolean): void {
  ui.settings.hidden = !open;
  ui.settingsToggle.setAttribute("aria-expanded", String(open));
  if (open) ui.system.focus();
  else ui.settingsToggle.focus();
}
ui.settingsToggle.addEventListener("click", () => toggleSettings(Boolean(ui.settings.hidden)));
ui.settingsClose.addEventListener("click", () => toggleSettings(false));
for (const input of [ui.system, ui.temperature, ui.topP, ui.maxTokens]) input.addEventListener("input", readSettings);
ui.clearData.addEventListener("click", () => ui.clearDialog.showModal());
ui.clearCancel.addEventListener("click", () => ui.clearDialog.close());
ui.clearConfirm.addEventListener("click", () => {
  ui.clearDialog.close();
  void clearEverything();
});
window.addEventListener("unhandledrejection", (e) => showError(errorText(e.reason)));

byId("boot-hint").hidden = true; // the script runs: the page is served properly
showSettings();
chat.showEmpty(EMPTY_TEXT);
updateControls();
void refreshConversations();
void loadModelList();
