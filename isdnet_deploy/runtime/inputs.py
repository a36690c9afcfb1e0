"""Accepting images from whatever a pipeline holds: NumPy, buffers, DLPack, CUDA arrays."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
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


# --- device arrays (CUDA Array Interface, DLPack) ---------------------------------------

_DLPACK_CUDA = 2  # DLDeviceType kDLCUDA
_DLPACK_CUDA_MANAGED = 13


# --- device arrays --------------------------------------------------------------------------

@dataclass
class DeviceArray:
    """Pointer, shape and dtype of a caller's device buffer (kept alive via ``owner``).

    ``stream`` is the producer's CUDA stream from ``__cuda_array_interface__`` (v3), whose
    work a consumer must wait for; None when no wait is needed (absent key, or DLPack, whose
    producer orders its work onto the consumer's stream given to ``__dlpack__``)."""

    ptr: int
    shape: tuple[int, ...]
    dtype: np.dtype
    owner: Any
    stream: int | None = None


class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int), ("device_id", ctypes.c_int)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", _DLDevice), ("ndim", ctypes.c_int),
                ("dtype", _DLDataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


_DL_KINDS = {0: "i", 1: "u", 2: "f", 6: "b"}  # kDLInt, kDLUInt, kDLFloat, kDLBool


def _contiguous(shape: tuple[int, ...], strides: tuple[int, ...] | None, itemsize: int) -> bool:
    if strides is None:
        return True
    expected = itemsize
    for dim, stride in zip(reversed(shape), reversed(strides), strict=True):
        if dim > 1 and stride != expected:
            return False
        expected *= dim
    return True


def _from_dlpack(obj: Any, stream: int | None) -> DeviceArray:
    """Read a DLPack capsule's DLTensor without consuming it (its deleter still runs)."""
    capsule = obj.__dlpack__() if stream is None else obj.__dlpack__(stream=stream)
    get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    get_pointer.restype, get_pointer.argtypes = ctypes.c_void_p, [ctypes.py_object,
                                                                  ctypes.c_char_p]
    tensor = _DLTensor.from_address(get_pointer(capsule, b"dltensor"))  # DLTensor comes first
    shape = tuple(tensor.shape[i] for i in range(tensor.ndim))
    kind = _DL_KINDS.get(tensor.dtype.code)
    if kind is None or tensor.dtype.lanes != 1:
        raise IsdnetError("DLPack input has an unsupported dtype; pass float32/float16/uint8")
    dtype = np.dtype(f"{kind}{tensor.dtype.bits // 8}") if kind != "b" else np.dtype(bool)
    strides = (None if not tensor.strides else
               tuple(tensor.strides[i] * dtype.itemsize for i in range(tensor.ndim)))
    if not _contiguous(shape, strides, dtype.itemsize):
        raise IsdnetError("DLPack input is not contiguous; make it contiguous first")
    return DeviceArray(int(tensor.data or 0) + int(tensor.byte_offset), shape, dtype,
                       (obj, capsule))


def as_device_array(obj: Any, stream: int | None = None) -> DeviceArray | None:
    """The device buffer behind ``obj``, or None when it is a host array.

    ``stream``: the consumer's CUDA stream, passed to ``__dlpack__(stream=...)`` so that the
    producer orders its pending work before it (None: DLPack's default, the legacy default
    stream)."""
    iface = getattr(obj, "__cuda_array_interface__", None)
    if iface is not None:
        shape = tuple(int(d) for d in iface["shape"])
        dtype = np.dtype(iface["typestr"])
        strides = iface.get("strides")
        if not _contiguous(shape, tuple(strides) if strides else None, dtype.itemsize):
            raise IsdnetError("device input is not C-contiguous; make it contiguous first")
        return DeviceArray(int(iface["data"][0]), shape, dtype, obj, iface.get("stream"))
    device = getattr(obj, "__dlpack_device__", None)
    if device is not None and not isinstance(obj, np.ndarray):
        kind = int(device()[0])
        if kind in (_DLPACK_CUDA, _DLPACK_CUDA_MANAGED):
            return _from_dlpack(obj, stream)
    return None
