// The memory a kiln WASM library runs on. A WASM CPU library imports a shared memory (so that helper
// threads can run its kernels, see wasm_threads.ts); browsers give shared memory only to
// cross-origin-isolated pages, so elsewhere the same library is loaded with its import marked
// private: one byte of the binary, the same code. Libraries that export their own memory (the
// WebGPU ones, bundles built before threads) are left as they are.

/** The memory import of a library: its limits in 64 KiB pages, and where its flags byte is. */
export interface MemoryImport {
  shared: boolean;
  initial: number;
  maximum: number | undefined;
  flagsOffset: number;
}

const IMPORT_SECTION = 2;
const KIND_FUNCTION = 0;
const KIND_TABLE = 1;
const KIND_MEMORY = 2;
const KIND_GLOBAL = 3;
const LIMITS_HAS_MAX = 1;
const LIMITS_SHARED = 2;

class Reader {
  constructor(private bytes: Uint8Array, public at: number) {}

  byte(): number {
    if (this.at >= this.bytes.length) throw new Error("the WebAssembly binary ends early");
    return this.bytes[this.at++];
  }

  u32(): number {
    let result = 0;
    for (let shift = 0; shift < 35; shift += 7) {
      const b = this.byte();
      result += (b & 0x7f) * 2 ** shift;
      if (!(b & 0x80)) return result;
    }
    throw new Error("a LEB128 number in the WebAssembly binary is too long");
  }

  skip(n: number): void {
    this.at += n;
  }

  limits(): { flags: number; initial: number; maximum: number | undefined } {
    const flags = this.byte();
    const initial = this.u32();
    return { flags, initial, maximum: flags & LIMITS_HAS_MAX ? this.u32() : undefined };
  }
}

/** The memory import of a WebAssembly binary, or null when it imports none. */
export function findMemoryImport(bytes: Uint8Array): MemoryImport | null {
  const r = new Reader(bytes, 8); // magic and version
  while (r.at < bytes.length) {
    const id = r.byte();
    const size = r.u32();
    if (id !== IMPORT_SECTION) {
      r.skip(size);
      continue;
    }
    for (let count = r.u32(); count > 0; count--) {
      r.skip(r.u32()); // module name
      r.skip(r.u32()); // field name
      const kind = r.byte();
      if (kind === KIND_FUNCTION) r.u32();
      else if (kind === KIND_TABLE) { r.byte(); r.limits(); }
      else if (kind === KIND_GLOBAL) { r.byte(); r.byte(); }
      else if (kind === KIND_MEMORY) {
        const flagsOffset = r.at;
        const { flags, initial, maximum } = r.limits();
        return { shared: (flags & LIMITS_SHARED) !== 0, initial, maximum, flagsOffset };
      } else throw new Error(`unknown import kind ${kind} in the WebAssembly binary`);
    }
    return null;
  }
  return null;
}

/** Whether this JS environment can create a shared WebAssembly memory. */
export function sharedMemoryAvailable(): boolean {
  const g = globalThis as { crossOriginIsolated?: boolean; process?: { versions?: { node?: string } } };
  if (typeof SharedArrayBuffer === "undefined") return false;
  // Node has no cross-origin isolation and always allows it; a browser page must be isolated.
  return typeof g.process?.versions?.node === "string" || g.crossOriginIsolated === true;
}

export interface PreparedLibrary {
  /** The binary to instantiate (a private-memory copy when shared memory is unavailable). */
  bytes: Uint8Array<ArrayBuffer>;
  /** The memory to import as env.memory; null when the library brings its own. */
  memory: WebAssembly.Memory | null;
  /** Whether `memory` is shared, i.e. helper threads can join. */
  shared: boolean;
}

/** The binary and memory to instantiate `library` with; `wantShared` false forces a private one. */
export function prepareLibrary(library: ArrayBuffer | Uint8Array, wantShared: boolean): PreparedLibrary {
  // A library's bytes never live in a SharedArrayBuffer (they come from fetch or a file).
  const bytes = (library instanceof Uint8Array ? library : new Uint8Array(library)) as Uint8Array<ArrayBuffer>;
  const found = findMemoryImport(bytes);
  if (found === null) return { bytes, memory: null, shared: false };
  const shared = found.shared && wantShared && sharedMemoryAvailable();
  let binary = bytes;
  if (found.shared && !shared) {
    binary = bytes.slice();
    binary[found.flagsOffset] &= ~LIMITS_SHARED;
  }
  const memory = new WebAssembly.Memory(shared
    ? { initial: found.initial, maximum: found.maximum ?? found.initial, shared: true }
    : { initial: found.initial, maximum: found.maximum });
  return { bytes: binary, memory, shared };
}
