// Writes src/bundle_schema.ts from the JSON Schemas in compiler/schema/ (the source of truth of
// the bundle contract): one TypeScript type per schema and the schema itself as a constant, which
// the runtime validates bundles with (src/json_schema.ts). Run after changing a schema:
//
//   npm run gen-schema            (writes src/bundle_schema.ts)
//   node scripts/gen_schema_types.mjs --check   (exit 1 when the checked-in file is out of date)
//
// test/schema_contract.test.ts runs the check, so a schema changed without regenerating, or a
// generated file edited by hand, fails `npm test`.
//
// Types: `const` and `enum` become literal types; `type` lists become unions; objects become
// object types whose `required` fields are required and whose other fields are optional, with an
// index signature `[key: string]: unknown` unless `additionalProperties` is false; `description`
// becomes a doc comment. Keywords that only restrict values (minimum, pattern, ...) leave the type
// as it is. A keyword outside SUPPORTED (the validator's list) stops the generator.
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const schemaDir = join(root, "..", "compiler", "schema");
const OUT = join(root, "src", "bundle_schema.ts");

/** Each schema file: the name of its TypeScript type and of its schema constant. */
export const SCHEMAS = [
  { file: "kiln-config.schema.json", type: "KilnConfig", constant: "KILN_CONFIG_SCHEMA" },
  { file: "tensor-cache.schema.json", type: "TensorCacheIndex", constant: "TENSOR_CACHE_SCHEMA" },
  { file: "site-models.schema.json", type: "SiteManifest", constant: "SITE_MODELS_SCHEMA" },
];

// The keywords src/json_schema.ts implements (its SUPPORTED_KEYWORDS; the contract test checks
// that both lists agree).
export const SUPPORTED = new Set([
  "$schema", "$id", "title", "description", "type", "const", "enum", "properties", "required",
  "additionalProperties", "minProperties", "items", "contains", "minItems", "minimum", "maximum",
  "exclusiveMinimum", "exclusiveMaximum", "pattern", "minLength",
]);
const WIDTH = 110;

function check(schema, where) {
  for (const key of Object.keys(schema)) {
    if (!SUPPORTED.has(key)) {
      throw new Error(`${where}: the keyword "${key}" is not supported by runtime_web's validator (src/json_schema.ts) ` +
                      "or this generator; extend both before using it");
    }
  }
  if (schema.additionalProperties !== undefined && typeof schema.additionalProperties !== "boolean") {
    throw new Error(`${where}: additionalProperties must be true or false here (a schema there is not supported)`);
  }
  for (const [name, sub] of Object.entries(schema.properties ?? {})) check(sub, `${where}/properties/${name}`);
  if (schema.items) check(schema.items, `${where}/items`);
  if (schema.contains) check(schema.contains, `${where}/contains`);
}

function literal(value, where) {
  if (value === null || ["string", "number", "boolean"].includes(typeof value)) return JSON.stringify(value);
  throw new Error(`${where}: only null, string, number and boolean constants become types`);
}

const key = (name) => (/^[A-Za-z_$][\w$]*$/.test(name) ? name : JSON.stringify(name));

/** `text` as a doc comment at `pad`, wrapped to WIDTH columns. */
function doc(text, pad) {
  const words = text.replaceAll("*/", "* /").split(/\s+/);
  const lines = [];
  let line = "";
  for (const word of words) {
    if (line && pad.length + 4 + line.length + 1 + word.length > WIDTH) {
      lines.push(line);
      line = word;
    } else {
      line = line ? `${line} ${word}` : word;
    }
  }
  lines.push(line);
  if (lines.length === 1) return `${pad}/** ${lines[0]} */\n`;
  return `${pad}/**\n${lines.map((l) => `${pad} * ${l}\n`).join("")}${pad} */\n`;
}

function objectType(schema, pad, where) {
  const props = Object.entries(schema.properties ?? {});
  const open = schema.additionalProperties !== false;
  if (props.length === 0) return open ? "{ [key: string]: unknown }" : "Record<string, never>";
  const required = new Set(schema.required ?? []);
  let out = "{\n";
  for (const [name, sub] of props) {
    if (sub.description) out += doc(sub.description, `${pad}  `);
    out += `${pad}  ${key(name)}${required.has(name) ? "" : "?"}: ${toType(sub, `${pad}  `, `${where}/properties/${name}`)};\n`;
  }
  if (open) out += `${pad}  [key: string]: unknown;\n`;
  return `${out}${pad}}`;
}

