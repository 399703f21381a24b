// Teacher-forced run of a KilnModel, shared by the Node and page drivers. For each job
// {prompt: ids, forced: ids} it prefills the prompt, then feeds `forced` one token at a time, and
// records at each forced position the model's top-1 token and by how much its logit beats the
// forced token's (0 where they are the same token): one entry per forced token.
// The prefix all prompts share (a chat template's system prompt) is prefilled once and kept: each
// job rolls the cache back to it, as the engine does between chat turns.
const argmax = (a) => a.reduce((best, v, i) => (v > a[best] ? i : best), 0);

function sharedPrefix(prompts) {
  let n = 0;
  while (prompts.every((p) => n < p.length - 1 && p[n] === prompts[0][n])) n++;
  return n;
}

export async function teacherForce(model, jobs) {
  model.reset();
  const prefix = sharedPrefix(jobs.map((j) => j.prompt));
  if (prefix > 0) await model.prefill(jobs[0].prompt.slice(0, prefix));
  const results = [];
  for (const { prompt, forced } of jobs) {
    if (!model.canRollBack(model.length - prefix)) throw new Error("the KV cache cannot roll back to the shared prefix");
    model.rollBack(model.length - prefix);
    let logits = await model.prefill(prompt.slice(prefix));
    const top1 = [];
    const margin = [];
    for (let i = 0; i < forced.length; i++) {
      const best = argmax(logits);
      top1.push(best);
      margin.push(logits[best] - logits[forced[i]]);
      if (i + 1 < forced.length) logits = await model.decode(forced[i]);
    }
    results.push({ top1, margin });
  }
  model.reset();
  return results;
}
