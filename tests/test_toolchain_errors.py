"""A missing toolchain piece gives one line that names it and says how to run setup."""

import os
import subprocess
import sys

import pytest

from kiln import toolchain
from kiln.testing import smoke
from kiln.errors import ToolchainError
from kiln.kernels.wasm_library import build_wasm_library

KILN = [sys.executable, "-m", "kiln.cli"]


def run_kiln(args, env):
    return subprocess.run(KILN + args, env=env, capture_output=True, text=True,
                          cwd=toolchain.REPO_ROOT, timeout=300)


def test_missing_emcc_is_one_line_with_setup_hint(tmp_path):
    # A PATH with node but no emcc.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "node").symlink_to(toolchain.find_tool("node"))
    env = {**os.environ, "PATH": str(bin_dir)}
    proc = run_kiln(["smoke", "--out", str(tmp_path / "out")], env)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "`emcc` was not found on PATH" in lines[0]
    assert "scripts/setup.sh" in lines[0]
    assert not list((tmp_path / "out").glob("*.wasm"))


def test_unbuilt_runtime_is_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("KILN_CACHE_DIR", str(tmp_path / "empty-cache"))
    with pytest.raises(ToolchainError) as info:
        build_wasm_library(smoke.dense_softmax_module(), "wasm", tmp_path / "x.wasm")
    message = str(info.value)
    assert "\n" not in message
    assert "web runtime is not built" in message and "scripts/setup.sh" in message
    assert not (tmp_path / "x.wasm").exists()


def test_unknown_target_names_the_choices(tmp_path):
    with pytest.raises(Exception) as info:
        build_wasm_library(smoke.dense_softmax_module(), "cuda", tmp_path / "x.wasm")
    assert "unknown target 'cuda'" in str(info.value) and "wasm, webgpu" in str(info.value)
