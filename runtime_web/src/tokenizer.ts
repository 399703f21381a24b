// The bundle's tokenizer: tokenizer.json + tokenizer_config.json read by @huggingface/tokenizers
// (a maintained pure-JS implementation, no network access, works in browsers and Node). Ids are
// those of the Python `tokenizers` library on the same text; tests/runtime_fixtures.py writes the
// Python reference and runtime_web/test/tokenizer.test.ts compares.
//
// Two places where the JS library on its own differs from Python, handled here:
//  - The ByteLevel pre-tokenizer's built-in GPT-2 split regex is compiled as a JS RegExp, whose
//    `\s` includes U+FEFF and misses U+0085, unlike the Rust library's (Oniguruma) `\s`; text with
//    those characters got other ids. The same split, written into tokenizer.json as an explicit
//    Split pre-tokenizer (what the Rust ByteLevel does internally), goes through the library's
//    Oniguruma-to-JS translation, which gets `\s` right. See withExplicitByteLevelSplit.
//  - decode() throws on an empty list and maps ids outside the vocabulary to the unknown token;
//    Python returns "" and drops such ids (models often have embedding rows past the tokenizer).

import { Tokenizer as HFTokenizer } from "@huggingface/tokenizers";

// tokenizer.json is the tokenizers library's format, read here only where the JS library needs
// help (see above); its parts are accessed loosely.
type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

export interface EncodeOptions {
  /** Add the post-processor's special tokens (e.g. BOS). Default true, as in Python. */
  addSpecialTokens?: boolean;
}

export interface DecodeOptions {
  /** Leave out tokens marked `special` in tokenizer.json. Default false (transformers' default). */
  skipSpecialTokens?: boolean;
}

/** Incremental detokenizer for streaming: feed ids one at a time, get text as it completes. */
export interface StreamDecoder {
  /** Adds one id; returns the text it completes ("" while a UTF-8 character is still partial). */
  push(id: number): string;
  /** Returns whatever is still held back (a partial character decodes to U+FFFD, as in decode). */
  flush(): string;
}

/** The regex the Rust ByteLevel pre-tokenizer splits with when `use_regex` is true (GPT-2's). */
const BYTE_LEVEL_SPLIT_REGEX =
  "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/**
 * The same pre-tokenizer with every ByteLevel that splits with its built-in regex replaced by
 * Sequence[Split(that regex, Isolated), ByteLevel(use_regex=false)]: identical in the Rust library
 * (its ByteLevel splits exactly so), and it makes the JS library use its Oniguruma-compatible
 * regex translation. A ByteLevel with add_prefix_space is left alone: it prepends a space to
 * every piece it receives, so it cannot come after the split.
 */
function withExplicitByteLevelSplit(preTokenizer: Json | null | undefined): Json | null | undefined {
  if (!preTokenizer || typeof preTokenizer !== "object") return preTokenizer;
  if (preTokenizer.type === "Sequence" && Array.isArray(preTokenizer.pretokenizers)) {
    return { ...preTokenizer, pretokenizers: preTokenizer.pretokenizers.map(withExplicitByteLevelSplit) };
  }
  if (preTokenizer.type === "ByteLevel" && (preTokenizer.use_regex ?? true) && preTokenizer.add_prefix_space === false) {
    return {
      type: "Sequence",
      pretokenizers: [
        { type: "Split", pattern: { Regex: BYTE_LEVEL_SPLIT_REGEX }, behavior: "Isolated", invert: false },
        { ...preTokenizer, use_regex: false },
      ],
    };
  }
  return preTokenizer;
}

/** A special added token of tokenizer.json, as the chat prompt encoder needs it. */
export interface SpecialToken {
  content: string;
  id: number;
  /** Whitespace before (lstrip) or after (rstrip) the token is dropped when it is split out. */
  lstrip: boolean;
  rstrip: boolean;
}

