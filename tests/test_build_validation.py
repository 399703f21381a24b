"""kiln build checks the checkpoint in its first seconds (compiler/bundle/build.py plan_build): bad config
fields, tokenizer, chat template, token ids, weight headers and options stop it with one
`error[code]:` line before any TVM work; NaN weights stop it while the weights stream; Ctrl+C and
OS errors are one line too. No TVM work here: build_model_module and the kernel compile are
replaced by stand-ins that fail the test if reached."""

from __future__ import annotations

import copy
import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import kiln.kernels.model_module
import kiln.kernels.wasm_library
from kiln.bundle.build import BuildOptions, plan_build
from kiln.checkpoint.folder import load_checkpoint
from kiln.cli import main
from kiln.weights.convert import convert_weights
from kiln.errors import CheckpointError, KilnError
from kiln.weights.quantize import get_quantization
from kiln.testing.synthetic import make_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_checkpoint("llama2-tiny", tmp_path_factory.mktemp("validation") / "llama2-tiny")


@pytest.fixture(autouse=True)
def no_compiling(monkeypatch):
    def reached(*_args, **_kwargs):
        raise AssertionError("the build got past validation into TVM")

    monkeypatch.setattr(kiln.kernels.model_module, "build_model_module", reached)
    monkeypatch.setattr(kiln.kernels.wasm_library, "build_wasm_library", reached)


def variant(src: Path, dst: Path, *, config=None, files=None) -> Path:
    """A copy of `src` with config.json edited by `config(dict) -> dict` and `files(folder)` run."""
    shutil.copytree(src, dst)
    if config is not None:
        path = dst / "config.json"
        path.write_text(json.dumps(config(json.loads(path.read_text()))))
    if files is not None:
        files(dst)
    return dst


def plan_error(ckpt: Path, tmp_path: Path, **options) -> str:
    """The one-line error of planning a build of `ckpt`; nothing written to its --out."""
    out = tmp_path / "bundle"
    with pytest.raises(KilnError) as info:
        plan_build(BuildOptions(checkpoint=ckpt, out=out, quantization="q0f32", **options))
    line = str(info.value)
    assert line.startswith("error[") and "\n" not in line, line
    assert not out.exists()
    return line


def edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


# --- config.json --------------------------------------------------------------------------------

def _without(key):
    return lambda c: {k: v for k, v in c.items() if k != key}


CONFIG_CASES = {
    # name: (edit, phrases the error names); before, each was an error[internal] "bug in kiln" or got
    # through to the compile (0 layers: a jsonschema error after the whole build).
    "a list": (lambda c: [c], ["holds a list", "config.json"]),
    "no heads": (_without("num_attention_heads"), ["num_attention_heads is missing"]),
    "0 heads": (lambda c: {**c, "num_attention_heads": 0, "head_dim": None}, ["num_attention_heads is 0"]),
    "hidden a string": (lambda c: {**c, "hidden_size": "64"}, ["hidden_size", "string", "whole number"]),
    "hidden negative": (lambda c: {**c, "hidden_size": -64}, ["hidden_size is -64"]),
    "0 layers": (lambda c: {**c, "num_hidden_layers": 0}, ["num_hidden_layers is 0"]),
    "kv heads not dividing": (lambda c: {**c, "num_key_value_heads": 3}, ["num_key_value_heads is 3", "divide"]),
    "odd head_dim": (lambda c: {**c, "head_dim": 15}, ["head_dim is 15", "even"]),
    "fewer dims than heads": (lambda c: {**c, "hidden_size": 2, "head_dim": None}, ["hidden_size is 2"]),
    "tied embeddings a string": (lambda c: {**c, "tie_word_embeddings": "false"}, ["tie_word_embeddings", "true or false"]),
    "eps zero": (lambda c: {**c, "rms_norm_eps": 0}, ["rms_norm_eps is 0", "above 0"]),
    "architectures a string": (lambda c: {**c, "architectures": "LlamaForCausalLM"}, ["architectures", "list"]),
    "rope theta a string": (lambda c: {**c, "rope_parameters": {"rope_type": "default", "rope_theta": "1e4"}},
                            ["rope_parameters.rope_theta"]),
    "eos outside the vocabulary": (lambda c: {**c, "eos_token_id": 512}, ["eos_token_id is 512", "0 to 511"]),
}


@pytest.mark.parametrize("case", CONFIG_CASES)
def test_bad_config_field_is_one_line_before_compiling(checkpoint, tmp_path, case):
    edit, phrases = CONFIG_CASES[case]
    # generation_config.json repeats the token ids; drop it so that config.json's are read.
    ckpt = variant(checkpoint, tmp_path / "ck", config=edit, files=lambda d: (d / "generation_config.json").unlink())
    line = plan_error(ckpt, tmp_path)
    assert line.startswith("error[checkpoint]: "), line
    for phrase in phrases:
        assert phrase in line, line


