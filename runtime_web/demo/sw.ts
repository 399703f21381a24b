// The site's service worker: keeps the app working offline.
// - install: caches the app shell (page, script, styles, runtime, models.json);
// - every other same-origin GET (bundle json, tokenizer, .wasm libraries): network first, so a
//   rebuilt site is picked up at once, and the cached copy when the network fails;
// - requests made with `cache: "no-store"` pass straight through: that is how the loader fetches
//   weight shards it keeps in its own Cache API store ("kiln-shards"), and they must not be
//   stored a second time here.
// The service worker global scope, as far as this file uses it (the type check uses the DOM
// library, which has no ServiceWorkerGlobalScope).
interface ExtendableEventLike {
  waitUntil(promise: Promise<unknown>): void;
}
interface FetchEventLike extends ExtendableEventLike {
  readonly request: Request;
  respondWith(response: Promise<Response>): void;
}
interface ServiceWorkerScope {
  readonly registration: { readonly scope: string };
  readonly location: { readonly origin: string };
  readonly clients: { claim(): Promise<void> };
  skipWaiting(): Promise<void>;
  addEventListener(type: "install" | "activate", listener: (event: ExtendableEventLike) => void): void;
  addEventListener(type: "fetch", listener: (event: FetchEventLike) => void): void;
}

const sw = globalThis as unknown as ServiceWorkerScope;

const CACHE = "kiln-site-v1";
const SHELL = ["./", "index.html", "app.css", "app.mjs", "kiln.mjs", "kiln-worker.mjs", "kiln-thread.mjs", "models.json"];

sw.addEventListener("install", (event) => {
  event.waitUntil((async () => {
    const cache = await caches.open(CACHE);
    await cache.addAll(SHELL.map((path) => new Request(new URL(path, sw.registration.scope), { cache: "reload" })));
    await sw.skipWaiting();
  })());
});

sw.addEventListener("activate", (event) => {
  event.waitUntil((async () => {
    // Older versions of this cache only; the loader's shard store is not ours to delete.
    for (const name of await caches.keys()) {
      if (name.startsWith("kiln-site-") && name !== CACHE) await caches.delete(name);
    }
    await sw.clients.claim(); // control the page that registered us, so its first load is cached
  })());
});

async function networkFirst(event: ExtendableEventLike, request: Request): Promise<Response> {
  const cache = await caches.open(CACHE);
  try {
    const response = await fetch(request);
    if (response.status === 200 && response.type === "basic") {
      // Stored while the page reads the body, not before: a large .wasm is not delayed.
      event.waitUntil(cache.put(request, response.clone()).catch(() => {}));
    }
    return response;
  } catch (err) {
    const cached = await cache.match(request) ??
      (request.mode === "navigate" ? await cache.match(new URL("./", sw.registration.scope).href) : undefined);
    if (cached) return cached;
    throw err;
  }
}

sw.addEventListener("fetch", (event) => {
  const request: Request = event.request;
  if (request.method !== "GET" || request.cache === "no-store" || request.headers.has("range")) return;
  if (new URL(request.url).origin !== sw.location.origin) return;
  event.respondWith(networkFirst(event, request));
});
