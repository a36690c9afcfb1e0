"""isdnet-deploy: ISDNet from a PyTorch checkpoint to fast inference engines.

Importing the package imports no torch; ``load_model`` and ``export_onnx`` pull it in
when first used, so ``isdnet_deploy.runtime`` stays embeddable without torch.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "load_model": ("isdnet_deploy.model.checkpoint", "load_model"),
    "build_model": ("isdnet_deploy.model.checkpoint", "build_model"),
    "export_onnx": ("isdnet_deploy.export.onnx_export", "export_onnx"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'isdnet_deploy' has no attribute {name!r}")


__all__ = ["__version__", "build_model", "export_onnx", "load_model"]
