// Node check that unloading an engine gives back what loading took:
//   node --expose-gc node_cycles.mjs KILN_MJS BUNDLE_URL CYCLES
// creates an engine (WASM), runs one short chat, unloads it, CYCLES times, and prints
// {listeners: {event: [before, after]}, rssMb: [after each cycle]}. With --expose-gc a full
// collection runs after each unload, so that RSS shows what is still reachable, not what the
// collector has not got to yet. The unloaded engines are kept referenced, as an app that forgets to
// drop them would: unload() itself must let go of the memory.
import { pathToFileURL } from "node:url";

const [kilnPath, bundleUrl, cycles = "20"] = process.argv.slice(2);
console.log = (...args) => console.error(...args);
const kiln = await import(pathToFileURL(kilnPath).href);
const events = ["uncaughtException", "unhandledRejection", "exit", "warning"];
const count = () => Object.fromEntries(events.map((e) => [e, process.listenerCount(e)]));
const before = count();
const rssMb = [];
const kept = [];
for (let i = 0; i < Number(cycles); i++) {
  const engine = await kiln.createEngine(bundleUrl, { backend: "wasm", cache: "none" });
  await engine.chat.completions.create({ messages: [{ role: "user", content: "hi" }], max_tokens: 2, temperature: 0 });
  engine.unload();
  kept.push(engine);
  globalThis.gc?.();
  await new Promise((resolve) => setTimeout(resolve, 0));
  globalThis.gc?.();
  rssMb.push(process.memoryUsage().rss / 1e6);
}
const after = count();
process.stdout.write(JSON.stringify({
  listeners: Object.fromEntries(events.map((e) => [e, [before[e], after[e]]])), rssMb, kept: kept.length }));
