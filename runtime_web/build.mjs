// Builds kiln's web runtime with esbuild: src/index.ts -> dist/kiln.mjs and src/worker.ts ->
// dist/kiln-worker.mjs, each one self-contained ES module with the tvmjs runtime inside (no
// framework), and src/thread_worker.ts -> dist/kiln-thread.mjs (a WASM helper thread; no tvmjs); the runtime's declarations, dist/kiln.d.mts over dist/types/ (tsc), so that a page
// that imports "./kiln.mjs" gets its types; and the demo chat app, demo/ -> dist/demo/. With
// --tests, also bundles every test/*.test.ts into .build/test/ for `node --test`. (esbuild only
// strips types; `npm run typecheck` checks them.)
//
// tvmjs is the bundle scripts/build_tvmjs.py writes into kiln's cache: its path comes from
// KILN_TVMJS, else from the repo's Python toolchain module.
import { build } from "esbuild";
import { execFileSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = dirname(fileURLToPath(import.meta.url));
const common = { bundle: true, format: "esm", target: "es2022", logLevel: "warning", sourcemap: true };

function tvmjsBundle() {
  if (process.env.KILN_TVMJS) return process.env.KILN_TVMJS;
  const python = join(root, "..", ".venv", "bin", "python");
  const path = execFileSync(python, ["-c", "from kiln import toolchain; print(toolchain.tvmjs_bundle())"],
                            { cwd: join(root, ".."), encoding: "utf8" }).trim();
  if (!existsSync(path)) throw new Error(`tvmjs is not built (${path} is missing); run scripts/setup.sh`);
  return path;
}

// emcc's glue inside tvmjs calls require() and reads __dirname when it runs under Node; an ES
// module has neither, so Node gets them here. Browsers never take the Node branch.
const nodeShim = [
  "const __kilnInNode = typeof process === \"object\" && typeof process.versions?.node === \"string\";",
  "const require = __kilnInNode ? (await import(\"node:module\")).createRequire(import.meta.url) : undefined;",
  "const __dirname = __kilnInNode ? \".\" : undefined;",
].join("\n");

const withTests = process.argv.includes("--tests");
const tvmjs = tvmjsBundle();
const entries = { "index.ts": "kiln.mjs", "worker.ts": "kiln-worker.mjs", "thread_worker.ts": "kiln-thread.mjs" };
for (const [entry, out] of Object.entries(entries)) {
  await build({ ...common, entryPoints: [join(root, "src", entry)], platform: "neutral",
                alias: { "kiln-tvmjs": tvmjs }, external: ["node:module", "perf_hooks", "ws", "webgpu"],
                banner: { js: nodeShim }, outfile: join(root, "dist", out) });
}
// Declarations: tsc writes dist/types/*.d.ts from src/ (tsconfig.build.json; it fails the build on
// a type error in src/). Their relative imports get the ".js" that Node-style module resolution
// needs, dist/types/package.json makes them ES modules, and dist/kiln.d.mts is what an editor
// finds for an import of "./kiln.mjs".
const types = join(root, "dist", "types");
rmSync(types, { recursive: true, force: true });
execFileSync(join(root, "node_modules", ".bin", "tsc"), ["-p", join(root, "tsconfig.build.json")], { stdio: "inherit" });
for (const file of readdirSync(types).filter((f) => f.endsWith(".d.ts"))) {
  const text = readFileSync(join(types, file), "utf8");
  writeFileSync(join(types, file), text.replace(/(from |import\()(["'])(\.\.?\/[^"']*?)\2/g,
                                                (_, lead, q, spec) => `${lead}${q}${spec.endsWith(".js") ? spec : `${spec}.js`}${q}`));
}
writeFileSync(join(types, "package.json"), '{ "type": "module" }\n');
writeFileSync(join(root, "dist", "kiln.d.mts"),
              "// The types of kiln.mjs (kiln's web runtime): keep this file and types/ beside it.\n" +
              "export * from \"./types/index.js\";\n");

// The demo chat app, demo/ -> dist/demo/ (kiln site copies it to the site root): app.mjs imports
// the runtime as the sibling module "./kiln.mjs" instead of bundling it a second time; sw.js is a
// classic script, as service workers are registered by default.
const kilnAsSibling = {
  name: "kiln-as-sibling",
  setup(b) { b.onResolve({ filter: /^\.\/kiln\.mjs$/ }, (args) => ({ path: args.path, external: true })); },
};
const demoOut = join(root, "dist", "demo");
await build({ ...common, entryPoints: [join(root, "demo", "app.ts")], platform: "browser", plugins: [kilnAsSibling],
              outfile: join(demoOut, "app.mjs") });
await build({ ...common, entryPoints: [join(root, "demo", "sw.ts")], platform: "browser", format: "iife",
              outfile: join(demoOut, "sw.js") });
mkdirSync(demoOut, { recursive: true });
for (const file of ["index.html", "app.css"]) copyFileSync(join(root, "demo", file), join(demoOut, file));

if (withTests) {
  const tests = readdirSync(join(root, "test")).filter((f) => f.endsWith(".test.ts"));
  await build({ ...common, entryPoints: tests.map((t) => join(root, "test", t)), platform: "node",
                alias: { "kiln-tvmjs": tvmjs },
                outdir: join(root, ".build", "test"), outExtension: { ".js": ".mjs" } });
}
