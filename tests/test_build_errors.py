"""Bad input to `kiln build`, and failures inside the compiler: one clear sentence with a stable
code, a non-zero exit, and nothing left behind (no output folder, no hidden staging folder)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from kiln import toolchain
from kiln.cli import main
from kiln.errors import REPORT_HINT
from kiln.testing.synthetic import make_checkpoint


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory):
    return make_checkpoint("llama2-tiny", tmp_path_factory.mktemp("good") / "llama2-tiny")


def kiln_build(checkpoint, out, *extra):
    cmd = [sys.executable, "-m", "kiln.cli", "build", str(checkpoint), "--out", str(out),
           "--quantization", "q0f32", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=toolchain.REPO_ROOT, timeout=600)


def assert_clean_failure(proc, out, code: str, *phrases: str):
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error[")]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error[{code}]: "), lines[0]
    for phrase in phrases:
        assert phrase in lines[0], lines[0]
    assert "Traceback" not in proc.stderr
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")], "staging left behind"


def copy_with_tensors(src, dst, edit):
    shutil.copytree(src, dst)
    tensors = load_file(src / "model.safetensors")
    edit(tensors)
    save_file(tensors, dst / "model.safetensors")
    return dst


def test_folder_does_not_exist(tmp_path):
    out = tmp_path / "bundle"
    proc = kiln_build(tmp_path / "nowhere", out)
    assert_clean_failure(proc, out, "checkpoint", "does not exist")
    assert not out.exists()


def test_no_config_json(tmp_path, good_checkpoint):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(good_checkpoint, ckpt)
    (ckpt / "config.json").unlink()
    out = tmp_path / "bundle"
    assert_clean_failure(kiln_build(ckpt, out), out, "checkpoint", "no config.json")
    assert not out.exists()


def test_unsupported_architecture(tmp_path, good_checkpoint):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(good_checkpoint, ckpt)
    config = json.loads((ckpt / "config.json").read_text())
    config["architectures"] = ["GPT2LMHeadModel"]
    (ckpt / "config.json").write_text(json.dumps(config))
    out = tmp_path / "bundle"
    proc = kiln_build(ckpt, out)
    assert_clean_failure(proc, out, "unsupported", "GPT2LMHeadModel", "LlamaForCausalLM", "MistralForCausalLM",
                         "Qwen2ForCausalLM")
    assert not out.exists()


def test_unsupported_rope_scaling(tmp_path, good_checkpoint):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(good_checkpoint, ckpt)
    config = json.loads((ckpt / "config.json").read_text())
    config.pop("rope_parameters", None)
    config["rope_scaling"] = {"rope_type": "dynamic", "factor": 2.0}
    (ckpt / "config.json").write_text(json.dumps(config))
    out = tmp_path / "bundle"
    assert_clean_failure(kiln_build(ckpt, out), out, "unsupported", "'dynamic'", "default", "llama3")


def test_missing_tensor(tmp_path, good_checkpoint):
    ckpt = copy_with_tensors(good_checkpoint, tmp_path / "ckpt",
                             lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    out = tmp_path / "bundle"
    assert_clean_failure(kiln_build(ckpt, out), out, "checkpoint", "model.layers.1.mlp.up_proj.weight")
    assert not out.exists()


def test_wrong_shape(tmp_path, good_checkpoint):
    def shrink(tensors):
        name = "model.layers.0.self_attn.k_proj.weight"
        tensors[name] = np.ascontiguousarray(tensors[name][:, :-8])

    ckpt = copy_with_tensors(good_checkpoint, tmp_path / "ckpt", shrink)
    out = tmp_path / "bundle"
    assert_clean_failure(kiln_build(ckpt, out), out, "checkpoint", "model.layers.0.self_attn.k_proj.weight",
                         "config.json")
    assert not out.exists()


def test_unknown_quantization(tmp_path, good_checkpoint):
    out = tmp_path / "bundle"
    proc = kiln_build(good_checkpoint, out, "--quantization", "q3f16_0")
    assert_clean_failure(proc, out, "unsupported", "q3f16_0", "q4f16_1")


def test_output_exists_without_force(tmp_path, good_checkpoint):
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    proc = kiln_build(good_checkpoint, out)
    assert_clean_failure(proc, out, "output-exists", "--force")
    assert (out / "keep.txt").read_text() == "user data"


# --- compiler-internal failures: one line naming model, target and TVM pass; traceback with --verbose

# The genuine TVM failure of issue 9: without kiln's Let inlining, TVM's CSE breaks llama3 RoPE on WebGPU.
WITHOUT_LET_INLINING = (
    "import sys; from kiln.kernels import schedules; stock = schedules.legalize_and_schedule; "
    "schedules.legalize_and_schedule = lambda t: [p for p in stock(t) if p is not schedules.inline_let_exprs]; "
    "from kiln.cli import main; sys.exit(main(sys.argv[1:]))"
)


@pytest.fixture(scope="module")
def llama3_checkpoint(tmp_path_factory):
    return make_checkpoint("llama3-tiny", tmp_path_factory.mktemp("llama3") / "llama3-tiny")


def kiln_build_patched(patch, checkpoint, out, *extra):
    cmd = [sys.executable, "-c", patch, "build", str(checkpoint), "--out", str(out), "--quantization", "q4f32_1",
           "--targets", "webgpu", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=toolchain.REPO_ROOT, timeout=600)


def test_tvm_failure_is_one_internal_error_line(tmp_path, llama3_checkpoint):
    out = tmp_path / "bundle"
    proc = kiln_build_patched(WITHOUT_LET_INLINING, llama3_checkpoint, out)
    assert_clean_failure(proc, out, "internal", "LlamaForCausalLM", "for webgpu", "TVM pass tirx.SplitHostDevice",
                         "has been used before definition", "report", "--verbose")
    assert not out.exists()


def test_verbose_adds_the_traceback(tmp_path, llama3_checkpoint):
    out = tmp_path / "bundle"
    proc = kiln_build_patched(WITHOUT_LET_INLINING, llama3_checkpoint, out, "--verbose")
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "relax.build" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error[internal]: compiling LlamaForCausalLM for webgpu")


def test_unexpected_exception_is_one_internal_error_line(tmp_path, good_checkpoint, monkeypatch, capsys):
    import kiln.kernels.model_module

    def broken(*_args, **_kwargs):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(kiln.kernels.model_module, "build_model_module", broken)
    out = tmp_path / "bundle"
    assert main(["build", str(good_checkpoint), "--out", str(out), "--quantization", "q0f32"]) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [f"error[internal]: compiling LlamaForCausalLM failed (RuntimeError: boom); {REPORT_HINT}."]
    assert not out.exists() and not list(tmp_path.glob(".bundle.*"))
