// device_sampler.ts against a fake VM that records its calls: which library functions a device
// draw calls and with what, and how a library without kiln_argmax (an older bundle) is told apart.
import assert from "node:assert/strict";
import { test } from "node:test";

import { ARGMAX_FUNCTION, DEVICE_SAMPLING_FUNCTIONS, hasDeviceSampling, sampleOnDevice } from "../src/device_sampler";
import type { PackedFunc, TvmArray, TvmDevice, TvmTensor } from "../src/tvmjs_types";

/** A stand-in for a tvmjs tensor: its shape, dtype and (for uploaded scalars) values. */
class FakeTensor implements TvmTensor {
  values: number[] = [];
  constructor(readonly shape: number[], readonly dtype: string, readonly name = "tensor") {}
  copyFrom(data: TvmTensor | ArrayLike<number>): TvmTensor {
    this.values = Array.from(data as ArrayLike<number>);
    return this;
  }
  copyFromRawBytes(): TvmTensor { return this; }
  view(shape: number[]): TvmTensor { return new FakeTensor(shape, this.dtype, `${this.name}.view`); }
  toArray(): ArrayLike<number> { return this.values; }
  dispose(): void {}
}

const device: TvmDevice = { sync: async () => {} };
const tvm = { empty: (shape: number[], dtype: string) => new FakeTensor(shape, dtype) };

/** A VM with the sampling functions, each recording (name, arguments) and returning a fresh tensor. */
function fakeVm(missing: string[] = []) {
  const calls: { name: string; args: FakeTensor[] }[] = [];
  const result = (name: string): unknown => {
    if (name === "argsort_probs") {
      const parts = [new FakeTensor([1, 640], "float32", "sorted_probs"), new FakeTensor([1, 640], "int32", "sorted_indices")];
      return { get: (i: number) => parts[i], dispose() {} } satisfies TvmArray;
    }
    return new FakeTensor([1], name === "softmax_with_temperature" ? "float32" : "int32", name);
  };
  return {
    calls,
    getFunction(name: string): PackedFunc {
      if (missing.includes(name)) throw new Error(`Cannot find function ${name}`);
      return (...args: unknown[]) => {
        calls.push({ name, args: args as FakeTensor[] });
        return result(name);
      };
    },
  };
}

const logits = new FakeTensor([1, 1, 640], "float32", "logits");

test("greedy: one kiln_argmax call on the logits, nothing uploaded, nothing sorted", () => {
  const vm = fakeVm();
  const token = sampleOnDevice(tvm, device, vm, logits, { greedy: true }) as FakeTensor;
  assert.deepEqual(vm.calls.map((c) => c.name), [ARGMAX_FUNCTION]);
  assert.equal(vm.calls[0].args[0], logits);
  assert.equal(token.name, ARGMAX_FUNCTION);
});

test("temperature/top-p: softmax -> argsort -> sample_with_top_p with the draw's numbers", () => {
  const vm = fakeVm();
  const token = sampleOnDevice(tvm, device, vm, logits, { greedy: false, temperature: 0.7, topP: 0.9, uniform: 0.25 }) as FakeTensor;
  assert.deepEqual(vm.calls.map((c) => c.name), ["softmax_with_temperature", "argsort_probs", "sample_with_top_p"]);
  const [softmax, argsort, sample] = vm.calls;
  assert.equal(softmax.args[0], logits);
  assert.deepEqual([softmax.args[1].shape, softmax.args[1].dtype, softmax.args[1].values], [[1], "float32", [0.7]]);
  assert.deepEqual(argsort.args[0].shape, [1, 640]); // the probabilities [1, 1, V] viewed as [1, V]
  assert.deepEqual(sample.args.slice(0, 2).map((t) => t.name), ["sorted_probs", "sorted_indices"]);
  assert.deepEqual(sample.args.slice(2).map((t) => [t.dtype, t.values]),
                   [["float32", [0.25]], ["int32", [0]], ["float32", [0.9]]]);
  assert.equal(token.name, "sample_with_top_p");
});

test("the uniform number goes to the device as a float32 below 1", () => {
  for (const [uniform, sent] of [[1 - 2 ** -30, 1 - 2 ** -24], [0.1, Math.fround(0.1)], [0, 0]]) {
    const vm = fakeVm();
    sampleOnDevice(tvm, device, vm, logits, { greedy: false, temperature: 1, topP: 1, uniform });
    const value = vm.calls[2].args[2].values[0];
    assert.equal(value, sent);
    assert.ok(value < 1 && Math.fround(value) === value);
  }
});

test("a library lacking any device sampling function (an older bundle) has no device sampling", () => {
  assert.equal(hasDeviceSampling(fakeVm()), true);
  for (const name of DEVICE_SAMPLING_FUNCTIONS) assert.equal(hasDeviceSampling(fakeVm([name])), false, name);
  // tvmjs builds that answer null for a missing name instead of throwing
  const nulls = { getFunction: (name: string) => (name === ARGMAX_FUNCTION ? null : () => 0) as unknown as PackedFunc };
  assert.equal(hasDeviceSampling(nulls), false);
});
