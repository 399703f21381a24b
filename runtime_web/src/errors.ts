// The engine's error class, and how failures of the tvmjs runtime are recognised. Kept apart from
// engine.ts so that model.ts can throw EngineErrors without an import cycle.

/* eslint-disable @typescript-eslint/no-explicit-any */

export class EngineError extends Error {
  constructor(readonly code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "EngineError";
  }
}

/**
 * A short description of a failure thrown from inside the tvmjs runtime. The emscripten glue ends
 * a failed call with `exit(n)` (an ExitStatus object, not an Error) or an abort (a
 * WebAssembly.RuntimeError); TVM's own checks throw Errors whose message carries TVM's text.
 */
export function describeRuntimeFailure(err: unknown): string {
  const e = err as any;
  if (e?.name === "ExitStatus") return `the WebAssembly runtime exited (${e.message ?? `exit(${e.status})`})`;
  if (e instanceof WebAssembly.RuntimeError) return `the WebAssembly runtime aborted (${e.message})`;
  const text = e instanceof Error ? e.message : String(e);
  return text.length > 400 ? `${text.slice(0, 400)}…` : text;
}
