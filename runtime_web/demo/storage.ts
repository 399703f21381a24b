// "Clear all data": everything this site keeps on the device.

import { clearShardCache } from "./kiln.mjs";
import { deleteAllConversations } from "./conversations";
import { SETTINGS_KEY } from "./settings";

/**
 * Deletes the weight shards (Cache API and OPFS stores of the loader), every other Cache API cache
 * of this origin (the service worker's copy of the app, bundle files and libraries), the
 * conversations (IndexedDB) and the settings. The service worker stays registered: the next
 * visit online caches the app again.
 */
export async function clearAllData(): Promise<void> {
  const steps: Promise<unknown>[] = [
    clearShardCache("cache-api"),
    clearShardCache("opfs"),
    deleteAllConversations(),
  ];
  if (globalThis.caches) steps.push(caches.keys().then((names) => Promise.all(names.map((n) => caches.delete(n)))));
  const results = await Promise.allSettled(steps);
  try {
    localStorage.removeItem(SETTINGS_KEY);
  } catch {
    // no localStorage here: nothing stored there either
  }
  const failed = results.filter((r): r is PromiseRejectedResult => r.status === "rejected");
  if (failed.length) throw new Error(`some data could not be deleted: ${failed.map((f) => String(f.reason?.message ?? f.reason)).join("; ")}`);
}

/** How much this origin stores, when the browser says (navigator.storage.estimate). */
export async function storageUsage(): Promise<number | null> {
  try {
    const estimate = await navigator.storage?.estimate?.();
    return estimate?.usage ?? null;
  } catch {
    return null;
  }
}
