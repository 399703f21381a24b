// Browser driver of kiln's Web Worker engine: runs the same steps on the in-page engine
// (createEngine) and on the worker engine (createWorkerEngine), one after the other in one page,
// so the test can compare them. The page's server maps /kiln/ to runtime_web/dist.
import { createEngine, createWorkerEngine } from "/kiln/kiln.mjs";
import { runSteps } from "./run_steps.mjs";

const errorFields = (err) => ({ name: err.name, code: err.code, message: err.message });
const newWorker = () => new Worker(new URL("/kiln/kiln-worker.mjs", import.meta.url), { type: "module" });

window.kilnCompare = async (bundleUrl, backend, steps) => {
  const page = await createEngine(bundleUrl, { backend, cache: "none" });
  const pageResults = await runSteps(page, steps);
  const pageBackend = page.backend;
  const pageThreads = page.threads;
  page.unload();

  const worker = newWorker();
  // A load whose signal is already aborted must fail, and leave the worker able to load.
  let loadAbort = null;
  try {
    await createWorkerEngine(worker, bundleUrl, { backend, cache: "none", signal: AbortSignal.abort() });
  } catch (err) {
    loadAbort = errorFields(err);
  }
  const progress = [];
  const engine = await createWorkerEngine(worker, bundleUrl, { backend, cache: "none",
                                                               onProgress: (p) => progress.push(p) });
  const workerResults = await runSteps(engine, steps);
  const workerBackend = engine.backend;
  const workerThreads = engine.threads;
  await engine.unload();
  // After unload the worker refuses requests, through the same error path.
  let afterUnload = null;
  try {
    await engine.chat.completions.create(steps[0].request);
  } catch (err) {
    afterUnload = errorFields(err);
  }
  worker.terminate();
  // A worker whose script cannot load must fail the load instead of leaving it pending.
  let brokenWorker = null;
  const broken = new Worker("/kiln/no-such-worker.mjs", { type: "module" });
  try {
    await createWorkerEngine(broken, bundleUrl, { backend, cache: "none" });
  } catch (err) {
    brokenWorker = errorFields(err);
  }
  broken.terminate();
  return { page: { backend: pageBackend, threads: pageThreads, results: pageResults },
           worker: { backend: workerBackend, threads: workerThreads, results: workerResults, progress, loadAbort, afterUnload,
                     brokenWorker } };
};
window.kilnReady = true;
