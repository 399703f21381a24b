"""Write an output folder all at once: build it in a hidden sibling, rename it into place only when
complete. A failed or interrupted run leaves no half-written output, and an existing folder (with
--force) is replaced only after the new one is whole.

Safety rules, checked before anything is written (check_output):
- `out` must not be, or contain, one of the inputs (the checkpoint, the bundles of a site):
  replacing it would delete them;
- with --force, an existing `out` is replaced only if it is empty or looks like what the command
  writes (a bundle, a site), never an arbitrary folder or a file.

Staging lives beside `out`, so the final rename never crosses filesystems. A run killed with
SIGKILL cannot clean up; the next run into the same parent removes hidden folders of runs whose
process is gone.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

from kiln.errors import OutputExistsError, UnsafeOutputError

# `.NAME.partial-PID` (being written) and `.NAME.old-PID` (the replaced output, being deleted).
_LEFTOVER = re.compile(r"^\..+\.(partial|old)-(\d+)$")


def check_output(out: Path, force: bool, option: str = "--out", *, inputs: Iterable[Path] = (),
                 input_kind: str = "input", marker: str | None = None, what: str = "output folder") -> None:
    """Refuse an `out` that would destroy `inputs` (each a `input_kind`) or, with `force`, anything
    but an earlier output (an empty folder, or a folder holding `marker`, the file it always has)."""
    target = out.resolve()
    for path in inputs:
        source = Path(path).resolve()
        if source == target or target in source.parents:
            raise UnsafeOutputError(
                f"{option} {out} {'is' if source == target else 'contains'} the {input_kind} {path}, which "
                f"writing there would delete; choose an {option} outside it.")
    if not out.exists() and not out.is_symlink():
        return
    if not force:
        raise OutputExistsError(f"{what} {out} already exists; pass --force to replace it or choose another {option}.")
    if not out.is_dir() or out.is_symlink():
        raise UnsafeOutputError(f"{option} {out} is not a folder, and --force replaces only a folder kiln wrote; "
                                f"choose another {option}.")
    if marker is not None and not (out / marker).is_file() and any(out.iterdir()):
        raise UnsafeOutputError(
            f"{option} {out} holds files but no {marker}, so it is not a {what} kiln wrote, and --force replaces "
            f"only those; choose another {option} or empty it yourself.")


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but another user's
        return True
    return True


def remove_leftovers(parent: Path) -> list[Path]:
    """Delete the hidden staging folders that killed runs left in `parent`; returns them."""
    removed = []
    with contextlib.suppress(OSError):
        for entry in parent.iterdir():
            found = _LEFTOVER.match(entry.name)
            if found and entry.is_dir() and not entry.is_symlink() and not _process_alive(int(found.group(2))):
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
    return removed


@contextlib.contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(out.parent)
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


def move_file(src: Path, dst: Path) -> None:
    """os.replace that also works across filesystems: there it copies to a hidden name beside `dst`
    and renames that, so `dst` is never seen half-written."""
    try:
        os.replace(src, dst)
        return
    except OSError as err:
        if err.errno != errno.EXDEV:
            raise
    partial = Path(dst).with_name(f".{Path(dst).name}.partial-{os.getpid()}")
    try:
        shutil.copyfile(src, partial)
        os.replace(partial, dst)
    finally:
        partial.unlink(missing_ok=True)
    Path(src).unlink(missing_ok=True)
