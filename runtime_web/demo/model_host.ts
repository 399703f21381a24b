// Owns the Web Worker that runs kiln's engine: loading a model starts a fresh worker (the engine
// computes there, so the page stays responsive), unloading ends it.

import { createWorkerEngine } from "./kiln.mjs";
import type { Backend, LoadProgress, SiteModel, WorkerEngine } from "./kiln.mjs";

export interface LoadedModel {
  model: SiteModel;
  engine: WorkerEngine;
  backend: Backend;
}

export class ModelHost {
  private worker: Worker | null = null;
  current: LoadedModel | null = null;

  /** Loads `model` (replacing the current one). Rejects with kiln's LoadError "aborted" on `signal`. */
  async load(model: SiteModel, backend: "auto" | Backend, onProgress: (p: LoadProgress) => void,
             signal: AbortSignal): Promise<LoadedModel> {
    await this.unload();
    const worker = new Worker(new URL("./kiln-worker.mjs", import.meta.url), { type: "module", name: "kiln" });
    this.worker = worker;
    try {
      // The shards go to the Cache API store, which the service worker leaves alone (see sw.ts).
      const engine = await createWorkerEngine(worker, new URL(model.path, document.baseURI).href,
                                              { backend, cache: "cache-api", onProgress, signal });
      this.current = { model, engine, backend: engine.backend };
      return this.current;
    } catch (err) {
      worker.terminate();
      if (this.worker === worker) this.worker = null;
      throw err;
    }
  }

  async unload(): Promise<void> {
    const { current, worker } = this;
    this.current = null;
    this.worker = null;
    // A worker busy in a long kernel may answer late: it is ended after a short wait either way.
    const grace = new Promise((resolve) => setTimeout(resolve, 2000));
    await Promise.race([current?.engine.unload().catch(() => undefined), grace]);
    worker?.terminate();
  }
}
