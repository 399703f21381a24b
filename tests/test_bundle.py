"""What `kiln build` writes: both libraries, shards of at most 32 MB whose sha256 match, a kiln config
that validates against the schema, an mlc-chat-config.json, the tokenizer files; and an f16 bundle
that declares the WebGPU feature it needs. This bundle is linked as users' are (binaryen -O2); the
rest of the suite links at -O1 (tests/conftest.py)."""

from __future__ import annotations

import hashlib
import json

import jsonschema
import pytest

from kiln.bundle.build import BuildOptions, build_bundle
from kiln import schemas
from kiln.testing.synthetic import make_checkpoint
from kiln.weights.tensor_cache import MAX_SHARD_BYTES, read_tensor_cache
from kiln.kernels.wasm_library import LINK_LEVEL_ENV


@pytest.fixture(scope="module")
def f16_bundle(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundle")
    checkpoint = make_checkpoint("llama3-tiny", root / "llama3-tiny")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(LINK_LEVEL_ENV, raising=False)  # the link users get (-O2), not the suite's -O1
        report = build_bundle(BuildOptions(checkpoint=checkpoint, out=root / "out", quantization="q4f16_1"),
                              log=lambda *a, **k: None)
    return report


def test_bundle_files(f16_bundle):
    out = f16_bundle.out
    names = {p.name for p in out.iterdir()}
    assert {"model_webgpu.wasm", "model_wasm.wasm", "tensor-cache.json", "kiln-config.json",
            "mlc-chat-config.json", "tokenizer.json", "tokenizer_config.json"} <= names
    assert not [n for n in names if n.startswith(".")]
    for lib in ("model_webgpu.wasm", "model_wasm.wasm"):
        assert (out / lib).read_bytes()[:4] == b"\0asm"


def test_shards_are_small_and_verified(f16_bundle):
    index = json.loads((f16_bundle.out / "tensor-cache.json").read_text())
    for shard in index["records"]:
        data = (f16_bundle.out / shard["dataPath"]).read_bytes()
        assert len(data) == shard["nbytes"] <= MAX_SHARD_BYTES
        assert hashlib.sha256(data).hexdigest() == shard["sha256"]
        assert all(rec["format"] == "raw" for rec in shard["records"])
    weights = read_tensor_cache(f16_bundle.out)
    assert weights["model.layers.0.self_attn.qkv_proj.q_weight"].dtype == "uint32"
    assert weights["model.layers.0.self_attn.qkv_proj.q_scale"].dtype == "float16"
    assert "lm_head.q_weight" not in weights  # tied embeddings


def test_kiln_config(f16_bundle):
    config = json.loads((f16_bundle.out / "kiln-config.json").read_text())
    jsonschema.validate(config, schemas.schema(schemas.KILN_CONFIG))
    assert config["quantization"] == "q4f16_1"
    assert config["webgpu_features"] == ["shader-f16"]
    assert config["libraries"] == {"webgpu": "model_webgpu.wasm", "wasm": "model_wasm.wasm"}
    assert config["model_config"]["rope_scaling"]["rope_type"] == "llama3"
    assert "<|start_header_id|>" in config["chat_template"]
    assert config["tokens"]["eos_token_ids"] and set(config["tokens"]["eos_token_ids"]) <= set(config["tokens"]["stop_token_ids"])
    assert config["params"]["count"] == f16_bundle.params
    assert 4 < config["params"]["bits_per_param"] < 8


def test_mlc_chat_config(f16_bundle):
    mlc = json.loads((f16_bundle.out / "mlc-chat-config.json").read_text())
    assert mlc["model_type"] == "llama" and mlc["quantization"] == "q4f16_1"
    assert "tokenizer.json" in mlc["tokenizer_files"]
    assert mlc["conv_template"]["roles"]
