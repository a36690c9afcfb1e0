"""Which backend opens which artifact. Adding a backend: one module, one line here."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import IsdnetError, missing
from .backend import Backend

# name -> (module, factory). Factories take (path, device, **options).
BACKENDS: dict[str, tuple[str, str]] = {
    "onnxruntime": ("isdnet_deploy.runtime.onnxruntime_backend", "OnnxRuntimeBackend"),
    "tensorrt": ("isdnet_deploy.runtime.tensorrt_backend", "open_engine"),
    "openvino": ("isdnet_deploy.runtime.openvino_backend", "OpenVinoBackend"),
    "torch": ("isdnet_deploy.runtime.torch_backend", "TorchBackend"),
}
SUFFIXES = {".onnx": "onnxruntime", ".engine": "tensorrt", ".plan": "tensorrt",
            ".trt": "tensorrt", ".pth": "torch", ".pt": "torch"}

# Backends that read an exported .onnx file as it is: independent implementations of the
# ONNX op set, each an artifact is verified on (export, quantize, compare --verify-on).
ONNX_CONSUMERS = ("onnxruntime", "openvino")


def installed_consumers() -> tuple[str, ...]:
    """The ONNX consumers importable here, in ``ONNX_CONSUMERS`` order: the default set an
    artifact is verified on."""
    return tuple(c for c in ONNX_CONSUMERS if importlib.util.find_spec(c) is not None)


def check_consumers(consumers: Iterable[str]) -> tuple[str, ...]:
    """``consumers`` without repeats, each a known and installed ONNX consumer."""
    chosen = tuple(dict.fromkeys(c.strip().lower() for c in consumers if c.strip()))
    if not chosen:
        raise IsdnetError(f"no ONNX consumer named; choose from: {', '.join(ONNX_CONSUMERS)}")
    for consumer in chosen:
        if consumer not in ONNX_CONSUMERS:
            raise IsdnetError(f"unknown ONNX consumer {consumer!r}; choose from: "
                              f"{', '.join(ONNX_CONSUMERS)}")
        if importlib.util.find_spec(consumer) is None:
            raise missing(consumer, consumer if consumer == "openvino" else None,
                          why=f"needed to verify on {consumer}")
    return chosen


def backend_for(path: str | Path | None, backend: str = "auto") -> str:
    if backend != "auto":
        if backend not in BACKENDS:
            raise IsdnetError(f"unknown backend {backend!r}; choose one of: auto, "
                              f"{', '.join(BACKENDS)}")
        return backend
    if path is None:
        return "torch"
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        what = (f"cannot tell what {path} is from its extension {suffix or '(none)'}; use "
                f".onnx, .engine or .pth")
        raise IsdnetError(f"{what}, or pass backend=", cli=what)
    return SUFFIXES[suffix]


def open_backend(path: str | Path | None, backend: str = "auto", device: str | None = None,
                 **options: Any) -> Backend:
    """``device=None`` means the backend's natural device: CUDA for TensorRT engines, the
    CPU for everything else."""
    name = backend_for(path, backend)
    if device is None:
        device = "cuda" if name == "tensorrt" else "cpu"
    if path is not None and not Path(path).exists():
        raise IsdnetError(f"file not found: {path}")
    module, factory = BACKENDS[name]
    return getattr(importlib.import_module(module), factory)(path, device, **options)