/** The pre-tokenizer with Metaspace's prepend_scheme "first" turned into "never", or null when it has none. */
function withoutFirstPrepend(preTokenizer: Json | null | undefined): Json | null {
  if (!preTokenizer || typeof preTokenizer !== "object") return null;
  if (preTokenizer.type === "Sequence" && Array.isArray(preTokenizer.pretokenizers)) {
    const parts = preTokenizer.pretokenizers.map((p: Json) => withoutFirstPrepend(p) ?? p);
    return parts.some((p: Json, i: number) => p !== preTokenizer.pretokenizers[i]) ? { ...preTokenizer, pretokenizers: parts } : null;
  }
  if (preTokenizer.type === "Metaspace" && preTokenizer.prepend_scheme === "first") return { ...preTokenizer, prepend_scheme: "never" };
  return null;
}

export class Tokenizer {
  private readonly inner: HFTokenizer;
  private readonly specialIds: ReadonlySet<number>;
  /** Tokenizers that treat special-token strings as text: for the text at the start, and for the rest. */
  private plainTokenizers: { first: HFTokenizer; later: HFTokenizer } | null = null;

  private constructor(inner: HFTokenizer, specialIds: Set<number>, private readonly json: Json,
                      private readonly config: Json) {
    this.inner = inner;
    this.specialIds = specialIds;
  }

  /** Builds the tokenizer from the parsed tokenizer.json and tokenizer_config.json of a bundle. */
  static fromJSON(tokenizerJson: object, tokenizerConfig: object): Tokenizer {
    const json = tokenizerJson as Json;
    const config = (tokenizerConfig ?? {}) as Json;
    if (!json || typeof json !== "object" || !json.model) {
      throw new Error("tokenizer.json has no `model`: the bundle's tokenizer file is not a Hugging Face tokenizer.json");
    }
    const patched = { ...json, pre_tokenizer: withExplicitByteLevelSplit(json.pre_tokenizer) };
    // transformers 5 cleans up spaces around punctuation only when the config asks for it and
    // never for BPE models; the library's own default would be to clean up.
    const cleanUp = config.clean_up_tokenization_spaces === true && json.model.type !== "BPE";
    const innerConfig = { ...config, clean_up_tokenization_spaces: cleanUp };
    const inner = new HFTokenizer(patched, innerConfig);
    const specialIds = new Set<number>();
    for (const token of json.added_tokens ?? []) if (token.special) specialIds.add(token.id);
    return new Tokenizer(inner, specialIds, patched, innerConfig);
  }

  /** The added tokens marked special in tokenizer.json (BOS, EOS, chat markers), longest first. */
  specialTokens(): SpecialToken[] {
    this.specials ??= [...this.inner.get_added_tokens_decoder().values()]
      .filter((t) => t.special && t.content.length > 0)
      .map((t) => ({ content: t.content, id: t.id, lstrip: t.lstrip, rstrip: t.rstrip }))
      .sort((a, b) => b.content.length - a.content.length);
    return this.specials.map((t) => ({ ...t }));
  }

  private specials: SpecialToken[] | null = null;

  /**
   * Ids of `text` where only the special tokens at `spans` (sorted, non-overlapping [start, end)
   * ranges of `text`, each exactly one special token's string) become special ids; a special-token
   * string anywhere else is encoded as plain text, as Python `tokenizers` does with
   * `encode_special_tokens = True`. The text between the spans is encoded as the library encodes
   * the sections between added tokens, so without other special-token strings the ids equal
   * encode(text, { addSpecialTokens: false }).
   */
  encodeWithSpecialSpans(text: string, spans: readonly { start: number; end: number }[]): number[] {
    const byContent = new Map(this.specialTokens().map((t) => [t.content, t]));
    const pieces: ({ text: string } | { token: SpecialToken })[] = [];
    let at = 0;
    for (const { start, end } of spans) {
      const token = byContent.get(text.slice(start, end));
      if (start < at || !token) throw new Error(`encodeWithSpecialSpans: [${start}, ${end}) is not a special token after position ${at}`);
      if (start > at) pieces.push({ text: text.slice(at, start) });
      pieces.push({ token });
      at = end;
    }
    if (at < text.length) pieces.push({ text: text.slice(at) });
    // As the library does around an added token split out of the text: lstrip/rstrip eat the
    // whitespace next to it.
    pieces.forEach((piece, i) => {
      if (!("token" in piece)) return;
      const before = pieces[i - 1];
      const after = pieces[i + 1];
      if (piece.token.lstrip && before && "text" in before) before.text = before.text.trimEnd();
      if (piece.token.rstrip && after && "text" in after) after.text = after.text.trimStart();
    });
    const plain = this.plain();
    const ids: number[] = [];
    pieces.forEach((piece, i) => {
      if ("token" in piece) {
        ids.push(piece.token.id);
      } else if (piece.text.length > 0) {
        // Only the text at the very start is the library's first section (Metaspace "first").
        ids.push(...(i === 0 ? plain.first : plain.later).encode(piece.text, { add_special_tokens: false }).ids);
      }
    });
    return ids;
  }

