"""Which backend opens which artifact. Adding a backend: one module, one line here."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from ..errors import IsdnetError
from .backend import Backend

# name -> (module, factory). Factories take (path, device, **options).
BACKENDS: dict[str, tuple[str, str]] = {
    "onnxruntime": ("isdnet_deploy.runtime.onnxruntime_backend", "OnnxRuntimeBackend"),
    "tensorrt": ("isdnet_deploy.runtime.tensorrt_backend", "open_engine"),
    "torch": ("isdnet_deploy.runtime.torch_backend", "TorchBackend"),
}
SUFFIXES = {".onnx": "onnxruntime", ".engine": "tensorrt", ".plan": "tensorrt",
            ".trt": "tensorrt", ".pth": "torch", ".pt": "torch"}


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
