// Runs one function of a compiled kiln library through the tvmjs runtime and returns its outputs
// as plain arrays. Shared by the Node runner and the browser page, so both paths run the same code.
//
// request: { device: "cpu" | "webgpu", func: "main", readInputs: [0],
//            inputs: [{ shape: [..], dtype: "float32", base64: "..." }] }
// result:  { outputs: [{ shape, dtype, data }], adapter: { vendor, architecture, description } | null }
// An input's bytes come as base64 (little-endian, row-major): a JSON list of numbers costs the page
// many times the memory in transit. `readInputs` (optional) names inputs to read back after the
// call, after its outputs: an *_inplace function changes them.
// With request.calls = [{ func, inputs, readInputs }, ...] instead of func and inputs, the library
// is set up once (WebGPU pipelines compiled once) and the result is { results: [{ outputs }, ...], adapter }.

function base64Bytes(text) {
  const chars = atob(text);
  const bytes = new Uint8Array(chars.length);
  for (let i = 0; i < chars.length; i++) bytes[i] = chars.charCodeAt(i);
  return bytes;
}

// `instantiate(bytes)` gives the tvmjs instance; the default is tvmjs's own, which cannot load a
// WASM CPU library (it imports a shared memory): pass kiln's instantiateLibrary for those.
export async function runFunction(tvmjs, wasmBytes, request, log = () => {},
                                  instantiate = (bytes) => tvmjs.instantiate(bytes, tvmjs.createPolyfillWASI(), log)) {
  const tvm = await instantiate(wasmBytes);
  let adapter = null;
  let device = tvm.cpu();
  if (request.device === "webgpu") {
    const gpu = await tvmjs.detectGPUDevice();
    if (gpu === undefined) {
      throw new Error("WebGPU is not available: navigator.gpu gave no adapter");
    }
    const info = gpu.adapterInfo;
    adapter = { vendor: info.vendor, architecture: info.architecture, device: info.device, description: info.description };
    tvm.initWebGPU(gpu.device);
    device = tvm.webgpu();
  } else if (request.device !== "cpu") {
    throw new Error(`unknown device ${JSON.stringify(request.device)}; use "cpu" or "webgpu"`);
  }

  tvm.beginScope();
  try {
    const vm = tvm.createVirtualMachine(device);
    if (request.device === "webgpu") {
      await tvm.asyncLoadWebGPUPipelines(vm.getInternalModule());
    }
    const call = async ({ func, inputs, readInputs = [] }) => {
      tvm.beginScope();
      try {
        const args = inputs.map((input) => {
          const host = tvm.empty(input.shape, input.dtype, tvm.cpu()).copyFromRawBytes(base64Bytes(input.base64));
          return tvm.empty(input.shape, input.dtype, device).copyFrom(host);
        });
        const result = vm.getFunction(func)(...args);
        // A Relax function returns one tensor or a tuple of them (a TVM array).
        const tensors = typeof result.size === "function"
          ? Array.from({ length: result.size() }, (_, i) => result.get(i))
          : [result];
        const hosts = [...tensors, ...readInputs.map((i) => args[i])].map((t) => tvm.empty(t.shape, t.dtype, tvm.cpu()).copyFrom(t));
        await device.sync();
        return { outputs: hosts.map((h) => ({ shape: h.shape, dtype: h.dtype, data: Array.from(h.toArray()) })) };
      } finally {
        tvm.endScope();
      }
    };
    if (request.calls) {
      const results = [];
      for (const c of request.calls) results.push(await call(c));
      return { results, adapter };
    }
    return { ...(await call(request)), adapter };
  } finally {
    tvm.endScope();
    tvm.dispose();
  }
}
