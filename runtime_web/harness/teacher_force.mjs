// Teacher-forced run of a KilnModel, shared by the Node and page drivers. For each job
// {prompt: ids, forced: ids, splitAt?: n} it starts a fresh sequence, prefills the prompt (in one
// call, or in two at `splitAt`: a chunk onto tokens already cached, as a chat's second turn
// does), then feeds `forced` one token at a time, and records at each forced position the model's
// top-1 token and by how much its logit beats the forced token's (0 where they are the same).
const argmax = (a) => a.reduce((best, v, i) => (v > a[best] ? i : best), 0);

export async function teacherForce(model, jobs) {
  const results = [];
  for (const { prompt, forced, splitAt } of jobs) {
    model.reset();
    if (splitAt) await model.prefill(prompt.slice(0, splitAt));
    let logits = await model.prefill(splitAt ? prompt.slice(splitAt) : prompt);
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
