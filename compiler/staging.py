"""Write an output folder all at once: build it in a hidden sibling, rename it into place only when
complete. A failed or interrupted run leaves no half-written output, and an existing folder (with
--force) is replaced only after the new one is whole."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from .errors import OutputExistsError


def check_output(out: Path, force: bool, option: str = "--out") -> None:
    if out.exists() and not force:
        raise OutputExistsError(f"output folder {out} already exists; pass --force to replace it or choose another {option}.")


@contextlib.contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
        _replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _replace(staging: Path, out: Path) -> None:
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        out.rename(old)
        staging.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(out)
