"""Benchmark `kiln build` on the 135M-shape synthetic checkpoint: wall time per step and peak RSS,
for q4f32_1 and q4f16_1 (both targets). Prints numbers; asserts nothing.

    .venv/bin/python scripts/bench_build.py [--work DIR] [--quantizations q4f32_1,q4f16_1]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kiln.testing.synthetic import make_checkpoint

VARIANT = "smollm-135m"


def run_measured(cmd: list[str]) -> tuple[int, float, int, str]:
    """Run `cmd`; return its exit code, wall seconds, peak RSS in MiB (of that process tree's
    largest member, as the kernel reports it) and its stdout."""
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, time.monotonic() - started, usage.ru_maxrss // 1024, out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="folder for the checkpoint and bundles (default: a temp dir)")
    parser.add_argument("--quantizations", default="q4f32_1,q4f16_1")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="kiln-bench-"))
    checkpoint = work / VARIANT
    if not checkpoint.exists():
        started = time.monotonic()
        make_checkpoint(VARIANT, checkpoint)
        print(f"made {checkpoint} in {time.monotonic() - started:.1f} s")
    size = sum(f.stat().st_size for f in checkpoint.iterdir()) / 2**20
    print(f"checkpoint: {VARIANT}, {size:.0f} MiB on disk")
    for quant in args.quantizations.split(","):
        out = work / f"bundle-{quant}"
        cmd = [sys.executable, "-m", "kiln.cli", "build", str(checkpoint), "--quantization", quant,
               "--out", str(out), "--force"]
        code, wall, rss, stdout = run_measured(cmd)
        print(f"\n== kiln build --quantization {quant}: exit {code}, wall {wall:.1f} s, peak RSS {rss} MiB")
        summary = stdout[stdout.find("bundle written"):] if "bundle written" in stdout else stdout[-2000:]
        print(summary.rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
