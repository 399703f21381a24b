// WebGPU for the engine in Node (no DOM), through the npm package `webgpu` (Dawn's node binding,
// an optional dependency). One call before createEngine:
//
//   if (await installNodeWebGPU()) console.log("WebGPU adapter found");
//   const engine = await createEngine(url, { backend: "auto" });
//
// Dawn reaches the GPU through Vulkan: a real GPU's driver is found by the Vulkan loader as usual;
// on a machine without one, Chromium's SwiftShader (a CPU Vulkan driver) serves, chosen with
// VK_ICD_FILENAMES=/usr/lib/chromium/vk_swiftshader_icd.json.
//
// The package is imported only when this function runs in Node, so a browser never loads it.

/** navigator.gpu as far as this module asks it. */
interface GpuLike {
  requestAdapter(options: { powerPreference: "high-performance" }): Promise<unknown>;
}

/** The `webgpu` package's exports used here. */
interface DawnPackage {
  create(options: string[]): GpuLike;
  globals?: Record<string, unknown>;
}

type Globals = Record<string, unknown> & { navigator?: { gpu?: GpuLike } };

function inNode(): boolean {
  const proc = (globalThis as { process?: { versions?: { node?: unknown } } | null }).process;
  return typeof proc === "object" && proc !== null && typeof proc.versions?.node === "string";
}

async function hasAdapter(gpu: GpuLike): Promise<boolean> {
  try {
    return Boolean(await gpu.requestAdapter({ powerPreference: "high-performance" }));
  } catch {
    return false;
  }
}

/**
 * Gives Node a WebGPU `navigator.gpu` (and the GPU* globals such as GPUBufferUsage) from the
 * `webgpu` package, and says whether it offers an adapter. Returns false, without throwing, where
 * the package is not installed, cannot load on this platform, or finds no Vulkan device. Where
 * `navigator.gpu` already exists (a browser, or a second call) it is kept and only probed.
 * `dawnOptions` are passed to the package's `create`, e.g. ["backend=vulkan"].
 */
export async function installNodeWebGPU(dawnOptions: string[] = []): Promise<boolean> {
  const g = globalThis as unknown as Globals;
  if (g.navigator?.gpu) return hasAdapter(g.navigator.gpu);
  if (!inNode()) return false;
  let dawn: DawnPackage;
  try {
    dawn = (await import("webgpu")) as unknown as DawnPackage;
  } catch {
    return false;
  }
  let gpu: GpuLike;
  try {
    gpu = dawn.create(dawnOptions);
  } catch {
    return false;
  }
  for (const [name, value] of Object.entries(dawn.globals ?? {})) {
    if (!(name in g)) g[name] = value;
  }
  if (g.navigator === undefined) {
    g.navigator = { gpu };
  } else {
    // Node 21+ has its own navigator (userAgent, hardwareConcurrency, ...) but no gpu.
    Object.defineProperty(g.navigator, "gpu", { value: gpu, configurable: true, enumerable: true });
  }
  return hasAdapter(gpu);
}
