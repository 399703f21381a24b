// Runs a list of requests on one kiln engine, in order, and collects one JSON-able result per
// request: the completion, {chunks} for a stream, or {error}. Shared by the Node and page drivers.
export async function runSteps(engine, steps) {
  const results = [];
  for (const step of steps) {
    const api = step.api === "text" ? engine.completions : engine.chat.completions;
    try {
      if (step.request.stream) {
        const chunks = [];
        for await (const chunk of await api.create(step.request)) chunks.push(chunk);
        results.push({ chunks });
      } else {
        results.push(await api.create(step.request));
      }
    } catch (err) {
      results.push({ error: { name: err.name, code: err.code, message: err.message } });
    }
    if (step.reset) engine.resetChat();
  }
  return results;
}
