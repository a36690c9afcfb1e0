"""Accepting images from whatever a pipeline holds: NumPy, buffers, DLPack, CUDA arrays."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import IsdnetError


def is_cuda_array(obj: Any) -> bool:
    if hasattr(obj, "__cuda_array_interface__"):
        return True
    device = getattr(obj, "__dlpack_device__", None)
    return bool(device) and device()[0] in (2, 13)  # kDLCUDA, kDLCUDAManaged


def to_host_array(obj: Any) -> np.ndarray:
    """A NumPy view of ``obj`` without copying where possible (buffer protocol, DLPack)."""
    if isinstance(obj, np.ndarray):
        return obj
    if is_cuda_array(obj):
        raise IsdnetError("a CUDA array was given to a CPU backend; copy it to host memory "
                          "or load the artifact with device='cuda'")
    if hasattr(obj, "__dlpack__"):
        try:
            return np.from_dlpack(obj)
        except (TypeError, RuntimeError, BufferError) as exc:
            raise IsdnetError(f"could not read the {type(obj).__name__} via DLPack ({exc})"
                              ) from None
    try:
        return np.asarray(memoryview(obj))
    except TypeError:
        raise IsdnetError(f"cannot read an image from a {type(obj).__name__}; pass a NumPy "
                          f"array, a buffer, or an object supporting DLPack") from None


def classify_image(array: np.ndarray) -> str:
    """'hwc8' for HxWx3 uint8, 'nchw' for 1x3xHxW float; anything else is an error."""
    if array.ndim == 3 and array.dtype == np.uint8:
        if array.shape[2] != 3:
            raise IsdnetError(f"image has {array.shape[2]} channels; ISDNet takes 3-channel "
                              f"RGB (drop alpha / convert grayscale first)")
        return "hwc8"
    if array.ndim == 4 and np.issubdtype(array.dtype, np.floating):
        if array.shape[0] != 1 or array.shape[1] != 3:
            raise IsdnetError(f"float input must be 1x3xHxW (normalised RGB); got "
                              f"{'x'.join(map(str, array.shape))}")
        return "nchw"
    if array.ndim == 2:
        raise IsdnetError(f"image is single-channel {array.shape[0]}x{array.shape[1]}; "
                          f"convert it to 3-channel RGB first")
    raise IsdnetError(f"unsupported image: shape {array.shape}, dtype {array.dtype}; pass "
                      f"HxWx3 uint8 RGB/BGR or a normalised 1x3xHxW float array")
