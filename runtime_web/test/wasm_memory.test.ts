// wasm_memory.ts on hand-written WebAssembly binaries: it finds the memory import behind other
// imports, gives a shared memory where one can be had (Node always can), and otherwise loads the
// same binary with the import marked private, which the unpatched binary refuses.
import assert from "node:assert/strict";
import { test } from "node:test";

import { findMemoryImport, prepareLibrary } from "../src/wasm_memory";

const HEADER = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];
const name = (s: string) => [s.length, ...Array.from(s, (c) => c.charCodeAt(0))];
const section = (id: number, body: number[]) => [id, body.length, ...body];

/** A module importing env.f (a function) and then env.memory with these limits flags. */
function library(flags: number, initial: number, maximum: number): Uint8Array<ArrayBuffer> {
  const types = section(1, [1, 0x60, 0, 0]);
  const imports = section(2, [2, ...name("env"), ...name("f"), 0x00, 0,
                              ...name("env"), ...name("memory"), 0x02, flags, initial, maximum]);
  return new Uint8Array([...HEADER, ...types, ...imports]);
}

test("the memory import is found behind a function import", () => {
  assert.deepEqual(findMemoryImport(library(0x03, 1, 2)), { shared: true, initial: 1, maximum: 2, flagsOffset: 37 });
  assert.equal(findMemoryImport(library(0x01, 1, 2))?.shared, false);
  assert.equal(findMemoryImport(new Uint8Array([...HEADER, ...section(1, [1, 0x60, 0, 0])])), null);
});

test("a shared memory where one is wanted, the binary unchanged", () => {
  const bytes = library(0x03, 1, 2);
  const prepared = prepareLibrary(bytes, true);
  assert.equal(prepared.shared, true);
  assert.equal(prepared.bytes, bytes);
  assert.ok(prepared.memory?.buffer instanceof SharedArrayBuffer);
  new WebAssembly.Instance(new WebAssembly.Module(prepared.bytes), { env: { f() {}, memory: prepared.memory } });
});

test("otherwise a private memory and a patched copy, which the original refuses", () => {
  const bytes = library(0x03, 1, 2);
  const prepared = prepareLibrary(bytes, false);
  assert.equal(prepared.shared, false);
  assert.ok(prepared.memory !== null && !(prepared.memory.buffer instanceof SharedArrayBuffer));
  assert.equal(bytes[37], 0x03, "the caller's bytes stay as they were");
  assert.equal(prepared.bytes[37], 0x01);
  const imports = { env: { f() {}, memory: prepared.memory } };
  new WebAssembly.Instance(new WebAssembly.Module(prepared.bytes), imports);
  assert.throws(() => new WebAssembly.Instance(new WebAssembly.Module(bytes), imports), WebAssembly.LinkError);
});

test("a library with its own memory is left alone", () => {
  const bytes = new Uint8Array([...HEADER]);
  assert.deepEqual(prepareLibrary(bytes, true), { bytes, memory: null, shared: false });
});
