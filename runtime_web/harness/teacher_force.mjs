// Teacher-forced run of a KilnModel, shared by the Node and page drivers. For each job
// {prompt: ids, forced: ids} it prefills the prompt, then feeds `forced` one token at a time, and
// records at each forced position the model's top-1 token and by how much its logit beats the
// forced token's (0 where they are the same token): one entry per forced token.
const argmax = (a) => a.reduce((best, v, i) => (v > a[best] ? i : best), 0);

export async function teacherForce(model, jobs) {
  const results = [];
  for (const { prompt, forced } of jobs) {
    model.reset();
    let logits = await model.prefill(prompt);
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
