// Runs a list of requests on one kiln engine, in order, and collects one JSON-able result per
// request: the completion, {chunks} for a stream, or {error}. Shared by the Node and page drivers.
// A step may carry `abortAfterChunks: n` (abort the stream through an AbortSignal after n chunks),
// `breakAfterChunks: n` (leave the for-await loop after n chunks, then send the same request without
// streaming and with max_tokens 1; the result adds `next`, its completion, `nextMs`, how long it took,
// and for an in-page engine `decodesAfterBreak`, the decode steps the model ran from the break until
// `next` finished), or be `{concurrent: [step, ...]}` (start them all at once; one result array, in
// step order).
export async function runSteps(engine, steps) {
  const results = [];
  for (const step of steps) {
    if (step.concurrent) {
      results.push(await Promise.all(step.concurrent.map((s) => runStep(engine, s))));
    } else {
      results.push(await runStep(engine, step));
    }
    if (step.reset) engine.resetChat();
  }
  return results;
}

async function runStep(engine, step) {
  if (step.breakAfterChunks) return breakStep(engine, step);
  const api = step.api === "text" ? engine.completions : engine.chat.completions;
  const controller = new AbortController();
  const chunks = [];
  try {
    if (!step.request.stream) return await api.create(step.request, { signal: controller.signal });
    for await (const chunk of await api.create(step.request, { signal: controller.signal })) {
      chunks.push(chunk);
      if (chunks.length === step.abortAfterChunks) controller.abort();
    }
    return { chunks };
  } catch (err) {
    return { chunks, error: { name: err.name, code: err.code, message: err.message } };
  }
}

async function breakStep(engine, step) {
  const api = step.api === "text" ? engine.completions : engine.chat.completions;
  const model = engine.model; // absent on a worker engine
  let decodes = 0;
  // A decode step is model.decode (CPU sampling) or model.decodeAndSample (sampling on the GPU).
  const counted = ["decode", "decodeAndSample"];
  if (model) {
    for (const name of counted) {
      const step = model[name];
      model[name] = function countedStep(...args) { decodes++; return step.apply(this, args); };
    }
  }
  const chunks = [];
  try {
    for await (const chunk of await api.create(step.request)) {
      chunks.push(chunk);
      if (chunks.length === step.breakAfterChunks) break;
    }
    const atBreak = decodes;
    const started = performance.now();
    const next = await api.create({ ...step.request, stream: false, max_tokens: 1 });
    return { chunks, next, nextMs: performance.now() - started, decodesAfterBreak: model ? decodes - atBreak : null };
  } catch (err) {
    return { chunks, error: { name: err.name, code: err.code, message: err.message } };
  } finally {
    if (model) for (const name of counted) delete model[name];
  }
}
