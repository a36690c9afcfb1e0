"""The independent ONNX consumers every exported graph is run on: ONNX Runtime and OpenVINO.

Both libraries are called directly here, in one place, not through the runtime's backends
(``runtime/openvino_backend.py`` and the ONNX Runtime one): the tests judge an artifact with
the consumer as a third party would use it, they also run bare graphs that carry no
contract, and OpenVINO's bf16 hint is asked for as it is (the backend refuses it on CPUs
without native BF16). OpenVINO is in the ``test`` extra; without it the OpenVINO cases skip
and say so.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest

CONSUMERS = ("onnxruntime", "openvino")


@functools.lru_cache(maxsize=2)  # ~70 MB of weights each
def _onnxruntime_session(path: str):
    import onnxruntime as ort

    return ort.InferenceSession(path, providers=["CPUExecutionProvider"])


@functools.lru_cache(maxsize=2)
def _openvino_model(path: str, precision: str):
    ov = pytest.importorskip("openvino", reason="OpenVINO is not installed: pip install "
                                                "'isdnet-deploy[openvino]'")
    return ov.Core().compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": precision})


def run(consumer: str, path: str | Path, feeds: dict[str, np.ndarray],
        precision: str = "f32") -> np.ndarray:
    """The single output of the ONNX file at ``path`` on ``consumer`` (CPU)."""
    if consumer == "onnxruntime":
        (result,) = _onnxruntime_session(str(path)).run(None, feeds)
        return result
    if consumer == "openvino":
        compiled = _openvino_model(str(path), precision)
        return compiled(feeds)[compiled.output(0)]
    raise ValueError(f"unknown consumer {consumer!r}")
