// "kiln-tvmjs" is an esbuild alias (build.mjs) for the tvmjs bundle scripts/build_tvmjs.py writes
// into kiln's cache, outside this folder; its shape is TvmjsModule (tvmjs_types.ts), which
// engine.ts asserts where it imports it.
declare module "kiln-tvmjs";
