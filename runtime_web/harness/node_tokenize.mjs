// Node driver of kiln's tokenizer (the runtime's Tokenizer class from dist/kiln.mjs):
//   node node_tokenize.mjs KILN_MJS < [{"tokenizer_json": path, "tokenizer_config": path, "texts": [...]}, ...]
// prints, per job, the ids of every text with and without special tokens:
//   [{"ids": [[...], ...], "ids_no_special": [[...], ...]}, ...]
// One process encodes everything, so a test of thousands of texts costs one Node start.
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

const [kilnPath] = process.argv.slice(2);
const { Tokenizer } = await import(pathToFileURL(kilnPath).href);
const jobs = JSON.parse(readFileSync(0, "utf8"));
const readJson = (path) => JSON.parse(readFileSync(path, "utf8"));
const results = jobs.map((job) => {
  const tokenizer = Tokenizer.fromJSON(readJson(job.tokenizer_json), readJson(job.tokenizer_config));
  return {
    ids: job.texts.map((text) => tokenizer.encode(text)),
    ids_no_special: job.texts.map((text) => tokenizer.encode(text, { addSpecialTokens: false })),
  };
});
process.stdout.write(JSON.stringify(results));
