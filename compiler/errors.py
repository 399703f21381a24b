"""User-facing errors: one sentence naming the problem and the fix, plus a stable code."""


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


class UnsupportedError(KilnError):
    """An architecture, config field or option kiln does not implement; the message lists what is."""

    code = "unsupported"


class OutputExistsError(KilnError):
    code = "output-exists"


class BundleError(KilnError):
    """A bundle folder given to `kiln site` is missing, incomplete or not a kiln bundle."""

    code = "bundle"
