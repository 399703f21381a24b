"""The web runtime's node:test unit tests (runtime_web/test/*.test.ts), run through npm. Python
writes the reference data they compare against (tokenizer ids from the `tokenizers` library,
chat templates rendered by transformers) into a JSON file named by KILN_FIXTURES."""

from __future__ import annotations

import os
import subprocess

from kiln import toolchain
from runtime_fixtures import write_fixtures


def test_runtime_unit_tests(tmp_path, report):
    fixtures = write_fixtures(tmp_path)
    env = {**os.environ, "KILN_FIXTURES": str(fixtures)}
    proc = subprocess.run([toolchain.find_tool("npm"), "test", "--silent"], cwd=toolchain.REPO_ROOT / "runtime_web",
                          env=env, capture_output=True, text=True, timeout=600)
    summary = [line for line in proc.stdout.splitlines() if line.startswith(("# tests", "# pass", "# fail"))]
    report("\n[runtime unit tests] " + " ".join(summary))
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert "# fail 0" in proc.stdout