  /** Tokenizers without the special added tokens (built on first use: most requests never need them). */
  private plain(): { first: HFTokenizer; later: HFTokenizer } {
    if (!this.plainTokenizers) {
      const json: Json = { ...this.json, added_tokens: (this.json.added_tokens ?? []).filter((t: Json) => !t.special) };
      const first = new HFTokenizer(json, this.config);
      const laterPre = withoutFirstPrepend(json.pre_tokenizer);
      const later = laterPre ? new HFTokenizer({ ...json, pre_tokenizer: laterPre }, this.config) : first;
      this.plainTokenizers = { first, later };
    }
    return this.plainTokenizers;
  }

  /** Token ids of `text`, equal to Python `tokenizers`' `encode(text, add_special_tokens).ids`. */
  encode(text: string, { addSpecialTokens = true }: EncodeOptions = {}): number[] {
    if (typeof text !== "string") throw new TypeError(`encode expects a string, got ${typeof text}`);
    return this.inner.encode(text, { add_special_tokens: addSpecialTokens }).ids;
  }

  /** Text of `ids`, equal to Python `tokenizers`' `decode`; ids outside the vocabulary are dropped. */
  decode(ids: ArrayLike<number>, { skipSpecialTokens = false }: DecodeOptions = {}): string {
    const known: number[] = [];
    for (let i = 0; i < ids.length; i++) {
      const id = Number(ids[i]);
      if (this.inner.id_to_token(id) !== undefined) known.push(id);
    }
    if (known.length === 0) return "";
    return this.inner.decode(known, { skip_special_tokens: skipSpecialTokens });
  }

  /**
   * A detokenizer for ids generated one at a time. push(id) returns the newly completed text: it
   * holds back a partial UTF-8 character until the tokens that complete it arrive, and decodes
   * each id together with the one before it so that decoders that strip a leading space
   * (Metaspace, Strip) treat a token the same way decode() of the whole sequence does. The
   * concatenation of everything push() and flush() return equals decode(all ids).
   */
  createStreamDecoder({ skipSpecialTokens = false }: DecodeOptions = {}): StreamDecoder {
    let ids: number[] = [];
    let prefixOffset = 0; // start of the window that is decoded for context
    let readOffset = 0; // ids before this have been returned as text
    const options = { skipSpecialTokens };
    const emit = (force: boolean): string => {
      const prefixText = this.decode(ids.slice(prefixOffset, readOffset), options);
      const text = this.decode(ids.slice(prefixOffset), options);
      if (text.length <= prefixText.length || (!force && text.endsWith("\uFFFD"))) return "";
      prefixOffset = readOffset;
      readOffset = ids.length;
      if (prefixOffset > 0) { // keep the window, forget the rest
        ids = ids.slice(prefixOffset);
        readOffset -= prefixOffset;
        prefixOffset = 0;
      }
      return text.slice(prefixText.length);
    };
    return {
      push: (id: number) => {
        if (!Number.isInteger(id)) throw new TypeError(`push expects an integer token id, got ${id}`);
        ids.push(id);
        return emit(false);
      },
      flush: () => emit(true),
    };
  }

  /** The id of a token string (a vocabulary entry or an added token), or undefined. */
  idOf(token: string): number | undefined {
    return this.inner.token_to_id(token);
  }

  /** The token string of an id, or undefined when the id is outside the vocabulary. */
  tokenOf(id: number): string | undefined {
    return this.inner.id_to_token(id);
  }

  /** Whether `id` is an added token marked special in tokenizer.json (BOS, EOS, chat markers). */
  isSpecial(id: number): boolean {
    return this.specialIds.has(id);
  }
}
