"""kiln-config.json and WebLLM's mlc-chat-config.json come from one reading of the checkpoint
(kiln.checkpoint.facts): the same token ids, stop tokens and sampling defaults, with
generation_config.json read as transformers reads it (no do_sample: greedy decoding)."""

from __future__ import annotations

import dataclasses

import pytest

from kiln.bundle.kiln_config import make_kiln_config
from kiln.checkpoint.facts import chat_facts
from kiln.checkpoint.folder import load_checkpoint
from kiln.testing.synthetic import make_checkpoint
from kiln.webllm.mlc_config import mlc_chat_config
from kiln.weights.quantize import get_quantization

# What kiln build's tensor cache reports; make_kiln_config copies it into the config.
CACHE = {"metadata": {"ParamSize": 1000, "ParamBytes": 4000, "BitsPerParam": 32.0}}


@pytest.fixture(scope="module")
def llama3(tmp_path_factory):
    return make_checkpoint("llama3-tiny", tmp_path_factory.mktemp("facts") / "llama3-tiny")


def both_configs(folder, generation_config: dict) -> tuple[dict, dict]:
    ckpt = dataclasses.replace(load_checkpoint(folder), generation_config=generation_config)
    facts = chat_facts(ckpt, None)
    kiln = make_kiln_config(ckpt, facts, get_quantization("q0f32"), context_window=128, prefill_chunk=64,
                            libraries={"wasm": "model_wasm.wasm"}, tensor_cache=CACHE)
    mlc = mlc_chat_config(ckpt, facts, quantization="q0f32", context_window=128, prefill_chunk=64, sliding_window=-1)
    return kiln, mlc


@pytest.mark.parametrize("do_sample", [None, False, True])
def test_both_configs_read_sampling_as_transformers_does(llama3, do_sample):
    generation = {"temperature": 0.6, "top_p": 0.9, "repetition_penalty": 1.1}
    if do_sample is not None:
        generation["do_sample"] = do_sample
    kiln, mlc = both_configs(llama3, generation)
    # transformers samples only with do_sample=True; otherwise it decodes greedily.
    want = (0.6, 0.9) if do_sample else (0.0, 1.0)
    assert (kiln["sampling"]["temperature"], kiln["sampling"]["top_p"]) == want
    assert (mlc["temperature"], mlc["top_p"]) == want
    assert kiln["sampling"]["repetition_penalty"] == mlc["repetition_penalty"] == 1.1


def test_both_configs_have_the_same_tokens(llama3):
    ckpt = load_checkpoint(llama3)
    eos = ckpt.generation_config["eos_token_id"]
    eos = eos if isinstance(eos, list) else [eos]
    kiln, mlc = both_configs(llama3, {**ckpt.generation_config, "eos_token_id": eos[:1]})
    tokens = kiln["tokens"]
    assert tokens["eos_token_ids"] == eos[:1]
    assert mlc["eos_token_id"] == eos[0]
    assert tokens["stop_token_ids"] == mlc["conv_template"]["stop_token_ids"]
    assert tokens["stop_token_ids"][:1] == eos[:1]
    assert tokens["bos_token_id"] == mlc["bos_token_id"]
    assert kiln["chat_template"] == ckpt.chat_template
