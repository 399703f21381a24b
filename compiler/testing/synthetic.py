"""Seeded synthetic Hugging Face checkpoints of real architectures, made locally.

Each variant is a real `transformers` architecture (Llama, Mistral, Qwen2) with random weights,
a byte-level BPE tokenizer trained here on Python's own docstrings, and the family's chat format,
saved with `save_pretrained` into the folder a user would have after downloading the model.
Tests and benchmarks use them in place of hub checkpoints: nothing is fetched over the network.

    from kiln.testing.synthetic import make_checkpoint
    path = make_checkpoint("llama3-tiny", Path("/tmp/ckpt"))   # -> /tmp/ckpt

The same variant and seed give byte-identical files, whatever the process, hash seed or thread
count (tests/test_synthetic.py checks this on one machine).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from kiln.bundle.kiln_config import SYNTHETIC_MARK
from kiln.testing.chat_formats import ChatFormat, LLAMA2_CHAT, LLAMA3_CHAT, MISTRAL_CHAT, CHATML_CHAT

# Python's docstrings are the tokenizer's training text: present everywhere, fixed per Python
# version. Only modules whose members do not depend on the platform or on optional C libraries
# (ssl, hashlib's OpenSSL, ...) so that the corpus is the same on every machine.
CORPUS_MODULES = (
    "argparse", "ast", "base64", "bisect", "calendar", "collections", "configparser",
    "contextlib", "copy", "csv", "dataclasses", "datetime", "decimal", "difflib", "email.message",
    "enum", "fractions", "functools", "getopt", "gettext", "glob", "gzip", "heapq",
    "html.parser", "inspect", "io", "ipaddress", "itertools", "json", "logging", "math",
    "operator", "optparse", "pathlib", "pickle", "pprint", "queue", "random", "re", "sched",
    "shlex", "statistics", "string", "struct", "tarfile", "textwrap", "timeit", "tokenize",
    "traceback", "types", "typing", "unittest.case", "urllib.parse", "warnings", "weakref",
    "zipfile",
)


# --- variants -----------------------------------------------------------------------------

# Real head sizes (64 here, 128 for mistral-tiny, as Llama 3.2 1B and Mistral 7B have) around a
# small hidden size: kernels are specialised per head size, and 16 hid a WebGPU failure (see
# compiler/kernels/schedules.py, inline_let_exprs).
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, head_dim=64, hidden_act="silu")


@dataclass(frozen=True)
class Variant:
    description: str
    architecture: str          # "llama" | "mistral" | "qwen2": the transformers model family
    config: dict               # config class kwargs (token ids are filled in from the tokenizer)
    chat: ChatFormat
    tokenizer_vocab: int       # <= config["vocab_size"]; may be smaller when the corpus runs out
    dtype: str                 # storage dtype of the safetensors
    # How text is split before BPE: "gpt2" (ByteLevel's built-in regex) or "qwen2" (NFC, then
    # Qwen2's regex). transformers 5 loads every qwen2 model's tokenizer as Qwen2Tokenizer, which
    # rebuilds the qwen2 pipeline around tokenizer.json's vocab whatever that file says, so a
    # qwen2 checkpoint must have it for transformers and tokenizer.json to give the same ids.
    pretokenizer: str = "gpt2"
    max_shard_size: str | None = None
    # Write config.json the way checkpoints published with transformers 4.x have it (rope_theta
    # and rope_scaling at top level, torch_dtype) rather than 5.x's rope_parameters and dtype:
    # both forms are out there, so the tiny variants cover both.
    legacy_config: bool = False
    # Keys written into config.json as published checkpoints have them although transformers 5
    # would normalize them away on save.
    config_json_extra: dict = field(default_factory=dict)
    # Weight scale (see _randomize): large enough that the layers, not the embedding, decide the
    # next token, so that greedy decoding of a random model varies and depends on attention.
    init_gain: float = 2.0


VARIANTS: dict[str, Variant] = {
    "llama2-tiny": Variant(
        description="Llama 2 shape: multi-head attention, untied embeddings, [INST]/<<SYS>> chat, "
                    "float32",
        architecture="llama",
        config=dict(TINY, vocab_size=512, num_attention_heads=4, num_key_value_heads=4,
                    max_position_embeddings=256, rms_norm_eps=1e-5, tie_word_embeddings=False,
                    rope_parameters=dict(rope_type="default", rope_theta=10000.0)),
        chat=LLAMA2_CHAT, tokenizer_vocab=512, dtype="float32"),
    "llama3-tiny": Variant(
        description="Llama 3.1 shape: GQA 4/2, llama3 rope scaling, tied embeddings, header chat, "
                    "bfloat16 in 2+ shards",
        architecture="llama",
        config=dict(TINY, vocab_size=640, num_attention_heads=4, num_key_value_heads=2,
                    max_position_embeddings=512, rms_norm_eps=1e-5, tie_word_embeddings=True,
                    # original_max_position_embeddings 64 with head_dim 64 puts rotary pairs in all
                    # three llama3 regimes: kept (wavelength < 16), blended, and divided by factor.
                    rope_parameters=dict(rope_type="llama3", rope_theta=500000.0, factor=8.0,
                                         low_freq_factor=1.0, high_freq_factor=4.0,
                                         original_max_position_embeddings=64)),
        chat=LLAMA3_CHAT, tokenizer_vocab=640, dtype="bfloat16", max_shard_size="100KB",
        legacy_config=True),
    "mistral-tiny": Variant(
        description="Mistral shape: GQA 4/2, head_dim 128, sliding window 16, [INST] chat, float16",
        architecture="mistral",
        # 512 positions: the runtime tests build it with a 512-token context, which kiln build
        # refuses beyond max_position_embeddings.
        config=dict(TINY, head_dim=128, vocab_size=512, num_attention_heads=4, num_key_value_heads=2,
                    max_position_embeddings=512, rms_norm_eps=1e-5, tie_word_embeddings=False,
                    sliding_window=16, rope_parameters=dict(rope_type="default", rope_theta=10000.0)),
        chat=MISTRAL_CHAT, tokenizer_vocab=512, dtype="float16"),
    "qwen2-tiny": Variant(
        description="Qwen2 shape: GQA 4/2, q/k/v biases, untied embeddings, ChatML, no bos, "
                    "embedding rows beyond the tokenizer, float32",
        architecture="qwen2",
        config=dict(TINY, vocab_size=1024, num_attention_heads=4, num_key_value_heads=2,
                    max_position_embeddings=256, rms_norm_eps=1e-6, tie_word_embeddings=False,
                    use_sliding_window=False,
                    rope_parameters=dict(rope_type="default", rope_theta=1000000.0)),
        chat=CHATML_CHAT, tokenizer_vocab=1000, pretokenizer="qwen2", dtype="float32",
        legacy_config=True,
        # Qwen2.5 checkpoints carry a sliding_window that is off (use_sliding_window false); a
        # compiler that applies it anyway diverges from transformers past 16 tokens.
        config_json_extra={"sliding_window": 16}),
    "smollm-135m": Variant(
        description="SmolLM2-135M shape: 30 layers, hidden 576, GQA 9/3, tied embeddings, ChatML, "
                    "bfloat16 (benchmarks and site builds)",
        architecture="llama",
        config=dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                    num_attention_heads=9, num_key_value_heads=3, head_dim=64, hidden_act="silu",
                    max_position_embeddings=8192, rms_norm_eps=1e-5, tie_word_embeddings=True,
                    rope_parameters=dict(rope_type="default", rope_theta=100000.0)),
        # The docstring corpus runs out of merges near 11k tokens; the model keeps 49152 rows.
        chat=CHATML_CHAT, tokenizer_vocab=49152, dtype="bfloat16"),
}


# --- tokenizer ----------------------------------------------------------------------------

def corpus() -> list[str]:
    """Docstrings of CORPUS_MODULES and their public members, in a fixed order."""
    if sys.flags.optimize >= 2:
        # -OO strips docstrings: the tokenizer would silently be trained on nothing.
        raise RuntimeError("synthetic tokenizers need docstrings; run Python without -OO")
    texts = []
    with warnings.catch_warnings():  # typing.io and typing.re warn when looked at
        warnings.simplefilter("ignore", DeprecationWarning)
        for name in CORPUS_MODULES:
            module = importlib.import_module(name)
            texts.append(inspect.getdoc(module) or "")
            for attr, obj in sorted(vars(module).items()):
                if attr.startswith("_") or getattr(obj, "__module__", None) != name:
                    continue  # private, or imported from elsewhere
                texts.append(inspect.getdoc(obj) or "")
                if inspect.isclass(obj):
                    texts += [inspect.getdoc(member) or ""
                              for member_name, member in sorted(vars(obj).items())
                              if not member_name.startswith("_") and callable(member)]
    return [text for text in texts if text]


@functools.lru_cache(maxsize=None)
def _tokenizer_json(chat: ChatFormat, vocab_size: int, pretokenizer: str) -> str:
    """A byte-level BPE trained on corpus() with chat's special tokens, as tokenizer.json text.

    Cached as text (not as a Tokenizer object, which is mutable) so that each checkpoint gets a
    fresh copy and several variants of one family train once.
    """
    from tokenizers import (Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers,
                            processors, trainers)

    tokenizer = Tokenizer(models.BPE())
    if pretokenizer == "qwen2":
        # Imported, not copied: it must be exactly what transformers' Qwen2Tokenizer uses.
        from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

        tokenizer.normalizer = normalizers.NFC()
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    else:
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    first = chat.special_tokens if chat.specials_first else ()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(chat.special_tokens) + len(first), special_tokens=list(first),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(corpus(), trainer)
    tokenizer.add_special_tokens(list(chat.special_tokens))  # no-op for those already added first
    if chat.add_bos:
        bos_id = tokenizer.token_to_id(chat.bos)
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{chat.bos} $A", pair=f"{chat.bos} $A {chat.bos} $B",
            special_tokens=[(chat.bos, bos_id)])
    else:
        # An explicit post-processor: transformers would otherwise install its own template.
        tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    return tokenizer.to_str()


def make_tokenizer(spec: Variant):
    """The variant's tokenizer as a transformers PreTrainedTokenizerFast with its chat template."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    chat = spec.chat
    backend = Tokenizer.from_str(_tokenizer_json(chat, spec.tokenizer_vocab, spec.pretokenizer))
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=chat.bos, eos_token=chat.eos, pad_token=chat.pad,
        chat_template=chat.template, model_max_length=spec.config["max_position_embeddings"],
        clean_up_tokenization_spaces=False)


