// Page driver of `scripts/bench_runtime.py --kernels`: each kernel of the model is compiled into
// its own Relax function (bench_<name>) that takes zero-filled inputs; this times calls of each,
// synchronising with the device once per batch of calls, and keeps the best of three batches.
// The page's server maps /tvmjs/ to the built tvmjs bundle and /kiln/ to runtime_web/dist.
import * as tvmjs from "/tvmjs/tvmjs.bundle.mjs";
import { instantiateLibrary } from "/kiln/kiln.mjs";

// kernels: [{ func, inputs: [{ shape, dtype }] }] -> [{ func, ms, calls }]
window.kilnTimeKernels = async (libraryUrl, backend, kernels, budgetSeconds) => {
  const bytes = await (await fetch(libraryUrl)).arrayBuffer();
  const { tvm } = await instantiateLibrary(tvmjs, bytes, 1, (msg) => console.log(msg));
  let device = tvm.cpu();
  if (backend === "webgpu") {
    const gpu = await tvmjs.detectGPUDevice();
    if (!gpu) throw new Error("WebGPU is not available");
    tvm.initWebGPU(gpu.device);
    device = tvm.webgpu();
  }
  const results = [];
  tvm.beginScope();
  try {
    const vm = tvm.createVirtualMachine(device);
    if (backend === "webgpu") await tvm.asyncLoadWebGPUPipelines(vm.getInternalModule());
    for (const kernel of kernels) {
      const args = kernel.inputs.map(({ shape, dtype }) => {
        const t = tvm.empty(shape, dtype, device);
        // Zeros: valid indices, and no denormals or NaNs to slow a CPU down.
        const nbytes = shape.reduce((a, b) => a * b, 1) * (parseInt(dtype.replace(/\D+/g, ""), 10) / 8);
        t.copyFromRawBytes(new Uint8Array(nbytes));
        return t;
      });
      const f = vm.getFunction(kernel.func);
      const run = async (n) => {
        const started = performance.now();
        for (let i = 0; i < n; i++) tvm.withNewScope(() => { f(...args); });
        await device.sync();
        return performance.now() - started;
      };
      const first = await run(1);  // also warms the pipeline up
      const calls = Math.max(1, Math.min(50, Math.floor((budgetSeconds * 1000) / Math.max(first, 0.01))));
      // The best of three batches: this machine may be shared, and other work only adds time.
      let ms = Infinity;
      for (let round = 0; round < 3; round++) ms = Math.min(ms, (await run(calls)) / calls);
      results.push({ func: kernel.func, ms, calls });
      console.log(`${kernel.func}: ${ms.toFixed(3)} ms`);
    }
  } finally {
    tvm.endScope();
    tvm.dispose();
  }
  return results;
};
window.kilnReady = true;
