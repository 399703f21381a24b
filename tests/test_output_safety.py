"""Where kiln build and kiln site write: never over their inputs or over unrelated folders, never
across filesystems by a rename that fails, and nothing left behind by a killed run.

No checkpoint is compiled here: the refusals happen before the checkpoint is read, and staging is
exercised on its own."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kiln import staging, toolchain
from kiln.kernels import wasm_library
from kiln.cli import main
from kiln.errors import os_error
from kiln.site.builder import build_site
from kiln.staging import check_output, move_file, remove_leftovers, staged_folder


def fake_checkpoint(folder: Path) -> Path:
    """Files that stand for a checkpoint: the refusals below come before it is read."""
    folder.mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "generation_config.json", "tokenizer.json"):
        (folder / name).write_text(f"{name} of the user's checkpoint\n")
    return folder


def files_of(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_error_line(capsys, code: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"error[{code}]: "), err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize("where", ["checkpoint", "parent", "grandparent"])
def test_build_refuses_an_out_that_holds_the_checkpoint(tmp_path, capsys, where):
    # Before: `kiln build CK --out CK --force` deleted the checkpoint's files and left a bundle there.
    ckpt = fake_checkpoint(tmp_path / "models" / "ck")
    out = {"checkpoint": ckpt, "parent": ckpt.parent, "grandparent": tmp_path}[where]
    before = files_of(tmp_path)
    assert main(["build", str(ckpt), "--out", str(out), "--force", "--quantization", "q0f32"]) == 1
    err = one_error_line(capsys, "unsafe-output")
    assert "checkpoint" in err and "--out" in err
    assert files_of(tmp_path) == before


def test_build_refuses_an_out_that_holds_a_gguf_file(tmp_path, capsys):
    gguf = tmp_path / "models" / "model.gguf"
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF stands for the user's model file")
    for out in (gguf, gguf.parent, tmp_path):
        assert main(["build", str(gguf), "--out", str(out), "--force"]) == 1
        one_error_line(capsys, "unsafe-output")
        assert gguf.read_bytes() == b"GGUF stands for the user's model file"


def test_a_symlinked_out_that_is_the_checkpoint_is_refused(tmp_path):
    ckpt = fake_checkpoint(tmp_path / "ck")
    (tmp_path / "link").symlink_to(ckpt)
    with pytest.raises(staging.UnsafeOutputError):
        check_output(tmp_path / "link", True, inputs=[ckpt])


def test_out_inside_the_checkpoint_is_allowed(tmp_path):
    ckpt = fake_checkpoint(tmp_path / "ck")
    check_output(ckpt / "bundle", False, inputs=[ckpt])


def test_force_replaces_only_a_folder_kiln_wrote(tmp_path, capsys):
    ckpt = fake_checkpoint(tmp_path / "ck")
    documents = tmp_path / "documents"
    documents.mkdir()
    (documents / "thesis.txt").write_text("years of work")
    assert main(["build", str(ckpt), "--out", str(documents), "--force"]) == 1
    err = one_error_line(capsys, "unsafe-output")
    assert "kiln-config.json" in err
    assert (documents / "thesis.txt").read_text() == "years of work"
    a_file = tmp_path / "notes.txt"
    a_file.write_text("notes")
    with pytest.raises(staging.UnsafeOutputError, match="not a folder"):
        check_output(a_file, True, marker="kiln-config.json")
    # An earlier bundle and an empty folder may be replaced.
    (tmp_path / "bundle").mkdir()
    check_output(tmp_path / "bundle", True, marker="kiln-config.json")
    (tmp_path / "bundle" / "kiln-config.json").write_text("{}")
    check_output(tmp_path / "bundle", True, marker="kiln-config.json")


def test_site_refuses_an_out_that_holds_a_bundle(tmp_path, capsys):
    bundle = tmp_path / "bundles" / "model"
    bundle.mkdir(parents=True)
    (bundle / "kiln-config.json").write_text("{}")
    for out in (bundle, bundle.parent):
        assert main(["site", str(bundle), "--out", str(out), "--force"]) == 1
        assert "bundle" in one_error_line(capsys, "unsafe-output")
    assert (bundle / "kiln-config.json").read_text() == "{}"
    stuff = tmp_path / "stuff"
    stuff.mkdir()
    (stuff / "keep.txt").write_text("keep")
    with pytest.raises(staging.UnsafeOutputError, match="models.json"):
        build_site([bundle], stuff, force=True)
    assert (stuff / "keep.txt").read_text() == "keep"


# --- killed runs -----------------------------------------------------------------------------------

KILLED_RUN = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from kiln.staging import staged_folder
    with staged_folder(Path(sys.argv[1])) as staging:
        (staging / "kiln-config.json").write_text("{}")
        (staging / "params_shard_0.bin").write_bytes(bytes(1000))
        os.kill(os.getpid(), signal.SIGKILL)
""")