# --- model ----------------------------------------------------------------------------------

def _model_classes(architecture: str):
    import transformers as tf
    return {"llama": (tf.LlamaConfig, tf.LlamaForCausalLM),
            "mistral": (tf.MistralConfig, tf.MistralForCausalLM),
            "qwen2": (tf.Qwen2Config, tf.Qwen2ForCausalLM)}[architecture]


def _randomize(model, gain: float, seed: int, n_tokens: int) -> None:
    """Overwrite every parameter with seeded uniform noise.

    Matrices and embeddings get standard deviation gain / sqrt(fan_in), so that every projection's
    output has a standard deviation near `gain` whatever the width. With transformers' 0.02 the
    residual stream stays close to the token's own embedding: a tied-embedding model then predicts
    its input token forever, and logits spread so little (std ~0.15) that float16 rounding flips
    the argmax; with gain 2 the logits' standard deviation is about 2.

    Uniform draws from a dedicated generator rather than transformers' init: torch's CPU normal_
    goes through vectorized log/sin/cos whose last bits may differ between CPUs, and the
    transformers init could change between releases; uniform draws are integer-to-float
    arithmetic, the same on any CPU. Norm weights and biases get noise too (transformers sets
    them to 1 and 0) so that a compiler that drops them gives visibly different logits.
    """
    import torch

    generator = torch.Generator().manual_seed(seed)

    def uniform(shape, low, high):
        return torch.rand(shape, generator=generator, dtype=torch.float32) * (high - low) + low

    def noise(shape, std):
        half_width = std * 3 ** 0.5  # U(-a, a) has standard deviation a / sqrt(3)
        return uniform(shape, -half_width, half_width)

    with torch.no_grad():
        for name, param in model.named_parameters():  # a tied lm_head is not listed twice
            if name.endswith("norm.weight"):
                param.copy_(uniform(param.shape, 0.5, 1.5))
            elif param.dim() == 1:  # biases: big enough that dropping one changes the logits
                param.copy_(noise(param.shape, gain / 2))
            else:  # (out, in) projections and (vocab, hidden) embeddings
                param.copy_(noise(param.shape, gain / param.shape[-1] ** 0.5))
        # Output rows past the tokenizer's last id stand for untrained padding: small, so that
        # they are never the argmax or inside top-p (their ids decode to nothing), but not zero,
        # so that a quantizer sees no all-zero groups that trained checkpoints do not have.
        model.get_output_embeddings().weight[n_tokens:] *= 0.01


