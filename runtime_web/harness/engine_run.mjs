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
// Requests on one engine, each from a fresh KV cache: per request its text, finish reason, usage and
// what the model copied back to JavaScript meanwhile (the change of model.readback()), and whether
// the model can sample on the device. `messages` requests go to chat.completions, others to completions.
window.kilnSampling = async (bundleUrl, backend, requests) => {
  const engine = await createEngine(bundleUrl, { backend, cache: "none" });
  try {
    const results = [];
    for (const request of requests) {
      engine.resetChat();
      const before = engine.model.readback();
      const reply = await (request.messages ? engine.chat.completions : engine.completions).create(request);
      const after = engine.model.readback();
      const choice = reply.choices[0];
      results.push({ text: choice.message?.content ?? choice.text, finish: choice.finish_reason, usage: reply.usage,
                     readback: Object.fromEntries(Object.keys(after).map((k) => [k, after[k] - before[k]])) });
    }
    return { backend: engine.backend, samplesOnDevice: engine.model.samplesOnDevice, results };
  } finally {
    engine.unload();
  }
};
window.kilnReady = true;
