// Load progress: the events openBundle (and createEngine) report, and the meter that makes them.

export interface LoadProgress {
  /** "compile" (WebGPU): the pipelines the model waits for, counted in bytesDone/bytesTotal as
   *  pipelines, not bytes; its mbPerSecond is 0. It runs alongside "upload". */
  phase: "download" | "verify" | "compile" | "upload";
  bytesDone: number;
  bytesTotal: number;
  mbPerSecond: number;
  etaSeconds: number | null;
  /** The shard the event is about, when it is about one. */
  file?: string;
}

/** Measures bytes/s over a moving window and emits throttled progress events for one phase. */
export class Meter {
  private samples: { t: number; bytes: number }[] = [];
  private done = 0;
  private lastEmit = -Infinity;
  private lastEmitted = -1;

  constructor(private readonly phase: LoadProgress["phase"], private readonly total: number,
              private readonly emit: ((p: LoadProgress) => void) | undefined,
              private readonly windowMs = 3000, private readonly throttleMs = 0) {}

  /** Sets the phase's bytes done (never lowered); emits when due, or always with `force`. */
  update(bytesDone: number, file?: string, force = false): void {
    this.done = Math.min(this.total, Math.max(this.done, bytesDone));
    const t = performance.now();
    this.samples.push({ t, bytes: this.done });
    while (this.samples.length > 2 && t - this.samples[1].t >= this.windowMs) this.samples.shift();
    if (!this.emit || this.done === this.lastEmitted) return;
    if (!force && this.done !== this.total && t - this.lastEmit < this.throttleMs) return;
    this.lastEmit = t;
    this.lastEmitted = this.done;
    const first = this.samples[0];
    const dt = (t - first.t) / 1000;
    const rate = dt > 0 ? (this.done - first.bytes) / dt : 0;
    const left = this.total - this.done;
    this.emit({
      phase: this.phase, bytesDone: this.done, bytesTotal: this.total, mbPerSecond: rate / 1e6,
      etaSeconds: left === 0 ? 0 : rate > 0 ? left / rate : null, ...(file === undefined ? {} : { file }),
    });
  }

  start(): void {
    this.samples = [{ t: performance.now(), bytes: this.done }];
  }

  get bytesDone(): number {
    return this.done;
  }
}
