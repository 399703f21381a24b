// Builds kiln's web runtime with esbuild: src/index.ts -> dist/kiln.mjs (one ES module, no
// framework). With --tests, also bundles every test/*.test.ts into .build/test/ for `node --test`.
import { build } from "esbuild";
import { readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = dirname(fileURLToPath(import.meta.url));
const common = { bundle: true, format: "esm", target: "es2022", logLevel: "warning", sourcemap: true };

const withTests = process.argv.includes("--tests");
const entries = readdirSync(join(root, "src")).filter((f) => f === "index.ts" || f === "worker.ts");
for (const entry of entries) {
  await build({ ...common, entryPoints: [join(root, "src", entry)], platform: "neutral",
                outfile: join(root, "dist", entry === "index.ts" ? "kiln.mjs" : "kiln-worker.mjs") });
}
if (withTests) {
  const tests = readdirSync(join(root, "test")).filter((f) => f.endsWith(".test.ts"));
  await build({ ...common, entryPoints: tests.map((t) => join(root, "test", t)), platform: "node",
                outdir: join(root, ".build", "test"), outExtension: { ".js": ".mjs" } });
}
