// Streaming stop-string detection for kiln's web runtime.
//
// The engine decodes tokens into text deltas and pushes each delta here. The matcher emits text
// as soon as it cannot be part of a stop string and holds back only the longest tail of the text
// that is a proper prefix of some stop string, so a stop string split across tokens is still
// caught and never shown. When a stop string completes, the text before it is emitted and the
// matcher reports `stopped`; the stop string itself and anything after it are dropped (OpenAI's
// behaviour). If several stop strings complete in the same push, the one that starts earliest
// wins (the least text is emitted). Generation is expected to end at the first stop: the engine
// stops decoding once `stopped` is true, so a longer stop string that would have completed later
// ("abc" while "b" is also a stop) does not wait.
//
// Why holding back the longest such tail is enough: if a stop string occurred starting at an
// already-emitted position p, then when p was emitted the text from p to the end was either a
// whole occurrence (found by the search) or a proper prefix of that stop string, i.e. a tail we
// would have held back. So no occurrence can start in emitted text.

/** OpenAI's limit on the number of stop sequences per request. */
export const MAX_STOP_STRINGS = 4;

export interface StopPushResult {
  /** Text that is safe to show now (possibly ""). */
  emit: string;
  /** True once a stop string has been seen; the engine should stop generating. */
  stopped: boolean;
}

export class StopStringMatcher {
  private readonly stops: string[];
  private readonly maxLen: number;
  private pending = "";
  private done = false;

  /** `stops` as in OpenAI's `stop` field: a string or up to 4 strings, none empty. */
  constructor(stops: string | readonly string[] = []) {
    const list = typeof stops === "string" ? [stops] : stops;
    if (!Array.isArray(list)) {
      throw new Error(`stop must be a string or an array of strings, got ${typeof stops}`);
    }
    if (list.length > MAX_STOP_STRINGS) {
      throw new Error(`stop may hold at most ${MAX_STOP_STRINGS} strings, got ${list.length}`);
    }
    list.forEach((s, i) => {
      if (typeof s !== "string") throw new Error(`stop[${i}] must be a string, got ${typeof s}`);
      if (s.length === 0) throw new Error(`stop[${i}] is an empty string; stop strings must be non-empty`);
    });
    this.stops = [...list];
    this.maxLen = this.stops.reduce((m, s) => Math.max(m, s.length), 0);
  }

  /** True once a stop string has matched. */
  get stopped(): boolean {
    return this.done;
  }

  /** Feeds the next piece of decoded text. After a match, further pushes emit nothing. */
  push(textDelta: string): StopPushResult {
    if (this.done) return { emit: "", stopped: true };
    const text = this.pending + textDelta;

    // Earliest-starting complete occurrence of any stop string. The held-back tail never holds a
    // complete one, so any occurrence found here ends inside textDelta.
    let at = -1;
    for (const s of this.stops) {
      const i = text.indexOf(s);
      if (i !== -1 && (at === -1 || i < at)) at = i;
    }
    if (at !== -1) {
      this.done = true;
      this.pending = "";
      return { emit: text.slice(0, at), stopped: true };
    }

    const hold = this.heldTail(text);
    this.pending = text.slice(text.length - hold);
    return { emit: text.slice(0, text.length - hold), stopped: false };
  }

  /** End of generation without a stop: returns the held-back text (empty after a stop). */
  flush(): string {
    const rest = this.done ? "" : this.pending;
    this.pending = "";
    return rest;
  }

  // Length of the longest tail of `text` that is a proper prefix of some stop string.
  private heldTail(text: string): number {
    for (let n = Math.min(text.length, this.maxLen - 1); n > 0; n--) {
      const tail = text.slice(text.length - n);
      for (const s of this.stops) if (s.length > n && s.startsWith(tail)) return n;
    }
    return 0;
  }
}
