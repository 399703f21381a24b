// A validator for the part of JSON Schema (draft 2020-12) that kiln's schemas in compiler/schema/
// use, so that the runtime checks a bundle against the same file the compiler validates it with
// (the schemas reach the runtime through src/bundle_schema.ts, which scripts/gen_schema_types.mjs
// generates). It reports the first problem as data (where, what kind, which subschema), and
// describes schemas in words, so that callers can say "field X must be a positive integer".
//
// A schema that uses a keyword outside SUPPORTED_KEYWORDS is refused by the generator and by the
// contract test (test/schema_contract.test.ts): the runtime never silently ignores a constraint.

export type JsonType = "object" | "array" | "string" | "integer" | "number" | "boolean" | "null";

export interface JsonSchema {
  $schema?: string;
  $id?: string;
  title?: string;
  description?: string;
  type?: JsonType | JsonType[];
  const?: unknown;
  enum?: unknown[];
  // objects
  properties?: { [name: string]: JsonSchema };
  required?: string[];
  additionalProperties?: boolean;
  minProperties?: number;
  // arrays
  items?: JsonSchema;
  contains?: JsonSchema;
  minItems?: number;
  // numbers
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
  exclusiveMaximum?: number;
  // strings
  pattern?: string;
  minLength?: number;
}

/** Every keyword this validator implements (annotations included). */
export const SUPPORTED_KEYWORDS: ReadonlySet<string> = new Set([
  "$schema", "$id", "title", "description", "type", "const", "enum", "properties", "required",
  "additionalProperties", "minProperties", "items", "contains", "minItems", "minimum", "maximum",
  "exclusiveMinimum", "exclusiveMaximum", "pattern", "minLength",
]);

export type JsonPath = (string | number)[];

export interface SchemaIssue {
  /** Where: object keys and array indices from the root. */
  path: JsonPath;
  /** A required field is absent, a field the schema does not allow is present, or a value is wrong. */
  kind: "missing" | "unexpected" | "invalid";
  /** The subschema the value at `path` breaks ({} for an unexpected field). */
  schema: JsonSchema;
  /** The value at `path` (undefined when missing). */
  value: unknown;
}

/** "a.b[2].c" */
export function formatPath(path: JsonPath): string {
  return path.map((p, i) => (typeof p === "number" ? `[${p}]` : i === 0 ? p : `.${p}`)).join("");
}

/** A value for a message: its JSON, shortened. */
export function gotText(value: unknown): string {
  const text = value === undefined ? "nothing" : JSON.stringify(value) ?? String(value);
  return text.length > 80 ? `${text.slice(0, 79)}…` : text;
}

/** Keywords of `schema` and its subschemas that this validator does not implement, as "#/path: keyword". */
export function unsupportedKeywords(schema: JsonSchema, at = "#"): string[] {
  const out = Object.keys(schema).filter((k) => !SUPPORTED_KEYWORDS.has(k)).map((k) => `${at}: ${k}`);
  for (const [name, sub] of Object.entries(schema.properties ?? {})) out.push(...unsupportedKeywords(sub, `${at}/properties/${name}`));
  if (schema.items) out.push(...unsupportedKeywords(schema.items, `${at}/items`));
  if (schema.contains) out.push(...unsupportedKeywords(schema.contains, `${at}/contains`));
  return out;
}

const isObject = (v: unknown): v is { [key: string]: unknown } => v !== null && typeof v === "object" && !Array.isArray(v);

function hasType(value: unknown, type: JsonType): boolean {
  switch (type) {
    case "object": return isObject(value);
    case "array": return Array.isArray(value);
    case "string": return typeof value === "string";
    case "integer": return Number.isInteger(value);
    case "number": return typeof value === "number" && Number.isFinite(value);
    case "boolean": return typeof value === "boolean";
    case "null": return value === null;
  }
}

function jsonEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (Array.isArray(a) && Array.isArray(b)) return a.length === b.length && a.every((x, i) => jsonEqual(x, b[i]));
  if (isObject(a) && isObject(b)) {
    const keys = Object.keys(a);
    return keys.length === Object.keys(b).length && keys.every((k) => k in b && jsonEqual(a[k], b[k]));
  }
  return false;
}

const patterns = new Map<string, RegExp>();

function matches(pattern: string, text: string): boolean {
  let re = patterns.get(pattern);
  if (!re) {
    re = new RegExp(pattern, "u");
    patterns.set(pattern, re);
  }
  return re.test(text);
}

/** Whether `value` passes the keywords of `schema` that look at it alone (not at its items or fields). */
function passesOwnKeywords(s: JsonSchema, value: unknown): boolean {
  if (s.type !== undefined && !(Array.isArray(s.type) ? s.type : [s.type]).some((t) => hasType(value, t))) return false;
  if ("const" in s && !jsonEqual(value, s.const)) return false;
  if (s.enum && !s.enum.some((e) => jsonEqual(value, e))) return false;
  if (typeof value === "number") {
    if (s.minimum !== undefined && !(value >= s.minimum)) return false;
    if (s.maximum !== undefined && !(value <= s.maximum)) return false;
    if (s.exclusiveMinimum !== undefined && !(value > s.exclusiveMinimum)) return false;
    if (s.exclusiveMaximum !== undefined && !(value < s.exclusiveMaximum)) return false;
  }
  if (typeof value === "string") {
    if (s.minLength !== undefined && [...value].length < s.minLength) return false;
    if (s.pattern !== undefined && !matches(s.pattern, value)) return false;
  }
  if (Array.isArray(value)) {
    if (s.minItems !== undefined && value.length < s.minItems) return false;
    if (s.contains && !value.some((item) => findIssue(s.contains!, item) === null)) return false;
  }
  if (isObject(value) && s.minProperties !== undefined && Object.keys(value).length < s.minProperties) return false;
  return true;
}

