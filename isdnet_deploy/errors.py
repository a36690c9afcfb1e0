"""One exception type for everything a user can fix.

The CLI prints the error as a single line and exits non-zero, so every message must name
the problem *and* the fix; anything else reaching the top is a bug in this toolkit. Where
the fix differs between the Python API and the command line (a keyword argument there, an
option here), ``cli`` holds the command-line wording and the CLI prints that instead.
"""

from __future__ import annotations


class IsdnetError(Exception):
    """A problem with the user's input, files or environment, stated in one line."""

    def __init__(self, message: str, *, cli: str | None = None) -> None:
        super().__init__(message)
        self.cli = cli

    def for_cli(self) -> str:
        """The message a command-line user should see."""
        return self.cli or str(self)


class MissingDependencyError(IsdnetError):
    """An optional package (TensorRT, cuda-python, onnxruntime-gpu…) or a GPU is absent."""


def missing(package: str, extra: str | None = None, why: str = "") -> MissingDependencyError:
    hint = f"pip install 'isdnet-deploy[{extra}]'" if extra else f"pip install {package}"
    reason = f" ({why})" if why else ""
    return MissingDependencyError(f"{package} is not installed{reason}; install it with: {hint}")


def one_line(cause: BaseException | str) -> str:
    """An exception's text (or any text) on one line, whole: newlines and runs of blanks
    collapse to single spaces. Errors quote the underlying reason this way instead of cutting
    it at some length, which can drop the very part that says what went wrong."""
    text = " ".join(str(cause).split())
    if isinstance(cause, BaseException) and not text:
        return type(cause).__name__
    return text