/** Whether the type of `schema` is a union (it needs parentheses before []). */
function isUnion(schema) {
  if ("const" in schema) return false;
  if (schema.enum) return schema.enum.length > 1;
  return Array.isArray(schema.type) && schema.type.length > 1;
}

function toType(schema, pad, where) {
  if ("const" in schema) return literal(schema.const, where);
  if (schema.enum) return schema.enum.map((v) => literal(v, where)).join(" | ");
  if (schema.type === undefined) return "unknown";
  const types = Array.isArray(schema.type) ? schema.type : [schema.type];
  return types.map((type) => {
    switch (type) {
      case "string": return "string";
      case "integer":
      case "number": return "number";
      case "boolean": return "boolean";
      case "null": return "null";
      case "array": {
        if (!schema.items) return "unknown[]";
        const item = toType(schema.items, pad, `${where}/items`);
        return isUnion(schema.items) ? `(${item})[]` : `${item}[]`;
      }
      case "object": return objectType(schema, pad, where);
      default: throw new Error(`${where}: unknown type ${JSON.stringify(type)}`);
    }
  }).join(" | ");
}

/** JSON as TypeScript: a value that fits on the line stays on one line. */
function formatJson(value, pad) {
  const inline = (v) => {
    if (Array.isArray(v)) return `[${v.map(inline).join(", ")}]`;
    if (v !== null && typeof v === "object") return `{${Object.entries(v).map(([k, x]) => `${JSON.stringify(k)}: ${inline(x)}`).join(", ")}}`;
    return JSON.stringify(v);
  };
  const flat = inline(value);
  if (pad.length + flat.length <= WIDTH || value === null || typeof value !== "object") return flat;
  const inner = `${pad}  `;
  if (Array.isArray(value) && value.every((v) => v === null || typeof v !== "object")) { // packed, several a line
    const lines = [];
    let line = "";
    for (const item of value.map((v) => `${JSON.stringify(v)},`)) {
      if (line && inner.length + line.length + 1 + item.length > WIDTH) {
        lines.push(line);
        line = item;
      } else {
        line = line ? `${line} ${item}` : item;
      }
    }
    lines.push(line);
    return `[\n${lines.map((l) => `${inner}${l}\n`).join("")}${pad}]`;
  }
  if (Array.isArray(value)) return `[\n${value.map((v) => `${inner}${formatJson(v, inner)}`).join(",\n")},\n${pad}]`;
  const entries = Object.entries(value).map(([k, v]) => `${inner}${JSON.stringify(k)}: ${formatJson(v, inner)}`);
  return `{\n${entries.join(",\n")},\n${pad}}`;
}

/** The text of src/bundle_schema.ts. */
export function generate() {
  let out = "// GENERATED by scripts/gen_schema_types.mjs from compiler/schema/*.schema.json: do not edit.\n" +
    "// Change a schema, then run `npm run gen-schema` (test/schema_contract.test.ts fails until then).\n" +
    "// Longer than kiln's ~400-line guideline because it carries the three schemas verbatim.\n\n" +
    "import type { JsonSchema } from \"./json_schema\";\n";
  for (const { file, type, constant } of SCHEMAS) {
    const schema = JSON.parse(readFileSync(join(schemaDir, file), "utf8"));
    check(schema, file);
    if (schema.type !== "object") throw new Error(`${file}: the root must be an object schema`);
    out += `\n// ${"-".repeat(WIDTH - 3)}\n// ${file}\n\n`;
    if (schema.description) out += doc(schema.description, "");
    out += `export interface ${type} ${objectType(schema, "", file)}\n\n`;
    out += `/** compiler/schema/${file}, verbatim. */\n`;
    out += `export const ${constant}: JsonSchema = ${formatJson(schema, "")};\n`;
  }
  return out;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const text = generate();
  if (process.argv.includes("--check")) {
    let current = "";
    try {
      current = readFileSync(OUT, "utf8");
    } catch {
      // missing: reported below
    }
    if (current !== text) {
      console.error("runtime_web/src/bundle_schema.ts does not match compiler/schema/*.schema.json: " +
                    "run `npm run gen-schema` in runtime_web after changing a schema (never edit the generated file)");
      process.exit(1);
    }
  } else {
    writeFileSync(OUT, text);
    console.log(`wrote ${OUT}`);
  }
}
