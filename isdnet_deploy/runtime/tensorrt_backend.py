"""TensorRT backend for ``*.engine`` files built by ``isdnet-deploy build``.

Opening checks the sidecar before TensorRT sees the bytes: an engine from another TensorRT
version or GPU model, or one whose bytes differ from what the sidecar recorded (truncated,
replaced), is refused with "rebuild it" instead of a crash inside TensorRT.

Data movement:
* host (numpy) inputs are staged through pinned buffers and copied asynchronously;
* device inputs (``__cuda_array_interface__`` or DLPack objects) are bound zero-copy;
* outputs go to caller-owned buffers when given (device ones zero-copy), else to pinned
  buffers copied out into fresh numpy arrays.
TensorRT needs every tensor address 256-byte aligned (``setTensorAddress`` in
NvInferRuntime.h, 10.x and 11.x) and says no by returning False; a caller's device buffer
that is not (a DLPack view with a ``byte_offset``, a slice) is staged through the backend's
own buffer with a device-to-device copy.

Stream contract:
* Opened without ``stream``, the backend runs on a CUDA stream of its own and ``run``
  returns when the outputs are complete, device outputs included.
* Opened with ``stream=`` (a ``cudaStream_t`` handle: an int such as
  ``torch.cuda.current_stream().cuda_stream``, or a cuda-python stream), everything is
  queued on that stream and ``run`` returns as soon as it is queued when every output is a
  caller-owned device buffer: the caller orders its later work on that stream, or calls
  ``synchronize``. Host outputs are complete on return either way. The caller's stream is
  never destroyed.
* Device inputs and output buffers are touched only after their producer's work: the
  ``stream`` of ``__cuda_array_interface__`` (v3) is waited for with an event, and DLPack
  producers get ``__dlpack__(stream=<the backend's stream>)``, which tells them to order
  their work before it (without it, DLPack means the legacy default stream). A caller that
  overwrites an input before the run is complete races with it.

Every call that touches CUDA (open, run, synchronize, close) first makes the backend's GPU
current, so backends on different GPUs can share a thread. CUDA comes from NVIDIA's
cuda-python (``cuda.bindings.runtime``); no torch import.
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

from ..errors import IsdnetError
from . import tensorrt_support as support
from .backend import Backend
from .engine_sidecar import (
    EngineSidecar,
    check_compatible,
    read_engine_bytes,
    read_sidecar,
    rebuild_hint,
)
from .inputs import DeviceArray, as_device_array

log = logging.getLogger(__name__)

# NvInferRuntime.h (TensorRT 10.16 and 11.1), IExecutionContext::setTensorAddress: "The
# pointer must have at least 256-byte alignment." cudaMalloc's pointers always are.
TENSOR_ALIGNMENT = 256
_LEGACY_DEFAULT_STREAM = 1  # DLPack / CUDA Array Interface number for CUDA's NULL stream


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


# --- CUDA through cuda-python ---------------------------------------------------------------

class _Cuda:
    """The few cuda-python runtime calls the backend needs, on one GPU, errors made readable."""

    def __init__(self, cudart: ModuleType, index: int) -> None:
        self.rt, self.index = cudart, index
        kinds = cudart.cudaMemcpyKind
        self.h2d = kinds.cudaMemcpyHostToDevice
        self.d2h = kinds.cudaMemcpyDeviceToHost
        self.d2d = kinds.cudaMemcpyDeviceToDevice

    def call(self, name: str, *args: Any) -> Any:
        return support.check_cuda(getattr(self.rt, name)(*args), name)

    def activate(self) -> None:
        self.call("cudaSetDevice", self.index)

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

    def bytes_for(self, shape: tuple[int, ...]) -> int:
        return int(np.prod(shape, dtype=np.int64)) * self.dtype.itemsize


class TensorRTBackend(Backend):
    """A deserialized engine with one execution context on one CUDA stream."""

    name = "tensorrt"

    def __init__(self, path: str | os.PathLike, device: str = "cuda", *,
                 stream: Any = None, trt_module: ModuleType | None = None,
                 cudart_module: ModuleType | None = None) -> None:
        self.path = Path(path)
        self.sidecar: EngineSidecar = read_sidecar(self.path)
        index = support.cuda_device_index(device)
        trt = trt_module or support.import_tensorrt()
        cudart = cudart_module or support.import_cudart()
        gpu = support.gpu_info(cudart, index)
        check_compatible(self.sidecar, self.path, support.tensorrt_version(trt), gpu)
        data = read_engine_bytes(self.path, self.sidecar)

        self._cuda = _Cuda(cudart, index)
        self._cuda.activate()
        self._trt = trt
        self._runtime = trt.Runtime(support.tensorrt_logger(trt))
        self._engine = self._runtime.deserialize_cuda_engine(data)
        if self._engine is None:
            raise IsdnetError(f"TensorRT cannot load {self.path} (corrupt or incompatible "
                              f"engine); {rebuild_hint(self.sidecar, self.path)}")
        self._tensors: dict[str, _Tensor] = self._io_tensors()
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise IsdnetError(f"TensorRT could not create an execution context for "
                              f"{self.path} (out of GPU memory?)")
        self._owns_stream = stream is None
        self._stream = self._cuda.call("cudaStreamCreate") if stream is None else stream
        self._stream_handle = int(self._stream)
        self._event = None
        self._pending_h2d = False
        try:
            self._event = self._cuda.call("cudaEventCreateWithFlags",
                                          cudart.cudaEventDisableTiming)
            self._allocate()
        except BaseException:
            self._release()
            raise
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
            trt_dtype = engine.get_tensor_dtype(name)
            try:  # tensorrt.nptype raises TypeError for BF16, FP8, INT4, FP4
                dtype = np.dtype(trt.nptype(trt_dtype))
            except TypeError:
                raise IsdnetError(
                    f"{self.path} has {'input' if is_input else 'output'} {name!r} of TensorRT "
                    f"type {getattr(trt_dtype, 'name', trt_dtype)}, which NumPy cannot hold; "
                    "rebuild it from an ONNX whose inputs and outputs are float32, float16 or "
                    "uint8 (as isdnet-deploy export and quantize write them)") from None
            tensors[name] = _Tensor(name, is_input, dtype, specs[name].layout)
        absent = [s.name for s in contract.inputs if s.name not in tensors]
        if absent:
            raise IsdnetError(f"{self.path} lacks input {absent[0]!r} named in its sidecar; "
                              f"{rebuild_hint(self.sidecar, self.path)}")
        return tensors

    def _allocate(self) -> None:
        """Device and pinned buffers sized for the profile's largest shapes, made once."""
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
            t.nbytes = t.bytes_for(shape)
            t.device_ptr = self._cuda.malloc(t.nbytes)
            t.host_ptr, t.host = self._cuda.malloc_host(t.nbytes)

    # --- running -----------------------------------------------------------------------

    def profile_range(self, name: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
        t = self._tensors[name]
        return t.min_shape, t.max_shape

    def _device_array(self, value: Any) -> DeviceArray | None:
        """A caller's device buffer, ordered after its producer's work on our stream."""
        device = as_device_array(value, stream=self._stream_handle or _LEGACY_DEFAULT_STREAM)
        if device is not None and device.stream is not None:
            producer = int(device.stream)
            if producer != self._stream_handle:
                self._cuda.call("cudaEventRecord", self._event, producer)
                self._cuda.call("cudaStreamWaitEvent", self._stream, self._event, 0)
        return device

    def _set_address(self, name: str, ptr: int) -> None:
        if not self._context.set_tensor_address(name, ptr):
            raise IsdnetError(f"TensorRT refused address {ptr:#x} for tensor {name!r} of "
                              f"{self.path} (see the TensorRT messages above)")

    def _bind_input(self, t: _Tensor, value: Any) -> None:
        device = self._device_array(value)
        host = np.asarray(value) if device is None else None
        shape = tuple(device.shape if device is not None else host.shape)
        check_in_profile(t.name, t.layout, shape, t.min_shape, t.max_shape)
        if not self._context.set_input_shape(t.name, shape):
            raise IsdnetError(f"TensorRT rejected shape {shape} for input {t.name!r}")
        nbytes = t.bytes_for(shape)
        if device is None:
            if self._pending_h2d:  # an earlier asynchronous copy may still read the buffer
                self.synchronize()
            np.copyto(t.host[:nbytes].view(t.dtype).reshape(shape), host, casting="no")
            self._copy(t.device_ptr, t.host_ptr, nbytes, self._cuda.h2d)
            self._pending_h2d = True
            ptr = t.device_ptr
        elif device.ptr % TENSOR_ALIGNMENT:
            self._copy(t.device_ptr, device.ptr, nbytes, self._cuda.d2d)
            ptr = t.device_ptr
        else:
            ptr = device.ptr
        self._set_address(t.name, ptr)

    def _copy(self, dst: int, src: int, nbytes: int, kind: Any) -> None:
        self._cuda.call("cudaMemcpyAsync", dst, src, nbytes, kind, self._stream)

    def _run(self, feeds: Mapping[str, Any], out: dict[str, Any]) -> dict[str, Any]:
        self._cuda.activate()
        for name in self.input_names:
            self._bind_input(self._tensors[name], feeds[name])
        results: dict[str, Any] = {}
        to_host: list[tuple[_Tensor, tuple[int, ...], np.ndarray | None]] = []
        to_device: list[tuple[_Tensor, int, int]] = []  # staged for misaligned buffers
        for name in self.output_names:
            t = self._tensors[name]
            shape = tuple(self._context.get_tensor_shape(name))
            target = out.get(name)
            device = self._device_array(target) if target is not None else None
            if device is not None and device.ptr % TENSOR_ALIGNMENT == 0:
                self._set_address(name, device.ptr)
            else:
                self._set_address(name, t.device_ptr)
                if device is not None:
                    to_device.append((t, device.ptr, t.bytes_for(shape)))
                else:
                    to_host.append((t, shape, target))
            results[name] = target  # host outputs without a buffer are filled below
        if not self._context.execute_async_v3(self._stream_handle):
            raise IsdnetError(f"TensorRT failed to run {self.path} (see the TensorRT messages "
                              "above)")
        for t, ptr, nbytes in to_device:
            self._copy(ptr, t.device_ptr, nbytes, self._cuda.d2d)
        for t, shape, _ in to_host:
            self._copy(t.host_ptr, t.device_ptr, t.bytes_for(shape), self._cuda.d2h)
        if to_host or self._owns_stream:
            self.synchronize()
        for t, shape, target in to_host:
            staged = t.host[:t.bytes_for(shape)].view(t.dtype).reshape(shape)
            if target is None:
                results[t.name] = staged.copy()
            else:
                np.copyto(target, staged)
        return results

    def synchronize(self) -> None:
        """Wait for everything queued on the backend's stream."""
        if not self.closed:
            self._cuda.activate()
            self._cuda.call("cudaStreamSynchronize", self._stream)
            self._pending_h2d = False

    def _close(self) -> None:
        self._cuda.activate()
        self._cuda.call("cudaStreamSynchronize", self._stream)
        self._release()

    def _release(self) -> None:
        """Free buffers, the event and an owned stream; drop context, engine and runtime."""
        for t in self._tensors.values():
            if t.device_ptr:
                self._cuda.call("cudaFree", t.device_ptr)
            if t.host_ptr:
                t.host = None
                self._cuda.call("cudaFreeHost", t.host_ptr)
        self._tensors = {}
        if self._event is not None:
            self._cuda.call("cudaEventDestroy", self._event)
            self._event = None
        if self._owns_stream:
            self._cuda.call("cudaStreamDestroy", self._stream)
            self._owns_stream = False
        self._context = None
        self._engine = None
        self._runtime = None

    def __del__(self) -> None:
        if not self.closed:
            try:
                self.close()
            except Exception:  # interpreter shutdown: CUDA may already be gone
                log.debug("TensorRT backend cleanup failed", exc_info=True)


def open_engine(path: str | os.PathLike, device: str = "cuda", stream: Any = None,
                **options: Any) -> TensorRTBackend:
    """Open an ``isdnet-deploy build`` engine on ``device`` ('cuda' or 'cuda:N');
    ``stream``: the caller's CUDA stream to run on (see the module's stream contract)."""
    if options:
        raise IsdnetError(f"the TensorRT backend takes no option {next(iter(options))!r}; "
                          "the engine's settings were fixed by isdnet-deploy build")
    return TensorRTBackend(path, device, stream=stream)
