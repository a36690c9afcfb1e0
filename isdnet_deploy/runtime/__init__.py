"""The embeddable runtime: no torch import, works on raw buffers, reads artifact contracts.

    from isdnet_deploy import runtime
    seg = runtime.load("model.onnx")           # or "model.engine", or "model.pth" (torch)
    labels = seg.predict(image_hwc_uint8)      # HxW class ids at the image's size
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..contract import Contract
from .backend import Backend
from .pipeline import Pipeline
from .predictor import Predictor, TileSettings
from .preprocess import prepare_feeds, resize_image, scaled_size
from .registry import BACKENDS, backend_for, open_backend
from .segmenter import Segmenter, one_error_type


def load(path: str | Path | None, backend: str = "auto", device: str | None = None,
         scale: bool = True, **options: Any) -> Segmenter:
    """Open an artifact (.onnx, TensorRT .engine, or a .pth checkpoint for the torch
    reference; ``None`` gives the reference with random weights) as a ``Segmenter``.

    ``device`` defaults to CUDA for engines and the CPU otherwise. ``options`` go to the
    backend (ONNX Runtime: threads, opt_level, tensorrt_ep,
    trt_cache, trt_fp16, contract, mem_pattern; OpenVINO (``backend="openvino"``, never
    chosen by "auto"): precision "f32"|"bf16", threads, contract, see
    ``runtime.openvino_backend``; torch: threads, compile, precision, channels_last,
    cuda_graphs, see ``runtime.torch_backend``). Every failure is an ``IsdnetError``.
    """
    with one_error_type(f"opening {path}", "check the file and the options given"):
        return Segmenter(open_backend(path, backend, device, **options), scale=scale)


__all__ = ["BACKENDS", "Backend", "Contract", "Pipeline", "Predictor", "Segmenter",
           "TileSettings", "backend_for", "load", "open_backend", "prepare_feeds",
           "resize_image", "scaled_size"]
