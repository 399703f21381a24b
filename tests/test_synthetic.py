"""Synthetic checkpoints (compiler/testing/synthetic.py): they load back with transformers' Auto classes,
have the architecture features each variant promises, tokenize and render chats as their family
does, generate varied text, and are byte-identical when made again with the same seed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
import torch
from jinja2.exceptions import TemplateError
from safetensors import safe_open
from tokenizers import Tokenizer
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from kiln.testing.synthetic import make_checkpoint, make_config

REPO = Path(__file__).resolve().parent.parent
TINY = ["llama2-tiny", "llama3-tiny", "mistral-tiny", "qwen2-tiny"]

ARCHITECTURE = {"llama2-tiny": "LlamaForCausalLM", "llama3-tiny": "LlamaForCausalLM",
                "mistral-tiny": "MistralForCausalLM", "qwen2-tiny": "Qwen2ForCausalLM"}
STORED_DTYPE = {"llama2-tiny": "F32", "llama3-tiny": "BF16", "mistral-tiny": "F16", "qwen2-tiny": "F32"}
TORCH_DTYPE = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}
TIED = {"llama2-tiny": False, "llama3-tiny": True, "mistral-tiny": False, "qwen2-tiny": False}
# Template markers, each of which must be one token.
MARKERS = {
    "llama2-tiny": ["<s>", "</s>", "[INST]", "[/INST]", "<<SYS>>", "<</SYS>>"],
    "llama3-tiny": ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                    "<|eot_id|>"],
    "mistral-tiny": ["<s>", "</s>", "[INST]", "[/INST]"],
    "qwen2-tiny": ["<|im_start|>", "<|im_end|>", "<|endoftext|>"],
}
BOS = {"llama2-tiny": "<s>", "llama3-tiny": "<|begin_of_text|>", "mistral-tiny": "<s>", "qwen2-tiny": None}

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Name a colour."},
]
RENDERED = {
    "llama2-tiny": "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi there [/INST] Hello! </s>"
                   "<s>[INST] Name a colour. [/INST]",
    "llama3-tiny": "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
                   "<|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>"
                   "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
                   "<|start_header_id|>user<|end_header_id|>\n\nName a colour.<|eot_id|>"
                   "<|start_header_id|>assistant<|end_header_id|>\n\n",
    "mistral-tiny": "<s>[INST] Be brief.\n\nHi there [/INST]Hello!</s>[INST] Name a colour. [/INST]",
    "qwen2-tiny": "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n"
                  "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nName a colour.<|im_end|>\n"
                  "<|im_start|>assistant\n",
}
# Digits, accents, a combining character, CRLF, runs of spaces and tabs, an emoji.
TEXT = "Version 12345 of the café's naïve parser\r\n\n  returns  None\tquickly; cafe\u0301 🙂 done."


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("synthetic")
    return {variant: make_checkpoint(variant, root / variant, seed=0) for variant in TINY}


def read_json(folder: Path, name: str) -> dict:
    return json.loads((folder / name).read_text())


def stored_tensors(folder: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(path, framework="pt") as f:
            tensors.update({name: f.get_tensor(name) for name in f.keys()})
    return tensors


def stored_dtypes(folder: Path) -> set[str]:
    dtypes = set()
    for path in folder.glob("*.safetensors"):
        with safe_open(path, framework="pt") as f:
            dtypes |= {f.get_slice(name).get_dtype() for name in f.keys()}
    return dtypes


def file_bytes(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


# --- the folder and how transformers reads it ------------------------------------------------

@pytest.mark.parametrize("variant", TINY)
def test_folder_has_the_files_of_a_download(folders, variant):
    folder = folders[variant]
    names = {path.name for path in folder.iterdir()}
    assert {"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"} <= names
    assert "chat_template.jinja" not in names  # the template lives in tokenizer_config.json
    assert ("model.safetensors" in names) != ("model.safetensors.index.json" in names)

    config = read_json(folder, "config.json")
    assert config["architectures"] == [ARCHITECTURE[variant]]
    tokenizer_config = read_json(folder, "tokenizer_config.json")
    assert tokenizer_config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert "{%" in tokenizer_config["chat_template"]
    assert tokenizer_config["bos_token"] == BOS[variant] and tokenizer_config["eos_token"]

    generation = read_json(folder, "generation_config.json")
    assert generation["eos_token_id"] == config["eos_token_id"]
    assert generation["bos_token_id"] == config["bos_token_id"]
    assert generation["do_sample"] is True and 0 < generation["temperature"] < 1 and 0 < generation["top_p"] < 1


@pytest.mark.parametrize("variant", TINY)
def test_loads_with_auto_classes_in_its_stored_dtype(folders, variant):
    folder = folders[variant]
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert type(model).__name__ == ARCHITECTURE[variant]
    assert stored_dtypes(folder) == {STORED_DTYPE[variant]}
    assert model.dtype == TORCH_DTYPE[STORED_DTYPE[variant]]  # from `dtype` or the older `torch_dtype`
    assert len(tokenizer) <= model.config.vocab_size
    assert model.config.tie_word_embeddings is TIED[variant]
    tensors = stored_tensors(folder)
    assert ("lm_head.weight" in tensors) is not TIED[variant]
    # Norm weights are random too, so that a compiler that ignores them is caught.
    norms = [tensor for name, tensor in tensors.items() if name.endswith("norm.weight")]
    assert len(norms) == 2 * 2 + 1 and all(norm.float().std() > 0.1 for norm in norms)
    eos = model.config.eos_token_id
    assert tokenizer.eos_token_id == (eos[0] if isinstance(eos, list) else eos)


# --- architecture features --------------------------------------------------------------------

def test_llama2_is_multi_head_with_default_rope(folders):
    config = AutoConfig.from_pretrained(folders["llama2-tiny"])
    assert config.num_key_value_heads == config.num_attention_heads == 4
    assert config.rope_parameters == {"rope_type": "default", "rope_theta": 10000.0}
    assert "rope_parameters" in read_json(folders["llama2-tiny"], "config.json")  # transformers 5 keys


def test_llama3_has_gqa_llama3_rope_scaling_and_shards(folders):
    folder = folders["llama3-tiny"]
    on_disk = read_json(folder, "config.json")
    # Written the way Llama 3.1 checkpoints have it (transformers 4 keys).
    assert on_disk["rope_theta"] == 500000.0 and "rope_parameters" not in on_disk
    assert on_disk["rope_scaling"] == {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                       "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
    config = AutoConfig.from_pretrained(folder)
    assert (config.num_attention_heads, config.num_key_value_heads) == (4, 2)
    assert config.rope_parameters["rope_type"] == "llama3" and config.rope_parameters["rope_theta"] == 500000.0

    # The scaling must change some rotary frequencies and keep others, or it would test nothing.
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    scaled, _ = ROPE_INIT_FUNCTIONS["llama3"](config, "cpu")
    plain = 1.0 / 500000.0 ** (torch.arange(0, 64, 2, dtype=torch.float32) / 64)
    changed = ~torch.isclose(scaled, plain)
    assert changed.any() and not changed.all()

    index = read_json(folder, "model.safetensors.index.json")
    shards = sorted(path.name for path in folder.glob("*.safetensors"))
    assert len(shards) >= 2 and "model.safetensors" not in shards
    assert sorted(set(index["weight_map"].values())) == shards
    assert set(index["weight_map"]) == set(stored_tensors(folder))

    tokenizer = AutoTokenizer.from_pretrained(folder)
    stops = tokenizer.convert_tokens_to_ids(["<|eot_id|>", "<|end_of_text|>"])
    assert read_json(folder, "generation_config.json")["eos_token_id"] == stops


def test_mistral_sliding_window_changes_logits_past_the_window(folders):
    folder = folders["mistral-tiny"]
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    full = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, sliding_window=None)
    assert model.config.sliding_window == 16
    assert (model.config.num_attention_heads, model.config.num_key_value_heads) == (4, 2)
    ids = AutoTokenizer.from_pretrained(folder)(TEXT * 2, return_tensors="pt")["input_ids"]
    assert ids.shape[1] > 2 * 16
    with torch.no_grad():
        windowed, everything = model(ids).logits[0], full(ids).logits[0]
    torch.testing.assert_close(windowed[:16], everything[:16])
    assert (windowed[-1] - everything[-1]).abs().max() > 0.1


def test_qwen2_has_nonzero_qkv_biases_and_an_inactive_window(folders):
    folder = folders["qwen2-tiny"]
    tensors = stored_tensors(folder)
    for layer in range(2):
        for projection in ("q_proj", "k_proj", "v_proj"):
            bias = tensors[f"model.layers.{layer}.self_attn.{projection}.bias"]
            assert bias.count_nonzero() == bias.numel() and bias.abs().mean() > 0.1
        assert f"model.layers.{layer}.self_attn.o_proj.bias" not in tensors

    # Qwen2.5 configs carry a sliding_window that use_sliding_window turns off.
    on_disk = read_json(folder, "config.json")
    assert on_disk["sliding_window"] == 16 and on_disk["use_sliding_window"] is False
    assert AutoConfig.from_pretrained(folder).sliding_window is None

    # Embedding rows past the tokenizer (like Qwen's padded vocab) are never worth predicting.
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.bos_token is None and len(tokenizer) < on_disk["vocab_size"]
    lm_head = tensors["lm_head.weight"]
    assert lm_head[len(tokenizer):].abs().max() < lm_head[:len(tokenizer)].abs().max() / 10


def test_tiny_variants_have_real_head_sizes():
    # Kernels are specialised per head size; 16 hid a WebGPU build failure of Llama 3 (issue 9).
    head_dims = {variant: make_config(variant)[0].head_dim for variant in TINY}
    assert head_dims == {"llama2-tiny": 64, "llama3-tiny": 64, "mistral-tiny": 128, "qwen2-tiny": 64}


def test_smollm_135m_has_the_published_shape():
    config, tokenizer = make_config("smollm-135m")  # no weights: too big for a unit test
    assert (config.hidden_size, config.num_hidden_layers, config.intermediate_size) == (576, 30, 1536)
    assert (config.num_attention_heads, config.num_key_value_heads, config.vocab_size) == (9, 3, 49152)
    assert config.tie_word_embeddings and len(tokenizer) <= config.vocab_size
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    assert sum(p.numel() for p in model.parameters()) == 134_515_008


def test_unknown_variant_names_the_choices(tmp_path):
    with pytest.raises(ValueError, match="unknown synthetic variant 'gpt5'.*llama3-tiny"):
        make_checkpoint("gpt5", tmp_path)


# --- tokenizer and chat template ---------------------------------------------------------------

@pytest.mark.parametrize("variant", TINY)
def test_tokenizer_round_trips_and_matches_tokenizer_json(folders, variant):
    folder = folders[variant]
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = tokenizer(TEXT)["input_ids"]
    # transformers and the tokenizers library reading tokenizer.json give the same ids (the JS
    # runtime is held to the latter).
    assert ids == Tokenizer.from_file(str(folder / "tokenizer.json")).encode(TEXT).ids
    if BOS[variant]:
        assert ids[0] == tokenizer.convert_tokens_to_ids(BOS[variant])
    else:
        assert tokenizer.decode(ids[:1]) == TEXT[:len(tokenizer.decode(ids[:1]))]
    # NFC-normalizing tokenizers (Qwen2) turn "e" + combining accent into "é".
    normalized = unicodedata.normalize("NFC", TEXT) if variant == "qwen2-tiny" else TEXT
    assert tokenizer.decode(ids, skip_special_tokens=True) == normalized
    assert len(ids) < len(TEXT.encode()) * 0.8  # trained merges, not bytes


@pytest.mark.parametrize("variant", TINY)
def test_template_markers_are_single_tokens(folders, variant):
    tokenizer = AutoTokenizer.from_pretrained(folders[variant])
    for marker in MARKERS[variant]:
        ids = tokenizer.encode(f"a{marker}b", add_special_tokens=False)
        assert len(ids) == 3 and tokenizer.convert_ids_to_tokens(ids[1]) == marker, marker
        assert tokenizer.decode(ids, skip_special_tokens=True) == "ab", marker  # special, not just added


@pytest.mark.parametrize("variant", TINY)
def test_chat_template_renders_a_multi_turn_conversation(folders, variant):
    tokenizer = AutoTokenizer.from_pretrained(folders[variant])
    text = tokenizer.apply_chat_template(CONVERSATION, add_generation_prompt=True, tokenize=False)
    assert text == RENDERED[variant]
    ids = tokenizer.apply_chat_template(CONVERSATION, add_generation_prompt=True, tokenize=True)
    ids = list(ids["input_ids"]) if hasattr(ids, "keys") else list(ids)
    # Rendered then encoded without adding a second bos: the markers come through as their ids.
    assert ids == tokenizer.encode(text, add_special_tokens=False)
    for marker in MARKERS[variant]:
        if marker in text:
            assert tokenizer.convert_tokens_to_ids(marker) in ids


@pytest.mark.parametrize("variant", ["llama2-tiny", "mistral-tiny"])
def test_inst_templates_reject_roles_out_of_turn(folders, variant):
    tokenizer = AutoTokenizer.from_pretrained(folders[variant])
    with pytest.raises(TemplateError, match="alternate"):
        tokenizer.apply_chat_template([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
                                      tokenize=False)


# --- generation and determinism ----------------------------------------------------------------

@pytest.mark.parametrize("variant", TINY)
def test_greedy_generation_varies(folders, variant):
    folder = folders[variant]
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    prompt = tokenizer.apply_chat_template(CONVERSATION, add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True)
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=16, do_sample=False, eos_token_id=None)
    tokens = out[0, prompt["input_ids"].shape[1]:].tolist()
    assert len(tokens) == 16
    assert len(set(tokens)) >= 4, tokens
    assert max(tokens) < len(tokenizer), tokens  # never an id the tokenizer cannot decode


def test_same_seed_same_bytes_other_seed_other_weights(folders, tmp_path):
    for variant in ("llama3-tiny", "qwen2-tiny"):  # sharded bf16, and biases
        again = make_checkpoint(variant, tmp_path / "again" / variant, seed=0)
        assert file_bytes(again) == file_bytes(folders[variant]), variant
    other = make_checkpoint("llama3-tiny", tmp_path / "other", seed=1)
    assert read_json(other, "config.json") == read_json(folders["llama3-tiny"], "config.json")
    assert (other / "tokenizer.json").read_bytes() == (folders["llama3-tiny"] / "tokenizer.json").read_bytes()
    weights = stored_tensors(other)
    assert any(not torch.equal(weights[name], tensor)
               for name, tensor in stored_tensors(folders["llama3-tiny"]).items())


def test_script_in_a_fresh_process_writes_the_same_checkpoint(folders, tmp_path):
    # A new interpreter with another hash seed: the tokenizer trainer and corpus order must not
    # depend on dict or set iteration order.
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "make_test_checkpoints.py"), str(tmp_path),
                           "--variants", "mistral-tiny", "--seed", "0"],
                          env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mistral-tiny: 311,616 parameters, "), proc.stdout
    assert file_bytes(tmp_path / "mistral-tiny") == file_bytes(folders["mistral-tiny"])
