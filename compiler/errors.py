"""User-facing errors: one sentence naming the problem and the fix, plus a stable code."""

import errno


class KilnError(Exception):
    """An error the user can act on; the CLI prints `error[code]: message` and exits non-zero."""

    code = "kiln"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return f"error[{self.code}]: {self.message}"


class ToolchainError(KilnError):
    """A piece of the build toolchain (emcc, the built web runtime, Node, Chromium) is missing."""

    code = "toolchain"


class CheckpointError(KilnError):
    """The checkpoint folder is missing, incomplete, or has a tensor of the wrong name/shape."""

    code = "checkpoint"


class ConfigFieldError(CheckpointError):
    """A field of config.json (or of the config a GGUF file's metadata gives) is missing, of the wrong
    type or out of range. `field` and `problem` let a reader of another format reword the source."""

    def __init__(self, field: str, problem: str, *, source: str = "config.json",
                 fix: str = "fix config.json or download the checkpoint again"):
        self.field, self.problem = field, problem
        super().__init__(f"{source} field {field} {problem}; {fix}.")


class UnsupportedError(KilnError):
    """An architecture, config field or option kiln does not implement; the message lists what is."""

    code = "unsupported"


class OutputExistsError(KilnError):
    code = "output-exists"


class UnsafeOutputError(KilnError):
    """An --out that replacing would destroy the input (the checkpoint, a bundle) or unrelated files."""

    code = "unsafe-output"


class FileSystemError(KilnError):
    """The operating system refused a read or write (permissions, read-only disk, no space, ...)."""

    code = "io"


class Interrupted(KilnError):
    """Ctrl+C: the command stopped, and what it was writing was removed."""

    code = "interrupted"


class BundleError(KilnError):
    """A bundle folder given to `kiln site` is missing, incomplete or not a kiln bundle."""

    code = "bundle"


REPORT_HINT = ("this is a bug in kiln or TVM, not in your checkpoint: please report this line with the checkpoint's "
               "config.json and the output of the same command run with --verbose")


class InternalCompilerError(KilnError):
    """The compiler itself (TVM or kiln's passes) failed on an input kiln accepted: a bug to report."""

    code = "internal"

    def __init__(self, detail: str, *, target: str | None = None, stage: str | None = None,
                 architecture: str | None = None):
        self.detail, self.target, self.stage, self.architecture = detail, target, stage, architecture
        super().__init__(self._sentence())

    def _sentence(self) -> str:
        what = f"compiling {self.architecture or 'the model'}"
        if self.target:
            what += f" for {self.target}"
        where = f" in {self.stage}" if self.stage else ""
        return f"{what} failed{where} ({self.detail}); {REPORT_HINT}."

    def for_architecture(self, architecture: str | None) -> "InternalCompilerError":
        self.architecture = architecture
        self.message = self._sentence()
        return self


def describe_exception(err: BaseException, limit: int = 300) -> str:
    """`Type: first line of the message`, short enough for one line of an error."""
    text = next((line.strip() for line in str(err).splitlines() if line.strip()), "")
    text = f"{type(err).__name__}: {text}" if text else type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


# errno -> what the user can do about it; anything else gets the generic advice.
_OS_ERROR_FIXES = {
    errno.EACCES: "choose a location you can write to, or fix its permissions",
    errno.EPERM: "choose a location you can write to, or fix its permissions",
    errno.EROFS: "the disk is read-only: choose a location on a writable disk",
    errno.ENOSPC: "free some disk space or choose a location on another disk",
    errno.EDQUOT: "your disk quota is full: free some space or choose another location",
    errno.ENOTDIR: "a part of the path is a file, not a folder: choose another path",
    errno.EEXIST: "a part of the path is a file, not a folder: choose another path",
}


def os_error(err: OSError) -> FileSystemError:
    """An OSError as one user-facing line: the path, the system's reason, and what to do."""
    reason = err.strerror or describe_exception(err)
    where = f" ({err.filename})" if err.filename else ""
    fix = _OS_ERROR_FIXES.get(err.errno, "check the path, its permissions and the free disk space")
    return FileSystemError(f"{reason}{where}; {fix}.")
