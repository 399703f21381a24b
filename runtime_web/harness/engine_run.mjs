// Browser driver of kiln's engine, the page counterpart of node_chat.mjs. The page's server maps
// /kiln/ to runtime_web/dist.
import { createEngine } from "/kiln/kiln.mjs";
import { runSteps } from "./run_steps.mjs";
import { teacherForce } from "./teacher_force.mjs";

// A createEngine refusal comes back as { error: { name, code, message } }.
window.kilnChat = async (bundleUrl, backend, steps) => {
  let engine;
  try {
    engine = await createEngine(bundleUrl, { backend, cache: "none" });
  } catch (err) {
    return { error: { name: err.name, code: err.code, message: err.message } };
  }
  const results = await runSteps(engine, steps);
  const backendUsed = engine.backend;
  engine.unload();
  return { backend: backendUsed, results };
};
// Teacher-forced top-1 tokens (teacher_force.mjs) on the engine's model.
window.kilnTeacherForce = async (bundleUrl, backend, jobs) => {
  const engine = await createEngine(bundleUrl, { backend, cache: "none" });
  const results = await teacherForce(engine.model, jobs);
  const backendUsed = engine.backend;
  engine.unload();
  return { backend: backendUsed, results };
};
window.kilnReady = true;
