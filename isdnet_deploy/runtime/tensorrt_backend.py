"""TensorRT backend for ``*.engine`` files built by ``isdnet-deploy build``.

Opening checks the sidecar before TensorRT sees the bytes: an engine from another TensorRT
version or GPU model, or one whose bytes differ from what the sidecar recorded (truncated,
replaced), is refused with "rebuild it" instead of a crash inside TensorRT.

Data movement:
* host (numpy) inputs are staged through pinned buffers and copied asynchronously;
* device inputs (``__cuda_array_interface__`` or DLPack objects) are bound zero-copy;
* outputs go to caller-owned buffers when given (device ones zero-copy), else to pinned
  buffers copied out into fresh numpy arrays.
When every output lives on the device, ``run`` returns without waiting; ``synchronize``
waits, which is what the FPS protocol needs.

CUDA comes from NVIDIA's cuda-python (``cuda.bindings.runtime``); no torch import.
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from ..engine import trt_compat
from ..engine.sidecar import (
    EngineSidecar,
    check_compatible,
    read_engine_bytes,
    read_sidecar,
    rebuild_hint,
)
from ..errors import IsdnetError
from .backend import Backend

log = logging.getLogger(__name__)

_DLPACK_CUDA = 2  # DLDeviceType kDLCUDA
_DLPACK_CUDA_MANAGED = 13


# --- device arrays --------------------------------------------------------------------------

@dataclass
class DeviceArray:
    """Pointer, shape and dtype of a caller's device buffer (kept alive via ``owner``)."""

    ptr: int
    shape: tuple[int, ...]
    dtype: np.dtype
    owner: Any


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


def _from_dlpack(obj: Any) -> DeviceArray:
    """Read a DLPack capsule's DLTensor without consuming it (its deleter still runs)."""
    capsule = obj.__dlpack__()
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


def as_device_array(obj: Any) -> DeviceArray | None:
    """The device buffer behind ``obj``, or None when it is a host array."""
    iface = getattr(obj, "__cuda_array_interface__", None)
    if iface is not None:
        shape = tuple(int(d) for d in iface["shape"])
        dtype = np.dtype(iface["typestr"])
        strides = iface.get("strides")
        if not _contiguous(shape, tuple(strides) if strides else None, dtype.itemsize):
            raise IsdnetError("device input is not C-contiguous; make it contiguous first")
        return DeviceArray(int(iface["data"][0]), shape, dtype, obj)
    device = getattr(obj, "__dlpack_device__", None)
    if device is not None and not isinstance(obj, np.ndarray):
        kind = int(device()[0])
        if kind in (_DLPACK_CUDA, _DLPACK_CUDA_MANAGED):
            return _from_dlpack(obj)
    return None


def check_in_profile(name: str, layout: str, shape: tuple[int, ...], low: tuple[int, ...],
                     high: tuple[int, ...]) -> None:
    """One line naming the allowed HxW range when ``shape`` is outside the engine profile."""
    def hw(dims: tuple[int, ...]) -> str:
        if "H" in layout and "W" in layout and len(dims) == len(layout):
            return f"{dims[layout.index('H')]}x{dims[layout.index('W')]}"
        return "x".join(map(str, dims))

    if len(shape) != len(low):
        raise IsdnetError(f"input {name!r} has {len(shape)} dimensions, the engine expects "
                          f"{len(low)} ({layout})")
    if any(s < lo or s > hi for s, lo, hi in zip(shape, low, high, strict=True)):
        raise IsdnetError(f"input {name!r} is {hw(shape)} ({layout} {list(shape)}) but this "
                          f"engine accepts {hw(low)} to {hw(high)}; resize the input or rebuild "
                          "with isdnet-deploy build --min/--max")


# --- CUDA memory through cuda-python ----------------------------------------------------------

class _Cuda:
    """The few cuda-python runtime calls the backend needs, with errors made readable."""

    def __init__(self, cudart: ModuleType) -> None:
        self.rt = cudart
        self.h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        self.d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost

    def call(self, name: str, *args: Any) -> Any:
        return trt_compat.check_cuda(getattr(self.rt, name)(*args), name)

    def malloc(self, nbytes: int) -> int:
        return int(self.call("cudaMalloc", max(nbytes, 1)))

    def malloc_host(self, nbytes: int) -> tuple[int, np.ndarray]:
        ptr = int(self.call("cudaMallocHost", max(nbytes, 1)))
        view = np.frombuffer((ctypes.c_uint8 * max(nbytes, 1)).from_address(ptr), np.uint8)
        return ptr, view[:nbytes]


