// The loader's HTTP side: GET a bundle file whole, chunk by chunk, with a stall watchdog, and map
// every network, HTTP, stall and abort failure to a LoadError that names the file and the fix.

import { describe, REBUILD } from "./bundle_validate";
import { LoadError } from "./errors";

/** A request's stall watchdog (see Downloader.watchdog). */
interface Watchdog {
  readonly signal: AbortSignal;
  readonly stalled: boolean;
  alive(): void;
  end(): void;
}

export class Downloader {
  /** Set once shards load: what a retry will not download again (added to stall errors). */
  keptNote: () => string = () => "";

  /**
   * `signal` aborts everything (LoadError "aborted"); a request that receives nothing (headers or
   * body bytes) for `stallMs` is cancelled with LoadError "timeout".
   */
  constructor(private readonly base: URL, private readonly doFetch: typeof fetch,
              private readonly stallMs: number, private readonly signal: AbortSignal | undefined) {}

  /** Throws LoadError "aborted" when the load's signal, or `s` (a part of it), has aborted. */
  throwIfAborted(s: AbortSignal | undefined = this.signal): void {
    if (this.signal?.aborted) throw new LoadError("aborted", "loading the bundle was aborted");
    if (s?.aborted) throw new LoadError("aborted", "cancelled because another shard failed");
  }

  /**
   * A request's stall watchdog: `signal` (for fetch) aborts when `outer` does, or when `alive()`
   * was not called for stallMs. `end()` stops it.
   */
  private watchdog(outer: AbortSignal | undefined): Watchdog {
    const controller = new AbortController();
    const onAbort = () => controller.abort();
    outer?.addEventListener("abort", onAbort);
    if (outer?.aborted) controller.abort();
    let timer: ReturnType<typeof setTimeout> | undefined;
    let stalled = false;
    const stallMs = this.stallMs;
    const alive = () => {
      clearTimeout(timer);
      if (Number.isFinite(stallMs)) timer = setTimeout(() => { stalled = true; controller.abort(); }, stallMs);
    };
    alive();
    return {
      signal: controller.signal,
      alive,
      get stalled() { return stalled; },
      end() { clearTimeout(timer); outer?.removeEventListener("abort", onAbort); },
    };
  }

  private stallError(what: string, url: string): LoadError {
    const kept = this.keptNote();
    return new LoadError("timeout", `${what} from ${url} stalled: nothing arrived for ${this.stallMs / 1000} s; check the network and load the bundle again${kept}, or raise stallTimeoutMs`, { url });
  }

  /** GET `url`; maps network, HTTP, stall and abort failures to LoadErrors. The caller ends `watch`. */
  private async get(url: string, what: string, watch: Watchdog, s: AbortSignal | undefined, init: RequestInit): Promise<Response> {
    let response: Response;
    try {
      response = await this.doFetch(url, { ...init, signal: watch.signal });
    } catch (e) {
      this.throwIfAborted(s);
      if (watch.stalled) throw this.stallError(what, url);
      throw new LoadError("fetch_failed", `could not fetch ${what} from ${url}: ${describe(e)} (network error, CORS, or the server is down)`, { url, cause: e });
    }
    watch.alive();
    if (!response.ok) {
      response.body?.cancel().catch(() => {});
      const hint = response.status === 404 ? `; is ${this.base.href} a kiln bundle folder with all of its files uploaded?` : "";
      throw new LoadError("fetch_failed", `fetching ${what} from ${url} failed: HTTP ${response.status}${response.statusText ? ` ${response.statusText}` : ""}${hint}`,
                          { url, status: response.status });
    }
    return response;
  }

  /**
   * The whole body of a GET of `url`, read chunk by chunk (each chunk feeds the stall watchdog and
   * `onBytes`) into a buffer of `expected` bytes when that is known.
   */
  async download(url: string, what: string, s: AbortSignal | undefined, init: RequestInit = {},
                 expected = 0, onBytes?: (length: number) => void): Promise<Uint8Array> {
    const watch = this.watchdog(s);
    try {
      const response = await this.get(url, what, watch, s, init);
      try {
        if (!response.body) return new Uint8Array(await response.arrayBuffer());
        const reader = response.body.getReader();
        let buffer = new Uint8Array(expected);
        let length = 0;
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          watch.alive();
          if (length + value.byteLength > buffer.byteLength) { // more than expected: grow (a corrupt shard is kept to report)
            const bigger = new Uint8Array(Math.max(buffer.byteLength * 2, length + value.byteLength, 65536));
            bigger.set(buffer.subarray(0, length));
            buffer = bigger;
          }
          buffer.set(value, length);
          length += value.byteLength;
          onBytes?.(length);
        }
        return length === buffer.byteLength ? buffer : buffer.slice(0, length);
      } catch (e) {
        this.throwIfAborted(s);
        if (watch.stalled) throw this.stallError(what, url);
        throw new LoadError("fetch_failed", `downloading ${what} from ${url} broke off: ${describe(e)}`, { url, cause: e });
      }
    } finally {
      watch.end();
    }
  }

  /** A bundle file (relative to the base URL), parsed as JSON; LoadError "bad_bundle" when it is not JSON. */
  async getJson(file: string): Promise<unknown> {
    const url = new URL(file, this.base).href;
    const text = new TextDecoder().decode(await this.download(url, file, this.signal));
    try {
      return JSON.parse(text) as unknown;
    } catch (e) {
      const html = /^\s*</.test(text) ? " (the server sent HTML: check the bundle URL)" : "";
      throw new LoadError("bad_bundle", `${file} at ${url} is not valid JSON${html}: ${describe(e)}; ${REBUILD}`, { url, cause: e });
    }
  }
}
