// The declarations `npm run build` ships beside dist/kiln.mjs: a page author who copies kiln.mjs,
// kiln.d.mts and types/ into their site gets the runtime's types for `import ... from "./kiln.mjs"`,
// with Node-style and bundler-style module resolution alike. A strict type check of a small page
// must pass, and each misuse of the API in it must be a type error.
// Run: cd runtime_web && node build.mjs --tests && node --test .build/test/declarations.test.mjs
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { cpSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { after, test } from "node:test";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const TSC = join(ROOT, "node_modules", ".bin", "tsc");
const site = mkdtempSync(join(tmpdir(), "kiln-dts-"));
after(() => rmSync(site, { recursive: true, force: true }));
cpSync(join(ROOT, "dist", "kiln.d.mts"), join(site, "kiln.d.mts"));
cpSync(join(ROOT, "dist", "types"), join(site, "types"), { recursive: true });

const PAGE = `
import { createEngine, createWorkerEngine, EngineError, LoadError } from "./kiln.mjs";
import type { ChatCompletionChunk, KilnConfig, LoadProgress, SiteManifest } from "./kiln.mjs";

const progress: LoadProgress[] = [];
const engine = await createEngine("bundles/model/", { backend: "auto", cache: "opfs", onProgress: (p) => progress.push(p) });
const config: KilnConfig = engine.config;
const window: number = config.context_window_size;
const reply = await engine.chat.completions.create({ messages: [{ role: "user", content: "hi" }], max_tokens: window });
const text: string = reply.choices[0].message.content;
const total: number = reply.usage.total_tokens;
const stream = await engine.completions.create({ prompt: "Once", stream: true, temperature: 0 });
for await (const chunk of stream) console.log(chunk.choices[0].text, chunk.usage?.extra.decode_tokens_per_s);
const worker = await createWorkerEngine(new Worker("kiln-worker.mjs", { type: "module" }), "bundles/model/");
const chunks: ChatCompletionChunk[] = [];
for await (const c of await worker.chat.completions.create({ messages: [{ role: "user", content: "hi" }], stream: true })) chunks.push(c);
const manifest: SiteManifest = await (await fetch("models.json")).json();
try {
  await worker.unload();
} catch (err) {
  if (err instanceof LoadError && err.code === "integrity") console.log(err.url);
  if (err instanceof EngineError && err.code === "context_window_exceeded") console.log(err.message);
}
console.log(text, total, manifest.models[0].path);
`;

// Each misuse must be a type error: an unused @ts-expect-error fails the check.
const MISUSE = [
  `await engine.chat.completions.create({ messages: [{ role: "robot", content: "hi" }] });`,
  `await engine.chat.completions.create({ prompt: "hi" });`,
  `const first: string = (await engine.chat.completions.create({ messages: [], stream: true })).choices[0];`,
  `console.log(new EngineError("typo_code", "x"));`,
  `await createEngine("x/", { backend: "cuda" });`,
  `console.log(config.model_id);`,
].map((line) => `// @ts-expect-error\n${line}\n`).join("");

function check(source: string, resolution: "nodenext" | "bundler"): { status: number | null; out: string } {
  const file = join(site, `page-${resolution}.mts`);
  writeFileSync(file, source);
  const module = resolution === "nodenext" ? "nodenext" : "esnext";
  const run = spawnSync(TSC, ["--noEmit", "--strict", "--skipLibCheck", "false", "--target", "es2022", "--lib", "es2022,dom,dom.iterable",
                              "--module", module, "--moduleResolution", resolution, "--types", "", file],
                        { cwd: site, encoding: "utf8" });
  return { status: run.status, out: `${run.stdout}${run.stderr}` };
}

for (const resolution of ["nodenext", "bundler"] as const) {
  test(`a page that uses the runtime type-checks against dist/kiln.d.mts, and its misuses fail (moduleResolution ${resolution})`, () => {
    const { status, out } = check(PAGE + MISUSE, resolution);
    assert.equal(status, 0, out);
  });
}

test("the check can fail: a misuse without @ts-expect-error is a type error", () => {
  const { status, out } = check(`${PAGE}await engine.chat.completions.create({ messages: [{ role: "robot", content: "hi" }] });\n`, "bundler");
  assert.notEqual(status, 0);
  assert.match(out, /robot/);
});
