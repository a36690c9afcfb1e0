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
from .inputs import as_device_array

log = logging.getLogger(__name__)

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
        self.sidecar: EngineSidecar = read_sidecar(self.path)
        index = trt_compat.parse_device(device)
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
        self._pending_h2d = False
        self._tensors: dict[str, _Tensor] = {}
        self._allocate()
        super().__init__(self.sidecar.contract, f"cuda:{index}")

    # --- setup -------------------------------------------------------------------------

    def _io_tensors(self) -> dict[str, _Tensor]:
        trt, engine = self._trt, self._engine
        contract = self.sidecar.contract
        specs = {s.name: s for s in [*contract.inputs, *contract.outputs]}
        tensors = {}
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            if name not in specs:
                raise IsdnetError(f"{self.path} has tensor {name!r} that its sidecar does not "
                                  f"describe; {rebuild_hint(self.sidecar, self.path)}")
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            tensors[name] = _Tensor(name, is_input, dtype, specs[name].layout)
        absent = [s.name for s in contract.inputs if s.name not in tensors]
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

    def _run(self, feeds: Mapping[str, Any], out: dict[str, Any]) -> dict[str, Any]:
        for name in self.input_names:
            self._bind_input(self._tensors[name], feeds[name])
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
        if not self.closed:
            self._cuda.call("cudaStreamSynchronize", self._stream)
            self._pending_h2d = False

    def _close(self) -> None:
        self._cuda.call("cudaStreamSynchronize", self._stream)
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
        if not self.closed:
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