/**
 * The first way `value` breaks `schema`, or null when it conforms. Order: the value's own
 * keywords, then (objects) missing required fields in the order `required` lists them, the
 * fields in the order `properties` lists them, and fields the schema does not allow; (arrays)
 * the items in order. A value whose own type is wrong is reported at its own path.
 */
export function findIssue(schema: JsonSchema, value: unknown, path: JsonPath = []): SchemaIssue | null {
  const typeOk = schema.type === undefined || (Array.isArray(schema.type) ? schema.type : [schema.type]).some((t) => hasType(value, t));
  if (!typeOk) return { path, kind: "invalid", schema, value };
  if (isObject(value)) {
    for (const name of schema.required ?? []) {
      if (!(name in value)) return { path: [...path, name], kind: "missing", schema: schema.properties?.[name] ?? {}, value: undefined };
    }
    for (const [name, sub] of Object.entries(schema.properties ?? {})) {
      if (!(name in value)) continue;
      const issue = findIssue(sub, value[name], [...path, name]);
      if (issue) return issue;
    }
    if (schema.additionalProperties === false) {
      const extra = Object.keys(value).find((k) => !(k in (schema.properties ?? {})));
      if (extra !== undefined) return { path: [...path, extra], kind: "unexpected", schema: {}, value: value[extra] };
    }
  }
  if (Array.isArray(value) && schema.items) {
    for (let i = 0; i < value.length; i++) {
      const issue = findIssue(schema.items, value[i], [...path, i]);
      if (issue) return issue;
    }
  }
  return passesOwnKeywords(schema, value) ? null : { path, kind: "invalid", schema, value };
}

// ---------------------------------------------------------------------------------------------
// schemas in words

const INT32_MAX = 2 ** 31 - 1;
const NOUNS: Record<JsonType, [string, string, string]> = { // article, singular, plural
  object: ["an", "object", "objects"], array: ["an", "array", "arrays"], string: ["a", "string", "strings"],
  integer: ["an", "integer", "integers"], number: ["a", "number", "numbers"],
  boolean: ["a", "boolean", "booleans"], null: ["", "null", "nulls"],
};

function withArticle(words: string, plural: boolean): string {
  return plural ? words : `${/^[aeiou]/.test(words) ? "an" : "a"} ${words}`;
}

function describeNumber(s: JsonSchema, type: "integer" | "number", plural: boolean): string {
  const noun = NOUNS[type][plural ? 2 : 1];
  let text: string;
  let custom = false;
  if ((s.minimum === 1 && type === "integer") || s.exclusiveMinimum === 0) text = withArticle(`positive ${noun}`, plural);
  else if (s.minimum === 0) text = withArticle(`non-negative ${noun}`, plural);
  else if (s.minimum !== undefined) [text, custom] = [`${withArticle(noun, plural)} of at least ${s.minimum}`, true];
  else if (s.exclusiveMinimum !== undefined) [text, custom] = [`${withArticle(noun, plural)} above ${s.exclusiveMinimum}`, true];
  else text = withArticle(noun, plural);
  const joint = custom ? " and" : "";
  if (s.maximum === INT32_MAX && type === "integer") text += `${joint} below 2^31`;
  else if (s.maximum !== undefined) text += `${joint} at most ${s.maximum}`;
  else if (s.exclusiveMaximum !== undefined) text += `${joint} below ${s.exclusiveMaximum}`;
  return text;
}

function describeType(s: JsonSchema, type: JsonType, plural: boolean): string {
  switch (type) {
    case "integer":
    case "number":
      return describeNumber(s, type, plural);
    case "string": {
      const text = withArticle(`${s.minLength ? "non-empty " : ""}${NOUNS.string[plural ? 2 : 1]}`, plural);
      return s.pattern === undefined ? text : `${text} matching /${s.pattern}/`;
    }
    case "array": {
      let text = withArticle(`${s.minItems ? "non-empty " : ""}${NOUNS.array[plural ? 2 : 1]}`, plural);
      if (s.items) text += ` of ${describe(s.items, true)}`;
      if (s.contains) text += ` including ${describe(s.contains, false)}`;
      return text;
    }
    case "object": {
      const names = Object.keys(s.properties ?? {});
      const text = withArticle(NOUNS.object[plural ? 2 : 1], plural);
      if (!s.minProperties || names.length === 0) return text;
      return `${text} with at least ${s.minProperties === 1 ? "one" : s.minProperties} of the fields ${names.join(", ")}`;
    }
    case "boolean":
      return plural ? "booleans" : "true or false";
    case "null":
      return "null";
  }
}

function describe(s: JsonSchema, plural: boolean): string {
  if ("const" in s) return plural ? `copies of ${JSON.stringify(s.const)}` : JSON.stringify(s.const);
  if (s.enum) {
    const values = s.enum.map((v) => JSON.stringify(v));
    if (plural) return `values among ${values.join(", ")}`;
    return values.length === 1 ? values[0] : `one of ${values.join(", ")}`;
  }
  if (s.type === undefined) return plural ? "JSON values" : "any JSON value";
  return (Array.isArray(s.type) ? s.type : [s.type]).map((t) => describeType(s, t, plural)).join(" or ");
}

/** What `schema` accepts, in words: "a positive integer", "a string or null", "an array of integers". */
export function describeSchema(schema: JsonSchema): string {
  return describe(schema, false);
}
