"""One exception type for everything a user can fix.

The CLI prints ``str(error)`` as a single line and exits non-zero, so every message must
name the problem *and* the fix; anything else reaching the top is a bug in this toolkit.
"""


class IsdnetError(Exception):
    """A problem with the user's input, files or environment, stated in one line."""


class MissingDependencyError(IsdnetError):
    """An optional package (TensorRT, cuda-python, onnxruntime-gpu…) or a GPU is absent."""


def missing(package: str, extra: str | None = None, why: str = "") -> MissingDependencyError:
    hint = f"pip install 'isdnet-deploy[{extra}]'" if extra else f"pip install {package}"
    reason = f" ({why})" if why else ""
    return MissingDependencyError(f"{package} is not installed{reason}; install it with: {hint}")
