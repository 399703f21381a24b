"""`kiln build` on GGUF files, checked against transformers loading the same file (`gguf_file=`):

- the real SmolLM2-135M-Instruct Q4_1 file (conftest's smollm2_gguf): kiln's tokenizer (the
  runtime's JS Tokenizer, in Node) gives transformers' ids on 1,000 varied texts; the dequantized,
  un-permuted tensors equal transformers' float32 weights exactly; the config equals transformers';
- a tiny llama GGUF written here with the gguf package, holding every tensor type kiln reads
  (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K) and a tokenizer that adds BOS:
  the same checks, plus a q0f32 bundle whose greedy tokens in Node equal transformers';
- errors through the CLI: not a GGUF, truncated, unsupported architecture, unsupported tensor type.

Longer than 400 lines: the GGUF files (the real one, the tiny multi-type one) are module fixtures
that every check shares; split, each file would write or fetch them again.
"""

from __future__ import annotations

import inspect
import json
import math
import random
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from kiln import toolchain
from kiln.checkpoint.folder import load_checkpoint
from kiln.checkpoint.gguf import llama3_frequency_factors, llama3_rope_scaling
from kiln.checkpoint.gguf_stream import SUPPORTED_TYPES, unpermute_rotary_rows
from kiln.model_defs.llama import LlamaConfig
from runtime_fixtures import FUZZ_PIECES, TEXTS

KILN_MJS = toolchain.REPO_ROOT / "runtime_web" / "dist" / "kiln.mjs"
HARNESS = toolchain.REPO_ROOT / "runtime_web" / "harness"
TOKENIZER_TEXTS = 1000

# The tiny model: K-quants pack 256 values per block along a row, so every input width is a
# multiple of 256. GQA (4 query heads, 2 key/value heads) exercises both un-permutations.
TINY = dict(hidden=256, heads=4, kv_heads=2, head_dim=64, intermediate=512, layers=2, context=256)
# Every supported type at least once (norms are F32); output.weight present: untied embeddings.
TINY_TYPES = {
    "token_embd.weight": "F16", "output.weight": "BF16",
    "blk.0.attn_q.weight": "Q4_0", "blk.0.attn_k.weight": "Q4_1", "blk.0.attn_v.weight": "Q5_0",
    "blk.0.attn_output.weight": "Q5_1", "blk.0.ffn_gate.weight": "Q8_0", "blk.0.ffn_up.weight": "Q4_K",
    "blk.0.ffn_down.weight": "Q6_K",
    "blk.1.attn_q.weight": "Q5_K", "blk.1.attn_k.weight": "Q6_K", "blk.1.attn_v.weight": "Q4_K",
    "blk.1.attn_output.weight": "Q8_0", "blk.1.ffn_gate.weight": "F16", "blk.1.ffn_up.weight": "BF16",
    "blk.1.ffn_down.weight": "F32",
}
# Types the gguf package's NumPy code quantizes.
QUANTIZABLE = ("BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0")
# It cannot quantize K-quants, so those blocks are random bytes with their f16 scales
# (byte offsets in ggml's block layouts) set small enough for sane activations.
K_QUANT_SCALES = {"Q4_K": ((0, 1e-4), (2, 1e-4)), "Q5_K": ((0, 1e-4), (2, 1e-4)), "Q6_K": ((208, 2e-5),)}


# ----------------------------------------------------------------------------- writing GGUFs


def _tensor_shapes(vocab: int) -> dict[str, tuple[int, int] | tuple[int]]:
    h, i = TINY["hidden"], TINY["intermediate"]
    q, kv = TINY["heads"] * TINY["head_dim"], TINY["kv_heads"] * TINY["head_dim"]
    shapes = {"token_embd.weight": (vocab, h), "output_norm.weight": (h,), "output.weight": (vocab, h)}
    for b in range(TINY["layers"]):
        shapes.update({f"blk.{b}.attn_norm.weight": (h,), f"blk.{b}.ffn_norm.weight": (h,),
                       f"blk.{b}.attn_q.weight": (q, h), f"blk.{b}.attn_k.weight": (kv, h),
                       f"blk.{b}.attn_v.weight": (kv, h), f"blk.{b}.attn_output.weight": (h, q),
                       f"blk.{b}.ffn_gate.weight": (i, h), f"blk.{b}.ffn_up.weight": (i, h),
                       f"blk.{b}.ffn_down.weight": (h, i)})
    return shapes


