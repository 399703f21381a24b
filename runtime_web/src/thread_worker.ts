// A helper thread of a WASM CPU library (dist/kiln-thread.mjs; see wasm_threads.ts): instantiate
// the library on the page's shared memory and wait inside it for parallel kernels, forever. The
// library's other imports (the WASI and tvmjs functions the page provides) are never called on a
// helper: each is a function that throws if it is.
import type { ThreadStart } from "./wasm_threads";

interface HelperExports {
  stackRestore(top: number): void;
  kiln_thread_run(index: number): void;
}

function run(start: ThreadStart): void {
  const imports: Record<string, Record<string, unknown>> = { env: { memory: start.memory } };
  for (const imp of WebAssembly.Module.imports(start.module)) {
    if (imp.kind !== "function") continue;
    imports[imp.module] ??= {};
    imports[imp.module][imp.name] ??= () => {
      throw new Error(`kiln helper thread ${start.index}: the library called ${imp.module}.${imp.name}`);
    };
  }
  const instance = new WebAssembly.Instance(start.module, imports as WebAssembly.Imports);
  const exports = instance.exports as unknown as HelperExports;
  exports.stackRestore(start.stackTop);
  exports.kiln_thread_run(start.index);
}

const proc = (globalThis as { process?: { versions?: { node?: unknown } } }).process;
if (typeof proc?.versions?.node === "string") {
  const specifier = "node:worker_threads"; // computed: the browser build leaves Node's module alone
  const { workerData } = (await import(specifier)) as { workerData: ThreadStart };
  run(workerData);
} else {
  self.addEventListener("message", (event: MessageEvent<ThreadStart>) => run(event.data), { once: true });
}