def _edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def _match_published_files(spec: Variant, out_dir: Path) -> None:
    """Make what save_pretrained wrote look like the files of a downloaded checkpoint."""

    def edit_config(config):
        if spec.legacy_config:  # transformers 4.x key names
            rope = dict(config.pop("rope_parameters"))
            config["rope_theta"] = rope.pop("rope_theta")
            config["rope_scaling"] = None if rope["rope_type"] == "default" else rope
            config["torch_dtype"] = config.pop("dtype")
        config.update(spec.config_json_extra)

    def edit_tokenizer_config(tokenizer_config):
        # transformers 5 names its own backend class, which 4.x and JS libraries do not know;
        # published byte-level BPE checkpoints say PreTrainedTokenizerFast (5.x maps it back).
        tokenizer_config["tokenizer_class"] = "PreTrainedTokenizerFast"

    _edit_json(out_dir / "config.json", edit_config)
    _edit_json(out_dir / "tokenizer_config.json", edit_tokenizer_config)
    for weights in out_dir.glob("*.safetensors"):
        weights.chmod(0o644)  # save_pretrained makes them owner-only; downloads are not


def _token_ids(chat: ChatFormat, tokenizer) -> dict:
    """config.json's token id fields for `chat`'s tokenizer."""
    stop_ids = tokenizer.convert_tokens_to_ids(list(chat.stop_tokens))
    return dict(
        # Qwen2's tokenizer has no bos, but its configs name <|endoftext|> (its pad) as bos.
        bos_token_id=tokenizer.convert_tokens_to_ids(chat.bos or chat.pad),
        eos_token_id=stop_ids[0] if len(stop_ids) == 1 else stop_ids,
        pad_token_id=tokenizer.convert_tokens_to_ids(chat.pad))