# Fields the model reads, the fuzz's main targets; the other fields of config.json get a share too.
READ_FIELDS = ("architectures", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
               "num_key_value_heads", "head_dim", "vocab_size", "rms_norm_eps", "rope_parameters",
               "max_position_embeddings", "tie_word_embeddings", "attention_bias", "mlp_bias", "hidden_act",
               "bos_token_id", "eos_token_id", "pad_token_id")


def _mutations(config: dict, rng: random.Random, count: int):
    """`count` configs, each with one field deleted or set to a wrong type, a negative, zero or huge
    value; the same ones on every run."""
    values = [None, "7", -1, 0, 2**40, 1.5, True, [], {}, float("nan")]
    others = sorted(set(config) - set(READ_FIELDS))
    for _ in range(count):
        field = rng.choice(READ_FIELDS if rng.random() < 0.8 else others)
        mutated = copy.deepcopy(config)
        if rng.random() < 0.2:
            mutated.pop(field, None)
            yield f"del {field}", mutated
        else:
            mutated[field] = rng.choice(values)
            yield f"{field}={mutated[field]!r}", mutated


def test_config_fuzz_gives_one_line_or_passes(checkpoint, tmp_path):
    config = json.loads((checkpoint / "config.json").read_text())
    ckpt = variant(checkpoint, tmp_path / "ck")
    outcomes = {}
    for what, mutated in _mutations(config, random.Random(10), 30):
        (ckpt / "config.json").write_text(json.dumps(mutated))
        try:
            plan_build(BuildOptions(checkpoint=ckpt, out=tmp_path / "bundle", quantization="q0f32"))
            outcomes[what] = "passes"
        except KilnError as err:  # anything else (KeyError, ZeroDivisionError, ...) fails the test
            line = str(err)
            assert line.startswith("error[") and "\n" not in line, (what, line)
            outcomes[what] = line.split("]")[0] + "]"
    assert not (tmp_path / "bundle").exists()
    assert "passes" in outcomes.values() and "error[checkpoint]" in outcomes.values(), outcomes


# --- tokenizer, chat template, tokenizer_config.json -------------------------------------------

def test_tokenizer_json_not_json(checkpoint, tmp_path):
    ckpt = variant(checkpoint, tmp_path / "ck", files=lambda d: (d / "tokenizer.json").write_text('{"version": '))
    line = plan_error(ckpt, tmp_path)
    assert line.startswith("error[checkpoint]: ") and "tokenizer.json is not valid JSON" in line


def test_tokenizer_json_without_a_model(checkpoint, tmp_path):
    ckpt = variant(checkpoint, tmp_path / "ck", files=lambda d: edit_json(d / "tokenizer.json", lambda t: t.pop("model")))
    assert "has no tokenizer `model`" in plan_error(ckpt, tmp_path)


def test_tokenizer_json_the_library_refuses(checkpoint, tmp_path):
    def break_model(tokenizer):
        tokenizer["model"]["type"] = "NoSuchModel"

    ckpt = variant(checkpoint, tmp_path / "ck", files=lambda d: edit_json(d / "tokenizer.json", break_model))
    assert "cannot be loaded by the tokenizers library" in plan_error(ckpt, tmp_path)


def _template(text):
    return lambda d: edit_json(d / "tokenizer_config.json", lambda t: t.update(chat_template=text))


@pytest.mark.parametrize("template, phrase", [
    ("{% for m in messages %}{{ m.content }", "is not valid Jinja (unexpected '}' at line 1)"),
    ("{{ raise_exception('no') }}", "fails on a user/assistant/user conversation (TemplateError: no)"),
    (None, "has no chat template"),
    (42, "not Jinja text"),
])
def test_bad_or_missing_chat_template(checkpoint, tmp_path, template, phrase):
    ckpt = variant(checkpoint, tmp_path / "ck", files=_template(template))
    line = plan_error(ckpt, tmp_path)
    assert line.startswith("error[checkpoint]: ") and phrase in line, line


def test_chat_template_jinja_without_tokenizer_config(checkpoint, tmp_path):
    # Before: the bundle had no tokenizer_config.json, which the runtime fetches (404).
    def jinja_only(folder):
        config = json.loads((folder / "tokenizer_config.json").read_text())
        (folder / "chat_template.jinja").write_text(config["chat_template"])
        (folder / "special_tokens_map.json").write_text(json.dumps(
            {"bos_token": config["bos_token"], "eos_token": config["eos_token"]}))
        (folder / "tokenizer_config.json").unlink()

    ckpt = variant(checkpoint, tmp_path / "ck", files=jinja_only)
    plan = plan_build(BuildOptions(checkpoint=ckpt, out=tmp_path / "bundle", quantization="q0f32"))
    assert "tokenizer_config.json" in plan.ckpt.tokenizer_files
    bundle = tmp_path / "files"
    bundle.mkdir()
    plan.ckpt.write_tokenizer_files(bundle)
    written = json.loads((bundle / "tokenizer_config.json").read_text())
    assert written["chat_template"] == (ckpt / "chat_template.jinja").read_text()
    assert written["bos_token"] == "<s>" and written["eos_token"] == "</s>"


