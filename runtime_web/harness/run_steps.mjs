// Runs a list of requests on one kiln engine, in order, and collects one JSON-able result per
// request: the completion, {chunks} for a stream, or {error}. Shared by the Node and page drivers.
// A step may carry `abortAfterChunks: n` (abort the stream through an AbortSignal after n chunks)
// or be `{concurrent: [step, ...]}` (start them all at once; one result array, in step order).
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