def _encoded(rng: np.random.Generator, shape, type_name: str):
    """(array, raw_dtype) for GGUFWriter.add_tensor: random weights of `shape` stored as type_name."""
    import gguf

    qtype = gguf.GGMLQuantizationType[type_name]
    values = rng.normal(0.0, 0.05, shape).astype(np.float32) + (1.0 if len(shape) == 1 else 0.0)  # norms near 1
    if type_name == "F32":
        return values, None
    if type_name == "F16":
        return values.astype(np.float16), None
    if type_name in QUANTIZABLE:
        return gguf.quants.quantize(values, qtype), qtype
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, (shape[0], shape[1] // block, size), dtype=np.uint8)
    for offset, scale in K_QUANT_SCALES.get(type_name, ()):
        raw[..., offset:offset + 2] = np.frombuffer(np.float16(scale).tobytes(), dtype=np.uint8)
    return raw.reshape(shape[0], -1), qtype


def _byte_level_vocab() -> dict:
    """The llama2-tiny synthetic tokenizer (a byte-level BPE whose specials come first, that adds
    BOS) as GGUF tokenizer metadata: llama.cpp's `gpt2` tokenizer model."""
    from kiln.testing.synthetic import VARIANTS, make_tokenizer

    backend = json.loads(make_tokenizer(VARIANTS["llama2-tiny"]).backend_tokenizer.to_str())
    vocab = backend["model"]["vocab"]
    tokens = sorted(vocab, key=vocab.get)
    assert [vocab[t] for t in tokens] == list(range(len(tokens)))
    special = {t["content"] for t in backend["added_tokens"] if t["special"]}
    return {"model": "gpt2", "tokens": tokens, "types": [3 if t in special else 1 for t in tokens],  # 3: control
            "merges": [" ".join(pair) for pair in backend["model"]["merges"]], "add_bos": True}


def _sentencepiece_vocab() -> dict:
    """A sentencepiece-style vocabulary as Llama 2, TinyLlama and Mistral files carry it (`llama`
    tokenizer model): <unk> <s> </s>, 256 byte-fallback tokens, then "▁"-prefixed pieces
    ranked by score, no merges (transformers derives them), BOS added by default."""
    from tokenizers import SentencePieceBPETokenizer

    from kiln.testing.synthetic import corpus

    trained = SentencePieceBPETokenizer()
    trained.train_from_iterator(corpus(), vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"],
                                show_progress=False)
    vocab = trained.get_vocab()
    pieces = [t for t in sorted(vocab, key=vocab.get) if t not in ("<unk>", "<s>", "</s>")]
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    return {"model": "llama", "tokens": ["<unk>", "<s>", "</s>", *byte_tokens, *pieces],
            # 2: unknown, 3: control, 6: byte, 1: normal
            "types": [2, 3, 3] + [6] * len(byte_tokens) + [1] * len(pieces),
            "scores": [0.0] * (3 + len(byte_tokens)) + [-float(i) for i in range(len(pieces))]}


VOCABS = {"byte_level": _byte_level_vocab, "sentencepiece": _sentencepiece_vocab}


def write_tiny_gguf(path, *, arch: str = "llama", types: dict[str, str] | None = None, vocab: str = "byte_level",
                    seed: int = 0, heads: int = TINY["heads"]):
    """A tiny llama GGUF as llama.cpp lays one out (random weights of TINY_TYPES, or `types` where
    given), with an [INST] chat template and the tokenizer `vocab` names (VOCABS); `heads` may
    misstate the query head count."""
    import gguf

    from kiln.testing.chat_formats import LLAMA2_CHAT

    tokenizer = VOCABS[vocab]()
    tokens = tokenizer["tokens"]
    ids = {t: i for i, t in enumerate(tokens)}
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name("kiln tiny test model")
    writer.add_block_count(TINY["layers"])
    writer.add_context_length(TINY["context"])
    writer.add_embedding_length(TINY["hidden"])
    writer.add_feed_forward_length(TINY["intermediate"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(TINY["kv_heads"])
    writer.add_rope_dimension_count(TINY["head_dim"])
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model(tokenizer["model"])
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(tokenizer["types"])
    if "merges" in tokenizer:
        writer.add_token_merges(tokenizer["merges"])
    if "scores" in tokenizer:
        writer.add_token_scores(tokenizer["scores"])
    writer.add_unk_token_id(ids["<unk>"])
    writer.add_bos_token_id(ids[LLAMA2_CHAT.bos])
    writer.add_eos_token_id(ids[LLAMA2_CHAT.eos])
    writer.add_pad_token_id(ids[LLAMA2_CHAT.pad])
    if "add_bos" in tokenizer:
        writer.add_add_bos_token(tokenizer["add_bos"])
    writer.add_chat_template(LLAMA2_CHAT.template)
    rng = np.random.default_rng(seed)
    for name, shape in _tensor_shapes(len(tokens)).items():
        array, raw_dtype = _encoded(rng, shape, {**TINY_TYPES, **(types or {})}.get(name, "F32"))
        writer.add_tensor(name, array, raw_dtype=raw_dtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    return write_tiny_gguf(tmp_path_factory.mktemp("tiny_gguf") / "tiny-llama.gguf")


@pytest.fixture(scope="module")
def loaded():
    """loaded(path) -> kiln's Checkpoint of a GGUF file, read once per module (SmolLM2's takes seconds)."""
    cache = {}

    def get(path):
        if path not in cache:
            cache[path] = load_checkpoint(path)
        return cache[path]

    return get


@pytest.fixture(scope="module")
def tiny_sentencepiece_gguf(tmp_path_factory):
    return write_tiny_gguf(tmp_path_factory.mktemp("tiny_sp_gguf") / "tiny-sentencepiece.gguf", vocab="sentencepiece")


@pytest.fixture(scope="module", params=["smollm2", "tiny"])
def gguf_file(request, tiny_gguf):
    return request.getfixturevalue("smollm2_gguf") if request.param == "smollm2" else tiny_gguf


# --------------------------------------------------------------------------------- texts


SMOLLM2_SPECIALS = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<repo_name>", "<file_sep>", "<filename>",
                    "<gh_stars>", "<jupyter_code>"]
UNICODE = ["café", "naïve", "Ünïcödé", "façade", "résumé", "Ångström", "jalapeño", "Œuvre", "ß", "e\u0301",
           "😀", "👍🏽", "👨‍👩‍👧‍👦", "🇯🇵", "1️⃣", "🙈🙉🙊", "你好，世界。", "日本語のテキスト", "한국어 텍스트", "漢字かな交じり文",
           "Ελληνικά", "русский", "עברית", "العربية", "हिन्दी", "ไทย", "\u00a0", "\u3000", "\u200b", "\ufeff"]
WHITESPACE = [" " * k for k in (2, 3, 5, 8, 16)] + ["\t", "\t\t", "\n", "\n\n", "\n\n\n", "\r\n", " \n ", "\t \n"]


def varied_texts(n: int, seed: int = 0) -> list[str]:
    """n texts, the same on every run: runtime_fixtures' hand-written cases, then code excerpts,
    prose with accents/emoji/CJK mixed in, numbers, chat-formatted turns, whitespace runs and
    random mixes of pieces at the tokenizer's regex edges, special-token text included."""
    rng = random.Random(seed)
    code = [line for module in (textwrap, json.decoder, random) for line in inspect.getsource(module).splitlines()]
    words = " ".join(inspect.getdoc(m) or "" for m in (json, textwrap, random, inspect, math)).split()
    pieces = FUZZ_PIECES + SMOLLM2_SPECIALS + UNICODE + WHITESPACE

    def prose() -> str:
        out = [rng.choice(words) for _ in range(rng.randint(3, 30))]
        for _ in range(rng.randint(0, 4)):
            out.insert(rng.randrange(len(out) + 1), rng.choice(UNICODE))
        return " ".join(out)

    def kind(i: int) -> str:
        if i % 6 == 0:
            start = rng.randrange(len(code))
            return "\n".join(code[start:start + rng.randint(1, 12)])
        if i % 6 == 1:
            return prose()
        if i % 6 == 2:
            numbers = [str(rng.randint(0, 10 ** rng.randint(1, 12))), f"{rng.uniform(-1e4, 1e4):.{rng.randint(0, 6)}f}",
                       f"{rng.randint(1900, 2100)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}", "3.14159", "1,000,000"]
            return " ".join(rng.choice(numbers) for _ in range(rng.randint(1, 6))) + rng.choice(["", ".", "%", " kg"])
        if i % 6 == 3:
            role = rng.choice(["system", "user", "assistant"])
            return f"<|im_start|>{role}\n{prose()}<|im_end|>\n" + rng.choice(["", "<|im_start|>assistant\n"])
        if i % 6 == 4:
            return "".join(rng.choice(WHITESPACE) + rng.choice(words) for _ in range(rng.randint(1, 10)))
        return "".join(rng.choice(pieces) for _ in range(rng.randint(1, 40)))

    texts = list(TEXTS)
    while len(texts) < n:
        texts.append(kind(len(texts)))
    return texts


def js_encode(jobs: list[dict]) -> list[dict]:
    """kiln's runtime tokenizer in one Node process: per job, ids with and without special tokens."""
    proc = subprocess.run([toolchain.find_tool("node"), str(HARNESS / "node_tokenize.mjs"), str(KILN_MJS)],
                          input=json.dumps(jobs), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


# ----------------------------------------------------------------------------------- tests


def test_tokenizer_ids_equal_transformers(smollm2_gguf, tiny_gguf, tiny_sentencepiece_gguf, loaded, tmp_path, report):
    """kiln's JS tokenizer on the GGUF-derived tokenizer.json == AutoTokenizer(gguf_file=) ids, for
    SmolLM2's byte-level BPE and for tiny byte-level and sentencepiece vocabularies that add BOS."""
    from transformers import AutoTokenizer

    files = (smollm2_gguf, tiny_gguf, tiny_sentencepiece_gguf)
    texts = varied_texts(TOKENIZER_TEXTS)
    assert len(set(texts)) > 0.95 * len(texts)
    jobs, expected = [], []
    for gguf_path in files:
        out = tmp_path / gguf_path.stem
        out.mkdir()
        loaded(gguf_path).write_tokenizer_files(out)
        reference = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        jobs.append({"tokenizer_json": str(out / "tokenizer.json"),
                     "tokenizer_config": str(out / "tokenizer_config.json"), "texts": texts})
        expected.append({"ids": [reference.encode(t) for t in texts],
                         "ids_no_special": [reference.encode(t, add_special_tokens=False) for t in texts],
                         "bos": reference.bos_token_id})
    results = js_encode(jobs)
    for gguf_path, got, want in zip(files, results, expected):
        for key in ("ids", "ids_no_special"):
            wrong = [(t, g, w) for t, g, w in zip(texts, got[key], want[key]) if g != w]
            assert not wrong, f"{gguf_path.name} {key}: {len(wrong)} texts differ, first: {wrong[0]}"
    for want in expected[1:]:  # the tiny tokenizers add BOS
        assert all(ids[:1] == [want["bos"]] for ids in want["ids"])
    tokens = sum(len(ids) for ids in expected[0]["ids"])
    report(f"\n[gguf tokenizer] {len(texts)} texts ({tokens} SmolLM2 tokens): JS ids == transformers' "
           f"for {', '.join(f.name for f in files)}")


def test_tensors_equal_transformers_weights(gguf_file, loaded):
    """Every tensor kiln reads (dequantized, q/k un-permuted) equals transformers' float32 weight."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32)
    state = model.state_dict()
    ckpt = loaded(gguf_file)
    tensors = ckpt.open_tensors()
    needed = {name for parts in ckpt.family.weight_sources(ckpt.model_config).values() for name in parts}
    assert set(tensors.names()) == needed
    differ = [name for name in tensors.names() if not np.array_equal(tensors.read(name), state[name].numpy())]
    assert not differ, f"{len(differ)} tensors differ from transformers', e.g. {differ[:3]}"
    if gguf_file.name.startswith("tiny"):
        read_types = {tensors.dtype(name) for name in tensors.names()}
        assert read_types == set(SUPPORTED_TYPES)


def test_config_equals_transformers(gguf_file, loaded):
    from transformers import AutoConfig

    ckpt = loaded(gguf_file)
    reference = AutoConfig.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name).to_dict()
    assert ckpt.model_config == LlamaConfig.from_hf(reference)
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        assert ckpt.hf_config[key] == reference[key], key
    if gguf_file.name.startswith("SmolLM2"):
        cfg = ckpt.model_config
        assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads,
                cfg.head_dim, cfg.vocab_size, cfg.tie_word_embeddings, cfg.rope_theta) == \
            (30, 576, 9, 3, 64, 49152, True, 100000.0)
        assert "<|im_start|>assistant" in ckpt.chat_template
        assert ckpt.tokenizer_config["eos_token"] == "<|im_end|>"


def test_reading_needs_no_torch(tiny_gguf, tmp_path):
    """The build's GGUF path (metadata, tokenizer conversion, tensors) runs with torch unimportable."""
    script = f"""
import sys
sys.modules["torch"] = None  # any `import torch` now fails
from pathlib import Path
from kiln.checkpoint.folder import load_checkpoint
ckpt = load_checkpoint(Path({str(tiny_gguf)!r}))
ckpt.write_tokenizer_files(Path({str(tmp_path)!r}))
tensors = ckpt.open_tensors()
print(sum(tensors.read(name).size for name in tensors.names()))
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=toolchain.REPO_ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "tokenizer.json").is_file() and int(proc.stdout.split()[-1]) > 0


@pytest.mark.parametrize("which, quantization", [("tiny", "q0f32"), ("carry", None)])
def test_tiny_gguf_bundle_greedy_equals_transformers(which, quantization, request, tmp_path, report):
    """A q0f32 bundle of the multi-type file, and a bundle at kiln build's default (q4f32_2: the
    grids kept) of the 4-bit file, run on WASM in Node, decode transformers' tokens."""
    import torch
    from greedy_runs import kiln_node_greedy, transformers_greedy
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kiln.bundle.build import BuildOptions, build_bundle

    tiny_gguf = request.getfixturevalue(f"{which}_gguf")
    bundle = tmp_path / "bundle"
    build_bundle(BuildOptions(checkpoint=tiny_gguf, out=bundle, quantization=quantization, targets=("wasm",),
                              context_window=TINY["context"], prefill_chunk=64), log=lambda *a, **k: None)
    assert json.loads((bundle / "kiln-config.json").read_text())["quantization"] == (quantization or "q4f32_2")
    assert {"tokenizer.json", "tokenizer_config.json", "kiln-config.json", "mlc-chat-config.json"} <= \
        {f.name for f in bundle.iterdir()}
    folder, name = tiny_gguf.parent, tiny_gguf.name
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    prompt = tok.apply_chat_template([{"role": "user", "content": "Why does glaze crack in a kiln?"}],
                                     add_generation_prompt=True, return_dict=True)["input_ids"]
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).eval()
    ref_tokens, ref_logits = transformers_greedy(model, prompt, 16)
    tokens, logits = kiln_node_greedy(bundle, prompt, 16)
    diff = np.abs(logits - ref_logits).max()
    report(f"\n[gguf {which} bundle, {quantization or 'default'}] prompt {len(prompt)} tokens, prefill max|diff| {diff:.1e}")
    assert diff <= 1e-3
    assert tokens == ref_tokens


# Every 4-bit type on its own in some matrix (fused ones included), plus Q8_0: the file shape of
# real Q4_0 / Q4_1 / Q4_K files, for the exact carry-over test.
CARRY_TYPES = {
    "token_embd.weight": "Q8_0", "output.weight": "Q4_1",
    "blk.0.attn_q.weight": "Q4_0", "blk.0.attn_k.weight": "Q4_0", "blk.0.attn_v.weight": "Q4_0",
    "blk.0.attn_output.weight": "Q4_1", "blk.0.ffn_gate.weight": "Q4_K", "blk.0.ffn_up.weight": "Q4_K",
    "blk.0.ffn_down.weight": "Q8_0",
    "blk.1.attn_q.weight": "Q4_1", "blk.1.attn_k.weight": "Q4_1", "blk.1.attn_v.weight": "Q4_1",
    "blk.1.attn_output.weight": "Q4_0", "blk.1.ffn_gate.weight": "Q4_1", "blk.1.ffn_up.weight": "Q4_1",
    "blk.1.ffn_down.weight": "Q4_K",
}
# The kiln format each kind of matrix gets (gguf_blocks.GRID_FORMATS, covering_format for mixes).
CARRIED_AS = {"Q4_0": "int4 zero 8/32 f16", "Q4_1": "int4+min/32 f16", "Q4_K": "int4+min/32 f32",
              "Q8_0": "int8 zero 128/32 f16", "Q4_0+Q4_1+Q5_0": "int8+min/32 f16",
              "Q4_K+Q8_0": "int8+min/32 f32", "Q5_1": "int8+min/32 f16", "Q6_K": "int8 zero 128/16 f32",
              "Q4_K+Q5_K+Q6_K": "int8+min/16 f32"}


@pytest.fixture(scope="module")
def carry_gguf(tmp_path_factory):
    return write_tiny_gguf(tmp_path_factory.mktemp("carry_gguf") / "tiny-carry.gguf", types=CARRY_TYPES, seed=1)


@pytest.mark.parametrize("which", ["carry", "tiny"])
def test_q4f32_2_weights_equal_the_gguf_weights(which, carry_gguf, tiny_gguf, loaded, tmp_path, report):
    """At q4f32_2 every quantized GGUF matrix keeps its grid: the bundle's parameters, dequantized
    as the kernels do (quantize.unpack), equal the file's dequantized (un-permuted) weights bit for
    bit, for Q4_0, Q4_1, Q4_K and Q8_0 each in its own format (`carry`) and for fused mixes of every
    type (`tiny`); a matrix with a float part is quantized from its values instead."""
    from kiln.weights.convert import convert_weights
    from kiln.kernels.model_module import build_model_module
    from kiln.weights.quantize import get_quantization, unpack
    from kiln.weights.tensor_cache import read_tensor_cache
    from kiln.kernels.wasm_library import make_target
    from kiln.weights.plan import matrix_sources, plan_formats

    ckpt = loaded(carry_gguf if which == "carry" else tiny_gguf)
    quant = get_quantization("q4f32_2")
    tensors = ckpt.open_tensors()
    plan = plan_formats(ckpt, quant, tensors)
    sizes = dict(context_window=64, prefill_chunk=16, with_sampling=False)
    module = build_model_module(ckpt.family, ckpt.model_config, quant, make_target("wasm"), formats=plan.formats, **sizes)
    plain = build_model_module(ckpt.family, ckpt.model_config, get_quantization("q0f32"), make_target("wasm"), **sizes)
    cache = convert_weights(ckpt, module.params, {p["name"]: p["shape"] for p in plain.params}, quant, tmp_path,
                            formats=plan.formats)
    weights = read_tensor_cache(tmp_path)
    carried, over_budget = {}, []
    for prefix, parts in matrix_sources(ckpt, tensors).items():
        source = "+".join(sorted({tensors.dtype(p) for p in parts}))
        if prefix not in plan.formats.per_matrix:
            assert any(tensors.dtype(p) in ("F32", "F16", "BF16") for p in parts), prefix
            continue
        fmt = plan.formats(prefix)
        params = {suffix: weights[f"{prefix}.{suffix}"] for suffix in fmt.param_shapes(1, 1)}
        expected = np.concatenate([tensors.read(p) for p in parts])
        got = unpack(params, fmt, expected.shape[1])
        assert got.dtype == np.float32 and np.array_equal(got, expected), f"{prefix} ({source})"
        carried[source] = fmt.describe()
        if sum(a.nbytes for a in params.values()) > sum(tensors.nbytes(p) for p in parts):
            over_budget.append(source)
    assert carried == {k: v for k, v in CARRIED_AS.items() if k in carried}
    if which == "carry":
        assert set(carried) == {"Q4_0", "Q4_1", "Q4_K", "Q8_0"}
        # No more bytes than the file, except Q4_K's float32 sub-block scales (6.0 bits vs 4.5).
        assert set(over_budget) == {"Q4_K"}, over_budget
    report(f"\n[gguf carry-over, {which}] {cache['metadata']['BitsPerParam']:.2f} bits/param; "
           + ", ".join(f"{k} -> {v}" for k, v in sorted(carried.items())))


def test_unpermute_inverts_llama_cpp_permutation():
    """llama.cpp's converter reorders q/k rows as reshape(heads, 2, half, ...).swapaxes(1, 2)."""
    rng = np.random.default_rng(0)
    for heads, head_dim, shape in ((4, 64, (256, 32)), (3, 16, (48,))):
        weight = rng.normal(size=shape).astype(np.float32)
        permuted = weight.reshape(heads, 2, head_dim // 2, *shape[1:]).swapaxes(1, 2).reshape(shape)
        assert np.array_equal(unpermute_rotary_rows(permuted, heads), weight)


@pytest.mark.parametrize("theta, head_dim, factor", [(500000.0, 128, 8.0), (500000.0, 64, 32.0)])
def test_llama3_rope_scaling_from_rope_freqs(theta, head_dim, factor, tmp_path):
    """Llama 3.1/3.2 files store their RoPE scaling only as per-frequency factors (rope_freqs);
    kiln recovers parameters that reproduce them (transformers drops them)."""
    published = {"rope_type": "llama3", "factor": factor, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                 "original_max_position_embeddings": 8192}
    factors = llama3_frequency_factors(published, theta, head_dim)
    fitted = llama3_rope_scaling(tmp_path / "x.gguf", factors, theta, head_dim)
    assert fitted["factor"] == factor
    assert fitted["low_freq_factor"] == pytest.approx(1.0) and fitted["high_freq_factor"] == pytest.approx(4.0)
    assert np.allclose(llama3_frequency_factors(fitted, theta, head_dim), factors, rtol=1e-9)
    assert llama3_rope_scaling(tmp_path / "x.gguf", np.ones(head_dim // 2), theta, head_dim) is None


# ------------------------------------------------------------------------------- errors


def _build_error(capsys, checkpoint, tmp_path) -> str:
    """Runs `kiln build` on `checkpoint`; asserts exit code 1, one line on stderr, nothing written."""
    from kiln.cli import main

    out = tmp_path / "bundle"
    code = main(["build", str(checkpoint), "--quantization", "q4f32_1", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1
    assert len(err.strip().splitlines()) == 1, err
    assert not out.exists() and not list(tmp_path.glob(".bundle*"))
    return err.strip()


def test_not_a_gguf_file(tmp_path, capsys):
    bad = tmp_path / "model.gguf"
    bad.write_text("this is a text file, not a model\n")
    err = _build_error(capsys, bad, tmp_path)
    assert err.startswith("error[checkpoint]: ") and "not a GGUF file" in err


def test_truncated_gguf(tiny_gguf, tmp_path, capsys):
    data = tiny_gguf.read_bytes()
    for keep in (len(data) // 2, 64):  # cut in the tensor data, and in the metadata
        cut = tmp_path / f"cut-{keep}.gguf"
        cut.write_bytes(data[:keep])
        err = _build_error(capsys, cut, tmp_path)
        assert err.startswith("error[checkpoint]: ") and "truncated or corrupt" in err


def test_unsupported_architecture(tmp_path, capsys):
    other = write_tiny_gguf(tmp_path / "other.gguf", arch="gpt2")
    err = _build_error(capsys, other, tmp_path)
    assert err.startswith("error[unsupported]: ") and "'gpt2'" in err and "architecture llama" in err


def test_zero_heads(tmp_path, capsys):
    # Before: accepted as a config, failing later inside the compiler.
    zero = write_tiny_gguf(tmp_path / "zero-heads.gguf", heads=0)
    err = _build_error(capsys, zero, tmp_path)
    assert err.startswith("error[checkpoint]: zero-heads.gguf's metadata llama.attention.head_count "
                          "(config field num_attention_heads) is 0"), err
    assert "download or convert it again" in err


def test_unsupported_tensor_type(tmp_path, capsys):
    q2 = write_tiny_gguf(tmp_path / "q2k.gguf", types={"blk.0.ffn_up.weight": "Q2_K"})
    err = _build_error(capsys, q2, tmp_path)
    assert err.startswith("error[unsupported]: ") and "Q2_K" in err and "blk.0.ffn_up.weight" in err
    assert all(name in err for name in SUPPORTED_TYPES)
