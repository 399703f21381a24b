"""The code's layout holds (README "Layout"): one import name, `kiln`; no package imports one that
comes after it in the data flow; `kiln demo`'s path runs without the test dependencies (torch,
Playwright); no source file grows past ~400 lines without saying why at its top."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from kiln import toolchain

ROOT = toolchain.REPO_ROOT
# Each package may import itself and the ones before it. The shared modules come first.
LAYERS = [{"errors", "staging", "toolchain", "schemas"}, {"model_defs"}, {"checkpoint"}, {"weights"}, {"webllm"},
          {"kernels"}, {"bundle"}, {"site"}, {"testing"}, {"cli"}]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}
MAX_LINES = 400
SOURCES = [("compiler", "*.py"), ("model_defs", "*.py"), ("tests", "*.py"), ("scripts", "*.py"),
           ("runtime_web/src", "*.ts"), ("runtime_web/demo", "*.ts"), ("runtime_web/test", "*.ts")]


def _package(path: Path) -> str:
    """kiln's package of a source file: `model_defs`, `checkpoint`, ... or a top module's name."""
    rel = path.relative_to(ROOT)
    if rel.parts[0] == "model_defs":
        return "model_defs"
    return rel.parts[1] if len(rel.parts) > 2 else rel.stem


def _kiln_imports(path: Path) -> list[tuple[int, str]]:
    """(line, package) of every `kiln.<package>` a file imports, at any depth in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module + "." + a.name for a in node.names] if node.module == "kiln" else [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "kiln" and len(parts) > 1:
                found.append((node.lineno, parts[1]))
    return found


def test_no_package_imports_a_later_one():
    files = [*ROOT.joinpath("compiler").rglob("*.py"), *ROOT.joinpath("model_defs").rglob("*.py")]
    upward = [f"{path.relative_to(ROOT)}:{line} imports kiln.{target}"
              for path in files for line, target in _kiln_imports(path)
              if RANK[target] > RANK[_package(path)]]
    assert not upward, upward
    assert {_package(p) for p in files} - {"__init__"} <= set(RANK), "a new package needs its place in LAYERS"


def test_kiln_is_the_only_import_name(tmp_path):
    """From outside the checkout the installed package is `kiln`; `compiler` and `model_defs` are
    folders of the checkout, not import names."""
    def imports(name: str) -> bool:
        proc = subprocess.run([sys.executable, "-c", f"import {name}"], cwd=tmp_path, capture_output=True, text=True)
        return proc.returncode == 0

    assert imports("kiln.cli") and imports("kiln.model_defs.llama")
    assert not imports("compiler") and not imports("model_defs")


# Run in a fresh interpreter whose import system cannot find the test-only packages, as in a venv
# with only kiln's [demo] set: kiln build's checks and configs on the demo's GGUF file, and the
# site and serving modules.
WITHOUT_TEST_DEPS = """
import importlib.machinery as m, json, sys
BLOCKED = {"torch", "accelerate", "playwright"}
class WithoutTestDeps(m.PathFinder):
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        return None if name.partition(".")[0] in BLOCKED else m.PathFinder.find_spec(name, path, target)
sys.meta_path = [WithoutTestDeps if f is m.PathFinder else f for f in sys.meta_path]
from kiln.bundle.build import BuildOptions, plan_build
plan = plan_build(BuildOptions(checkpoint=sys.argv[1], out=sys.argv[2]))
import kiln.cli, kiln.site.builder, kiln.site.demo, kiln.site.serve
print(json.dumps({"quantization": plan.quant.name, "stop": plan.facts.tokens.stop,
                  "loaded": sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED)}))
"""


def test_demo_path_needs_no_test_dependencies(smollm2_gguf, tmp_path):
    from kiln.site.demo import QUANTIZATIONS

    proc = subprocess.run([sys.executable, "-c", WITHOUT_TEST_DEPS, str(smollm2_gguf), str(tmp_path / "bundle")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result["quantization"] == QUANTIZATIONS[0] and result["stop"] and result["loaded"] == []


def _reason_at_top(path: Path) -> bool:
    return any("longer than" in line.lower() and "lines" in line.lower()
               for line in path.read_text().splitlines()[:12])


@pytest.mark.parametrize("folder, pattern", SOURCES)
def test_files_stay_short_or_say_why(folder, pattern):
    long = [f"{p.relative_to(ROOT)} ({n} lines)" for p in sorted(ROOT.joinpath(folder).rglob(pattern))
            if "node_modules" not in p.parts and (n := len(p.read_text().splitlines())) > MAX_LINES
            and not _reason_at_top(p)]
    assert not long, f"over {MAX_LINES} lines without a 'Longer than ... lines: why' note in the first lines: {long}"