def make_config(variant: str):
    """(transformers config, tokenizer) of `variant`; the config's token ids are the tokenizer's."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown synthetic variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    spec = VARIANTS[variant]
    tokenizer = make_tokenizer(spec)
    assert len(tokenizer) <= spec.config["vocab_size"], (len(tokenizer), spec.config["vocab_size"])
    config = _model_classes(spec.architecture)[0](**spec.config, **_token_ids(spec.chat, tokenizer))
    return config, tokenizer


def make_checkpoint(variant: str, out_dir: Path, *, seed: int = 0) -> Path:
    """Write the Hugging Face checkpoint folder of `variant` into out_dir and return out_dir."""
    config, tokenizer = make_config(variant)
    return _write_checkpoint(VARIANTS[variant], config, tokenizer, Path(out_dir), seed)


CHAT_FORMATS = {chat.name: chat for chat in (LLAMA2_CHAT, LLAMA3_CHAT, MISTRAL_CHAT, CHATML_CHAT)}


def make_checkpoint_from_config(config_json: dict, out_dir: Path, *, chat: str, tokenizer_vocab: int | None = None,
                                seed: int = 0) -> Path:
    """A checkpoint whose config.json is `config_json` (say a published one with fewer layers):
    written back field for field, except the token ids, which name `chat`'s tokens in a tokenizer
    trained here (`tokenizer_vocab` ids, at most vocab_size). Random weights in its torch_dtype."""
    architecture = config_json["model_type"]
    spec = Variant(
        description=f"a published {architecture} config", architecture=architecture, config=config_json,
        chat=CHAT_FORMATS[chat], tokenizer_vocab=tokenizer_vocab or config_json["vocab_size"],
        dtype=config_json.get("torch_dtype") or config_json.get("dtype") or "float32",
        pretokenizer="qwen2" if architecture == "qwen2" else "gpt2")
    tokenizer = make_tokenizer(spec)
    assert len(tokenizer) <= config_json["vocab_size"], (len(tokenizer), config_json["vocab_size"])
    ids = _token_ids(spec.chat, tokenizer)
    config = _model_classes(architecture)[0].from_dict({**config_json, **ids})
    out_dir = _write_checkpoint(spec, config, tokenizer, Path(out_dir), seed)
    published = {**config_json, **{k: v for k, v in ids.items() if k in config_json}, SYNTHETIC_MARK: True}
    (out_dir / "config.json").write_text(json.dumps(published, indent=2, sort_keys=True) + "\n")
    return out_dir


def _write_checkpoint(spec: Variant, config, tokenizer, out_dir: Path, seed: int) -> Path:
    import torch
    from transformers import GenerationConfig

    torch.manual_seed(seed)
    # Marked in config.json so that bundles and the demo site can say the weights are random.
    setattr(config, SYNTHETIC_MARK, True)
    model = _model_classes(spec.architecture)[1](config).eval()
    _randomize(model, spec.init_gain, seed, len(tokenizer))
    model = model.to(getattr(torch, spec.dtype))
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id, do_sample=True, temperature=0.7, top_p=0.9)

    out_dir.mkdir(parents=True, exist_ok=True)
    shard_args = {"max_shard_size": spec.max_shard_size} if spec.max_shard_size else {}
    model.save_pretrained(out_dir, **shard_args)
    # save_jinja_files=False: keep chat_template inside tokenizer_config.json, where checkpoints of
    # these families have it (transformers 5 would write chat_template.jinja instead).
    tokenizer.save_pretrained(out_dir, save_jinja_files=False)
    _match_published_files(spec, out_dir)
    return out_dir