@dataclass
class _Tensor:
    name: str
    is_input: bool
    dtype: np.dtype
    layout: str
    device_ptr: int = 0
    host_ptr: int = 0
    host: np.ndarray | None = None  # pinned staging bytes
    nbytes: int = 0
    min_shape: tuple[int, ...] = ()
    max_shape: tuple[int, ...] = ()


class TensorRTBackend(Backend):
    """A deserialized engine with one execution context and one CUDA stream."""

    name = "tensorrt"

    def __init__(self, path: str | os.PathLike, device: str = "cuda", *,
                 trt_module: ModuleType | None = None,
                 cudart_module: ModuleType | None = None) -> None:
        self.path = Path(path)
        self._closed = True
        self.sidecar: EngineSidecar = read_sidecar(self.path)
        self.contract = self.sidecar.contract
        index = trt_compat.parse_device(device)
        self.device = f"cuda:{index}"
        trt = trt_module or trt_compat.import_tensorrt()
        cudart = cudart_module or trt_compat.import_cudart()
        gpu = trt_compat.gpu_info(cudart, index)
        check_compatible(self.sidecar, self.path, trt_compat.tensorrt_version(trt), gpu)
        data = read_engine_bytes(self.path, self.sidecar)

        self._cuda = _Cuda(cudart)
        self._cuda.call("cudaSetDevice", index)
        self._trt = trt
        self._logger = trt_compat.make_logger(trt, "warning")
        self._runtime = trt.Runtime(self._logger)
        try:
            self._engine = self._runtime.deserialize_cuda_engine(data)
        except Exception as exc:  # some TensorRT builds raise instead of returning None
            raise IsdnetError(f"TensorRT cannot load {self.path} ({exc}); "
                              f"{rebuild_hint(self.sidecar, self.path)}") from None
        if self._engine is None:
            raise IsdnetError(f"TensorRT cannot load {self.path} (corrupt or incompatible "
                              f"engine); {rebuild_hint(self.sidecar, self.path)}")
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise IsdnetError(f"TensorRT could not create an execution context for "
                              f"{self.path} (out of GPU memory?)")
        self._stream = self._cuda.call("cudaStreamCreate")
        self._stream_handle = int(self._stream)
        self._closed = False
        self._pending_h2d = False
        self._tensors: dict[str, _Tensor] = {}
        self._allocate()

    # --- setup -------------------------------------------------------------------------

    def _io_tensors(self) -> dict[str, _Tensor]:
        trt, engine = self._trt, self._engine
        specs = {s.name: s for s in [*self.contract.inputs, *self.contract.outputs]}
        tensors = {}
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            if name not in specs:
                raise IsdnetError(f"{self.path} has tensor {name!r} that its sidecar does not "
                                  f"describe; {rebuild_hint(self.sidecar, self.path)}")
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            tensors[name] = _Tensor(name, is_input, dtype, specs[name].layout)
        absent = [s.name for s in self.contract.inputs if s.name not in tensors]
        if absent:
            raise IsdnetError(f"{self.path} lacks input {absent[0]!r} named in its sidecar; "
                              f"{rebuild_hint(self.sidecar, self.path)}")
        return tensors

    def _allocate(self) -> None:
        """Device and pinned buffers sized for the profile's largest shapes, made once."""
        self._tensors = self._io_tensors()
        inputs = [t for t in self._tensors.values() if t.is_input]
        for t in inputs:
            low, _, high = self._engine.get_tensor_profile_shape(t.name, 0)
            t.min_shape, t.max_shape = tuple(low), tuple(high)
            if not self._context.set_input_shape(t.name, t.max_shape):
                raise IsdnetError(f"TensorRT rejected the profile's own maximum shape for "
                                  f"{t.name!r}; {rebuild_hint(self.sidecar, self.path)}")
        for t in self._tensors.values():
            shape = t.max_shape if t.is_input else tuple(self._context.get_tensor_shape(t.name))
            if any(d < 0 for d in shape):
                raise IsdnetError(f"output {t.name!r} has a data-dependent shape {shape}, "
                                  "which this backend does not support")
            t.max_shape = shape
            t.nbytes = int(np.prod(shape, dtype=np.int64)) * t.dtype.itemsize
            t.device_ptr = self._cuda.malloc(t.nbytes)
            t.host_ptr, t.host = self._cuda.malloc_host(t.nbytes)

    # --- running -----------------------------------------------------------------------

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self._tensors.values() if t.is_input]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self._tensors.values() if not t.is_input]

    def profile_range(self, name: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
        t = self._tensors[name]
        return t.min_shape, t.max_shape

    def _bind_input(self, t: _Tensor, value: Any) -> None:
        device = as_device_array(value)
        if device is not None:
            shape, dtype, ptr = device.shape, device.dtype, device.ptr
        else:
            value = np.asarray(value)
            shape, dtype = value.shape, value.dtype
        if dtype != t.dtype:
            raise IsdnetError(f"input {t.name!r} is {dtype}, the engine takes {t.dtype}")
        check_in_profile(t.name, t.layout, tuple(shape), t.min_shape, t.max_shape)
        if not self._context.set_input_shape(t.name, tuple(shape)):
            raise IsdnetError(f"TensorRT rejected shape {tuple(shape)} for input {t.name!r}")
        if device is None:
            if self._pending_h2d:  # an earlier asynchronous copy may still read the buffer
                self.synchronize()
            nbytes = value.nbytes
            np.copyto(t.host[:nbytes].view(t.dtype).reshape(shape), value, casting="no")
            self._cuda.call("cudaMemcpyAsync", t.device_ptr, t.host_ptr, nbytes,
                            self._cuda.h2d, self._stream)
            self._pending_h2d = True
            ptr = t.device_ptr
        self._context.set_tensor_address(t.name, ptr)

    def run(self, feeds: Mapping[str, Any],
            out: Mapping[str, Any] | None = None) -> dict[str, Any]:
        if self._closed:
            raise IsdnetError("this TensorRT backend is closed; open the engine again")
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise IsdnetError(f"missing input {missing[0]!r}; the engine takes "
                              f"{', '.join(self.input_names)}")
        for name in self.input_names:
            self._bind_input(self._tensors[name], feeds[name])
        out = dict(out or {})
        unknown = [n for n in out if n not in self.output_names]
        if unknown:
            raise IsdnetError(f"no output named {unknown[0]!r}; the engine has "
                              f"{', '.join(self.output_names)}")
        results: dict[str, Any] = {}
        to_host: list[tuple[_Tensor, tuple[int, ...], np.ndarray | None]] = []
        for name in self.output_names:
            t = self._tensors[name]
            shape = tuple(self._context.get_tensor_shape(name))
            target = out.get(name)
            device = as_device_array(target) if target is not None else None
            if device is not None:
                if device.shape != shape or device.dtype != t.dtype:
                    raise IsdnetError(f"output buffer {name!r} is {device.dtype}"
                                      f"{list(device.shape)}, the engine writes "
                                      f"{t.dtype}{list(shape)}")
                self._context.set_tensor_address(name, device.ptr)
                results[name] = target
                continue
            if target is not None and (target.shape != shape or target.dtype != t.dtype):
                raise IsdnetError(f"output buffer {name!r} is {target.dtype}{list(target.shape)},"
                                  f" the engine writes {t.dtype}{list(shape)}")
            self._context.set_tensor_address(name, t.device_ptr)
            to_host.append((t, shape, target))
        if not self._context.execute_async_v3(self._stream_handle):
            raise IsdnetError(f"TensorRT failed to run {self.path} (see the log above)")
        if not to_host:
            return results
        for t, shape, _ in to_host:
            nbytes = int(np.prod(shape, dtype=np.int64)) * t.dtype.itemsize
            self._cuda.call("cudaMemcpyAsync", t.host_ptr, t.device_ptr, nbytes,
                            self._cuda.d2h, self._stream)
        self.synchronize()
        for t, shape, target in to_host:
            nbytes = int(np.prod(shape, dtype=np.int64)) * t.dtype.itemsize
            staged = t.host[:nbytes].view(t.dtype).reshape(shape)
            if target is None:
                results[t.name] = staged.copy()
            else:
                np.copyto(target, staged)
                results[t.name] = target
        return results

    def synchronize(self) -> None:
        if not self._closed:
            self._cuda.call("cudaStreamSynchronize", self._stream)
            self._pending_h2d = False

    def close(self) -> None:
        if self._closed:
            return
        self.synchronize()
        self._closed = True
        for t in self._tensors.values():
            if t.device_ptr:
                self._cuda.call("cudaFree", t.device_ptr)
            if t.host_ptr:
                t.host = None
                self._cuda.call("cudaFreeHost", t.host_ptr)
        self._tensors = {}
        self._context = None
        self._engine = None
        self._cuda.call("cudaStreamDestroy", self._stream)

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            try:
                self.close()
            except Exception:  # interpreter shutdown: CUDA may already be gone
                log.debug("TensorRT backend cleanup failed", exc_info=True)


def open_engine(path: str | os.PathLike, device: str = "cuda", **options: Any
                ) -> TensorRTBackend:
    """Open an ``isdnet-deploy build`` engine on ``device`` ('cuda' or 'cuda:N')."""
    if options:
        raise IsdnetError(f"the TensorRT backend takes no option {next(iter(options))!r}; "
                          "the engine's settings were fixed by isdnet-deploy build")
    return TensorRTBackend(path, device)
