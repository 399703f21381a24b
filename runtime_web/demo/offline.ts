// Registers the service worker (sw.ts) that keeps the app and the model usable offline.

/**
 * Registers ./sw.js and resolves once it controls this page (at most `waitMs` later), so that the
 * files of the first model load already go through it and are cached. Resolves false where
 * service workers are unavailable (an insecure origin, a private window that refuses them).
 */
export async function startOffline(waitMs = 3000): Promise<boolean> {
  const sw = navigator.serviceWorker;
  if (!sw) return false;
  try {
    await sw.register(new URL("./sw.js", import.meta.url));
  } catch {
    return false;
  }
  if (sw.controller) return true;
  return new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(false), waitMs);
    sw.addEventListener("controllerchange", () => { clearTimeout(timer); resolve(true); }, { once: true });
  });
}
