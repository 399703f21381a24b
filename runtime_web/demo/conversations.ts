// Conversations in IndexedDB, on this device only (database "kiln-demo", store "conversations").

export interface ChatStats {
  prefillTokensPerS: number | null;
  decodeTokensPerS: number | null;
  completionTokens: number;
  backend: string;
}

export interface StoredMessage {
  role: "user" | "assistant";
  content: string;
  /** Assistant replies: how fast they were made, and whether Stop cut them short. */
  stats?: ChatStats;
  stopped?: boolean;
}

export interface Conversation {
  id: string;
  title: string;
  modelId: string;
  system: string;
  created: number;
  updated: number;
  messages: StoredMessage[];
}

export const DB_NAME = "kiln-demo";
const STORE = "conversations";

let opening: Promise<IDBDatabase> | null = null;

function db(): Promise<IDBDatabase> {
  opening ??= new Promise<IDBDatabase>((resolve, reject) => {
    const req = indexedDB.open(DB_NAME, 1);
    req.onupgradeneeded = () => {
      const store = req.result.createObjectStore(STORE, { keyPath: "id" });
      store.createIndex("updated", "updated");
    };
    req.onsuccess = () => {
      const database = req.result;
      // Another tab deleting the database (Clear all data) must not be blocked by this one.
      database.onversionchange = () => { database.close(); opening = null; };
      resolve(database);
    };
    req.onerror = () => { opening = null; reject(req.error); };
  });
  return opening;
}

function run<T>(mode: IDBTransactionMode, op: (store: IDBObjectStore) => IDBRequest<T>): Promise<T> {
  return db().then((database) => new Promise<T>((resolve, reject) => {
    const tx = database.transaction(STORE, mode);
    const req = op(tx.objectStore(STORE));
    tx.oncomplete = () => resolve(req.result);
    tx.onerror = () => reject(tx.error ?? req.error);
    tx.onabort = () => reject(tx.error ?? new Error("IndexedDB transaction aborted"));
  }));
}

export function newConversation(modelId: string, system: string): Conversation {
  const now = Date.now();
  const id = `${now.toString(36)}-${crypto.getRandomValues(new Uint32Array(1))[0].toString(36)}`;
  return { id, title: "New chat", modelId, system, created: now, updated: now, messages: [] };
}

/** All conversations, most recently updated first. */
export async function listConversations(): Promise<Conversation[]> {
  const all = await run<Conversation[]>("readonly", (s) => s.getAll() as IDBRequest<Conversation[]>);
  return all.sort((a, b) => b.updated - a.updated);
}

export function getConversation(id: string): Promise<Conversation | undefined> {
  return run<Conversation | undefined>("readonly", (s) => s.get(id) as IDBRequest<Conversation | undefined>);
}

export async function saveConversation(c: Conversation): Promise<void> {
  await run("readwrite", (s) => s.put(c));
}

export async function deleteConversation(id: string): Promise<void> {
  await run("readwrite", (s) => s.delete(id));
}

/** Deletes the whole database (closing this page's connection first so it is not blocked). */
export async function deleteAllConversations(): Promise<void> {
  if (opening) {
    const database = await opening.catch(() => null);
    database?.close();
    opening = null;
  }
  await new Promise<void>((resolve, reject) => {
    const req = indexedDB.deleteDatabase(DB_NAME);
    req.onsuccess = () => resolve();
    req.onerror = () => reject(req.error);
    req.onblocked = () => resolve(); // finishes once other tabs close theirs (they do on versionchange)
  });
}