def test_a_build_killed_with_sigkill_leaves_nothing_the_next_run_keeps(tmp_path):
    out = tmp_path / "bundle"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(out)], cwd=toolchain.REPO_ROOT)
    assert proc.wait(timeout=60) == -9
    leftovers = [p.name for p in tmp_path.iterdir()]
    # Nothing that looks like a bundle: only the hidden staging folder of the dead process.
    assert leftovers == [f".bundle.partial-{proc.pid}"]
    with staged_folder(out) as folder:
        (folder / "kiln-config.json").write_text("{}")
    # Before: .bundle.partial-PID stayed forever (gigabytes for a real model).
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_only_leftovers_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    names = [f".a.partial-{dead_pid}", f".b.old-{dead_pid}", f".c.partial-{os.getpid()}",
             f".d.partial-{os.getppid()}", "e.partial-1", ".f.partial-x"]
    for name in names:
        (tmp_path / name).mkdir()
    (tmp_path / f".g.partial-{dead_pid}").write_text("a file, not a staging folder")
    removed = remove_leftovers(tmp_path)
    assert sorted(p.name for p in removed) == [f".a.partial-{dead_pid}", f".b.old-{dead_pid}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[2:] + [f".g.partial-{dead_pid}"])


# --- temp folders on another filesystem ------------------------------------------------------------

def _other_filesystem(path: Path) -> Path | None:
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and os.stat(shm).st_dev != os.stat(path).st_dev:
        return shm
    return None


def test_linking_with_tmpdir_on_another_filesystem(tmp_path, monkeypatch):
    # Before: os.replace from $TMPDIR into the bundle raised [Errno 18] Invalid cross-device link
    # wherever /tmp is a tmpfs. emcc is replaced by a stand-in that writes what it would.
    other = _other_filesystem(tmp_path)
    if other is None:
        pytest.skip("no writable filesystem other than the test folder's (/dev/shm)")
    scratch = other / f"kiln-test-{os.getpid()}"
    scratch.mkdir(exist_ok=True)
    monkeypatch.setattr("tempfile.tempdir", str(scratch))
    monkeypatch.setattr(toolchain, "find_tool", lambda name: name)
    monkeypatch.setattr(toolchain, "runtime_objects", lambda threads=False: [])
    monkeypatch.setattr(toolchain, "emcc_env", lambda: {})

    def fake_emcc(cmd, **_kwargs):
        glue = Path(cmd[cmd.index("-o") + 1])
        glue.with_suffix(".wasm").write_bytes(b"\0asm linked")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(subprocess, "run", fake_emcc)
    try:
        out = tmp_path / "bundle" / "model_wasm.wasm"
        out.parent.mkdir()
        wasm_library.link_wasm(out, [])
        assert out.read_bytes() == b"\0asm linked"
        assert [p.name for p in out.parent.iterdir()] == ["model_wasm.wasm"]
    finally:
        scratch.rmdir()


def test_move_file_copies_where_rename_cannot(tmp_path, monkeypatch):
    src, dst = tmp_path / "a.wasm", tmp_path / "out" / "b.wasm"
    dst.parent.mkdir()
    src.write_bytes(b"library")
    replace = os.replace
    calls = []

    def cross_device_once(a, b):
        calls.append((a, b))
        if len(calls) == 1:
            raise OSError(errno.EXDEV, "Invalid cross-device link", str(a))
        return replace(a, b)

    monkeypatch.setattr(os, "replace", cross_device_once)
    move_file(src, dst)
    assert dst.read_bytes() == b"library" and not src.exists()
    assert [p.name for p in dst.parent.iterdir()] == ["b.wasm"]  # the copy was renamed into place


# --- operating-system errors are one line --------------------------------------------------------

def test_os_errors_become_one_line_with_a_fix():
    # The CLI prints these for any OSError (tests/test_build_validation.py runs one through kiln build).
    err = str(os_error(OSError(errno.EROFS, "Read-only file system", "/mnt/ro/bundle")))
    assert err == ("error[io]: Read-only file system (/mnt/ro/bundle); the disk is read-only: choose a location on "
                   "a writable disk.")
    assert "write to" in str(os_error(PermissionError(errno.EACCES, "Permission denied", "/x")))
    assert str(os_error(OSError("odd"))).startswith("error[io]: OSError: odd; check the path")


def test_usage_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["build", "ck", "--context-window", "many"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error[usage]: ") and "--context-window" in err
