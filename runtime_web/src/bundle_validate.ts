// Checks of a bundle's metadata before anything else is fetched: kiln-config.json and
// tensor-cache.json against their schemas (compiler/schema/, the contract the compiler writes
// them by, compiled into src/bundle_schema.ts), the tokenizer files' shape, and every file name a
// bundle gives against its base URL. Every failure is LoadError "bad_bundle" naming the file and
// the field, and saying how to fix it.

import { KILN_CONFIG_SCHEMA, TENSOR_CACHE_SCHEMA } from "./bundle_schema";
import type { JsonObject, KilnConfig, TensorCacheIndex, TokenizerJson } from "./bundle_types";
import { LoadError } from "./errors";
import { describeSchema, findIssue, formatPath, gotText, JsonSchema, SchemaIssue } from "./json_schema";

export const REBUILD = "rebuild the bundle with `kiln build` and upload the whole output folder";

export function fail(file: string, what: string): never {
  throw new LoadError("bad_bundle", `${file}: ${what}; ${REBUILD}`);
}

export const isInt = (v: unknown): v is number => Number.isInteger(v);
export const isObject = (v: unknown): v is { [key: string]: unknown } => v !== null && typeof v === "object" && !Array.isArray(v);

export function describe(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

const INT32_MAX = 2 ** 31 - 1;

/** `schema` with `maximum` lowered to `max` for some of its top-level fields. */
function withMaximum(schema: JsonSchema, fields: string[], max: number): JsonSchema {
  const properties = { ...schema.properties };
  for (const field of fields) {
    const sub = properties[field];
    if (!sub) throw new Error(`${schema.$id} has no field ${field}; update RUNTIME_KILN_CONFIG_SCHEMA in bundle_validate.ts`);
    properties[field] = { ...sub, maximum: Math.min(sub.maximum ?? Infinity, max) };
  }
  return { ...schema, properties };
}

/**
 * kiln-config.schema.json plus the one limit only the runtime has: it passes the context window
 * and prefill chunk sizes to the kernels as int32, where a larger value would wrap around.
 */
export const RUNTIME_KILN_CONFIG_SCHEMA = withMaximum(KILN_CONFIG_SCHEMA, ["context_window_size", "prefill_chunk_size"], INT32_MAX);

/** "missing field a.b", "field a.b must be a positive integer, got 0", ... */
export function describeIssue(issue: SchemaIssue, path = formatPath(issue.path)): string {
  switch (issue.kind) {
    case "missing": return `missing field ${path}`;
    case "unexpected": return `field ${path} is not part of the bundle format this runtime reads`;
    case "invalid": return `field ${path} must be ${describeSchema(issue.schema)}, got ${gotText(issue.value)}`;
  }
}

export function validateKilnConfig(config: unknown): asserts config is KilnConfig {
  const file = "kiln-config.json";
  if (!isObject(config)) fail(file, "is not a JSON object");
  // First, so that a bundle of another format says so rather than naming a field it lacks.
  if (config.format_version !== 1) {
    fail(file, config.format_version === undefined ? "missing field format_version"
      : `format_version ${JSON.stringify(config.format_version)} is not supported by this runtime (it reads 1)`);
  }
  const issue = findIssue(RUNTIME_KILN_CONFIG_SCHEMA, config);
  if (issue) fail(file, describeIssue(issue));
}

/** A tensor-cache.json problem, worded by shard ("shard 1 (params_shard_1.bin): ..."). */
function describeCacheIssue(cache: { [key: string]: unknown }, issue: SchemaIssue): string {
  const [top, i, field, j] = issue.path;
  if (top !== "records" || typeof i !== "number") {
    if (top === "records" && issue.path.length === 1) {
      if (issue.kind === "missing") return "missing field records (the list of weight shards)";
      if (Array.isArray(issue.value) && issue.value.length === 0) return "lists no weight shards";
    }
    return describeIssue(issue);
  }
  const shard = (cache.records as unknown[])[i];
  const dataPath = isObject(shard) ? shard.dataPath : undefined;
  const where = `shard ${i}${typeof dataPath === "string" ? ` (${dataPath})` : ""}`;
  if (field === undefined) return `${where} is not an object`;
  if (field === "sha256") {
    return issue.kind === "missing"
      ? `${where} has no sha256 to verify it against (a WebLLM/MLC tensor cache has only md5sum)`
      : `${where}: sha256 must be 64 hex digits, got ${gotText(issue.value)}`;
  }
  if (field === "records" && typeof j === "number") {
    const record = isObject(shard) && Array.isArray(shard.records) ? shard.records[j] : undefined;
    const name = isObject(record) ? record.name : undefined;
    const tensor = `tensor ${j}${typeof name === "string" ? ` (${name})` : ""}`;
    const inner = issue.path.slice(4);
    return inner.length === 0 ? `${where}: ${tensor} is not an object` : `${where}: ${tensor}: ${describeIssue(issue, formatPath(inner))}`;
  }
  return `${where}: ${describeIssue(issue, formatPath(issue.path.slice(2)))}`;
}

export function validateTensorCache(cache: unknown): asserts cache is TensorCacheIndex {
  const file = "tensor-cache.json";
  if (!isObject(cache)) fail(file, "is not a JSON object");
  const issue = findIssue(TENSOR_CACHE_SCHEMA, cache);
  if (issue) fail(file, describeCacheIssue(cache, issue));
  // What a schema cannot say: every tensor lies inside its shard.
  (cache as TensorCacheIndex).records.forEach((shard, i) => {
    for (const rec of shard.records) {
      if (rec.byteOffset + rec.nbytes > shard.nbytes) {
        fail(file, `shard ${i} (${shard.dataPath}): tensor ${rec.name} (bytes ${rec.byteOffset}..${rec.byteOffset + rec.nbytes}) lies outside the shard's ${shard.nbytes} bytes`);
      }
    }
  });
}

export function validateTokenizerJson(tokenizerJson: unknown): asserts tokenizerJson is TokenizerJson {
  if (!isObject(tokenizerJson) || !isObject(tokenizerJson.model)) fail("tokenizer.json", "is not a tokenizers JSON file (no model field)");
}

export function validateTokenizerConfig(tokenizerConfig: unknown): asserts tokenizerConfig is JsonObject {
  if (!isObject(tokenizerConfig)) fail("tokenizer_config.json", "is not a JSON object");
}

/** Percent-decoding that never throws (a malformed escape stays as it is). */
function decodeLoosely(text: string): string {
  return text.replace(/(%[0-9a-fA-F]{2})+/g, (run) => {
    try {
      return decodeURIComponent(run);
    } catch {
      return run;
    }
  });
}

/**
 * The absolute URL of `path`, a file a bundle config names, resolved against the bundle's base URL;
 * LoadError "bad_bundle" when it does not stay inside the bundle folder.
 */
export function bundleFileUrl(base: URL, path: string, file: string, field: string): string {
  let url: URL | undefined;
  try {
    url = new URL(path, base);
  } catch {
    url = undefined;
  }
  const inside = url !== undefined && url.protocol === base.protocol && url.host === base.host
    && url.username === base.username && url.password === base.password
    && url.pathname.startsWith(base.pathname) && url.pathname.length > base.pathname.length;
  // "." and ".." are resolved by the URL parser, but a server may still decode %2F or a backslash
  // into a separator of its own, so such names are refused too.
  const rest = inside ? decodeLoosely(url!.pathname.slice(base.pathname.length)) : "";
  if (!inside || rest.split(/[/\\]/).some((seg) => seg === "." || seg === "..") || rest.includes("\\")) {
    const where = url ? `resolves to ${url.href}, ` : "is not a valid URL, ";
    fail(file, `${field} ${JSON.stringify(path)} ${where}outside the bundle folder ${base.href} (a bundle may only name files inside its own folder)`);
  }
  url!.hash = "";
  return url!.href;
}

/** The bundle's base URL: absolute (against the page), without query or fragment, ending in "/". */
export function resolveBase(bundleUrl: string): URL {
  let url: URL;
  try {
    url = new URL(bundleUrl, (globalThis as { location?: { href: string } }).location?.href);
  } catch (e) {
    throw new LoadError("bad_url", `cannot resolve the bundle URL ${JSON.stringify(bundleUrl)}: ${describe(e)}; pass an absolute URL (relative ones need a page location)`, { cause: e });
  }
  url.hash = "";
  url.search = "";
  if (!url.pathname.endsWith("/")) url.pathname += "/";
  return url;
}
