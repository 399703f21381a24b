"""`kiln demo`: the README's first command. With no downloaded model, it makes a small synthetic
checkpoint (random weights: a pipeline demo, and the site labels it so), builds its bundle and a
site, and serves it on 127.0.0.1.

The checkpoint and bundle are cached under kiln's cache folder, keyed by the compiler's sources,
so a second run only rebuilds the site (which picks up a rebuilt runtime) and serves.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from . import toolchain

VARIANT = "llama3-tiny"
QUANTIZATION = "q4f32_1"


def demo_work_dir(work: Path | None = None) -> Path:
    """The demo's work folder: `work`, or demo/ in kiln's cache."""
    return Path(work) if work else toolchain.cache_root() / "demo"


def demo_site_dir(work: Path | None = None) -> Path:
    """Where prepare_demo(work) writes the site."""
    return demo_work_dir(work) / "site"


def prepare_demo(work: Path | None = None, log=print) -> Path:
    """Make (or reuse) the demo bundle and (re)build the site; return the site folder."""
    from .build import BuildOptions, build_bundle
    from .site import build_site
    from .synthetic import make_checkpoint

    work = demo_work_dir(work)
    key = toolchain.compiler_sources_key(f"{VARIANT}/{QUANTIZATION}")
    bundle = work / f"bundle-{key}" / f"kiln-demo-{VARIANT}-{QUANTIZATION}"
    if bundle.is_dir():
        log(f"[1/3] demo bundle up to date: {bundle}")
    else:
        started = time.monotonic()
        log(f"[1/3] making a synthetic {VARIANT} checkpoint (random weights) and compiling it ({QUANTIZATION}) ...")
        for stale in work.glob("bundle-*"):
            shutil.rmtree(stale, ignore_errors=True)
        checkpoint = make_checkpoint(VARIANT, work / "checkpoint" / VARIANT)
        build_bundle(BuildOptions(checkpoint=checkpoint, out=bundle, quantization=QUANTIZATION, force=True))
        log(f"      built {bundle} in {time.monotonic() - started:.0f} s")
    site = demo_site_dir(work)
    log("[2/3] building the site ...")
    build_site([bundle], site, force=True, log=lambda msg: log("    " + msg))
    return site