def test_chat_template_jinja_beside_tokenizer_config(checkpoint, tmp_path):
    # transformers 5 saves the template as chat_template.jinja, and it wins over the config's.
    def split(folder):
        config = json.loads((folder / "tokenizer_config.json").read_text())
        (folder / "chat_template.jinja").write_text(config.pop("chat_template"))
        (folder / "tokenizer_config.json").write_text(json.dumps(config))

    ckpt = load_checkpoint(variant(checkpoint, tmp_path / "ck", files=split))
    bundle = tmp_path / "files"
    bundle.mkdir()
    ckpt.write_tokenizer_files(bundle)
    assert json.loads((bundle / "tokenizer_config.json").read_text())["chat_template"] == ckpt.chat_template


# --- generation_config.json, options ------------------------------------------------------------

def test_generation_config_out_of_range(checkpoint, tmp_path):
    ckpt = variant(checkpoint, tmp_path / "ck",
                   files=lambda d: edit_json(d / "generation_config.json", lambda g: g.update(top_p=0)))
    line = plan_error(ckpt, tmp_path)
    assert "generation_config.json field top_p is 0" in line


@pytest.mark.parametrize("options, phrase", [
    ({"context_window": 0}, "--context-window 0 must be between 1 and the model's maximum of 256"),
    ({"context_window": 257}, "--context-window 257 must be between 1 and the model's maximum of 256"),
    ({"context_window": 128, "prefill_chunk": 0}, "--prefill-chunk 0 must be between 1"),
])
def test_context_window_bounds(checkpoint, tmp_path, options, phrase):
    # Before: 0 meant "the default" and a window past max_position_embeddings was built.
    line = plan_error(checkpoint, tmp_path, **options)
    assert line.startswith("error[unsupported]: ") and phrase in line, line


def test_defaults_and_the_maximum_are_accepted(checkpoint, tmp_path):
    out = tmp_path / "bundle"
    assert plan_build(BuildOptions(checkpoint=checkpoint, out=out)).context == 256
    assert plan_build(BuildOptions(checkpoint=checkpoint, out=out, context_window=256)).context == 256


# --- weights ------------------------------------------------------------------------------------

def _tensors(edit):
    def apply(folder):
        tensors = load_file(folder / "model.safetensors")
        edit(tensors)
        save_file(tensors, folder / "model.safetensors")
    return apply


def test_float_weight_tagged_int32(checkpoint, tmp_path):
    def retag(tensors):
        tensors["model.norm.weight"] = tensors["model.norm.weight"].view(np.int32)

    ckpt = variant(checkpoint, tmp_path / "ck", files=_tensors(retag))
    line = plan_error(ckpt, tmp_path)
    assert "tensor model.norm.weight is stored as int32" in line, line


def test_nan_in_a_norm_weight_stops_the_weights(checkpoint, tmp_path):
    # Before: accepted; the runtime then failed every request. The check runs as each tensor streams
    # (convert_weights), here with the q0f32 parameter list the model module would give.
    def poison(tensors):
        tensors["model.layers.1.post_attention_layernorm.weight"][5] = np.nan

    ckpt = load_checkpoint(variant(checkpoint, tmp_path / "ck", files=_tensors(poison)))
    tensors = ckpt.open_tensors()
    shapes = {name: [sum(tensors.shape(p)[0] for p in parts), *tensors.shape(parts[0])[1:]]
              for name, parts in ckpt.family.weight_sources(ckpt.model_config).items()}
    params = [{"name": name, "shape": shape, "dtype": "float32"} for name, shape in shapes.items()]
    out = tmp_path / "shards"
    out.mkdir()
    with pytest.raises(CheckpointError) as info:
        convert_weights(ckpt, params, shapes, get_quantization("q0f32"), out)
    assert str(info.value) == ("error[checkpoint]: tensor model.layers.1.post_attention_layernorm.weight holds NaN "
                               "or infinite values; the checkpoint is damaged (or comes from a diverged training "
                               "run): re-download or re-export it.")


# --- the CLI: OS errors and Ctrl+C ---------------------------------------------------------------

def test_unwritable_out_is_one_io_line(checkpoint, tmp_path, capsys):
    # Before: error[internal] "a bug in kiln or TVM" with FileExistsError.
    (tmp_path / "a-file").write_text("")
    assert main(["build", str(checkpoint), "--out", str(tmp_path / "a-file" / "bundle")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error[io]: File exists (") and len(err.splitlines()) == 1, err
    assert "Traceback" not in err


def test_ctrl_c_is_one_line_exit_130_and_removes_staging(checkpoint, tmp_path, monkeypatch, capsys):
    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(kiln.kernels.model_module, "build_model_module", interrupted)
    out = tmp_path / "bundle"
    assert main(["build", str(checkpoint), "--out", str(out)]) == 130
    err = capsys.readouterr().err.strip()
    assert err.startswith("error[interrupted]: kiln build stopped by Ctrl+C") and len(err.splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []
    # --verbose adds the traceback above the same line.
    assert main(["build", str(checkpoint), "--out", str(out), "--verbose"]) == 130
    err = capsys.readouterr().err.strip()
    assert "Traceback" in err and err.splitlines()[-1].startswith("error[interrupted]: ")
