"""Stand-ins for ``tensorrt`` and cuda-python's ``cuda.bindings.runtime``, as strict as the
real modules where the project's code could go wrong.

TensorRT cannot be installed on the machines this project is built on, so the engine
builder and the TensorRT backend run against these. Each value and behaviour mirrors the
real API as read in NVIDIA/TensorRT at tags v10.16 and v11.1 (``include/NvInfer.h``,
``include/NvInferRuntime.h``, ``include/NvInferRuntimeBase.h``,
``python/src/infer/pyCore.cpp``, ``python/src/infer/pyFoundationalTypes.cpp``,
``python/docstrings/infer/pyCoreDoc.h``, ``python/packaging/bindings_wheel/tensorrt/
__init__.py``). The comment at each names the file; "recollection" marks what rests on
memory of TensorRT's or CUDA's behaviour rather than on a line of those sources, and
"issue 19" what rests on that issue's reading of them.

How they run:
* "device memory" is host memory, 256-byte aligned as cudaMalloc's is;
* work queued on a stream (copies, engine runs, event records and waits) runs only when
  that stream is synchronised, so a missing synchronise, or a missing wait on a producer's
  stream, leaves stale data behind and fails a test;
* the engine computes, when its work runs, logits from whatever its input address then
  holds: class c = (c + 1) * channel sum (``expected_logits``).
"""

from __future__ import annotations

import ctypes
import enum
import itertools
import types
from collections import deque
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx

from isdnet_deploy.contract import Contract, TensorSpec
from isdnet_deploy.engine.build import graph_precision
from isdnet_deploy.runtime.engine_sidecar import EngineSidecar, sha256_bytes, sidecar_path

TRT10 = "10.16.1"  # the 10.x surface modelled: tag v10.16
TRT11 = "11.1.0"  # the 11.x surface modelled: tag v11.1 (main)
GPU = "NVIDIA Fake H100"
LOW, OPT, HIGH = (1, 3, 64, 64), (1, 3, 128, 128), (1, 3, 256, 256)  # the engine's profile
CLASSES = 7

# cudaMalloc: "always aligned to at least 256 bytes" (CUDA C++ Programming Guide, device
# memory accesses; recollection), the same figure TensorRT asks of tensor addresses.
ALIGNMENT = 256


def expected_logits(image: np.ndarray, classes: int = CLASSES) -> np.ndarray:
    """What the stand-in engine computes: class c = (c + 1) * channel sum."""
    total = image.sum(axis=1, keepdims=True)
    return np.concatenate([total * (c + 1) for c in range(classes)], axis=1).astype(np.float32)


def engine_bytes(version: str) -> bytes:
    return b"FAKE-ENGINE " + version.encode()


def _array_at(ptr: int, shape: tuple[int, ...], dtype) -> np.ndarray:
    dtype = np.dtype(dtype)
    count = int(np.prod(shape))
    buf = (ctypes.c_uint8 * (count * dtype.itemsize)).from_address(ptr)
    return np.frombuffer(buf, dtype=dtype, count=count).reshape(shape)


# --- cuda-python ---------------------------------------------------------------------------------

class cudaError_t(enum.IntEnum):  # cuda-python's name
    # driver_types.h enum cudaError (CUDA 12.x; values from recollection).
    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorInsufficientDriver = 35
    cudaErrorNoDevice = 100
    cudaErrorInvalidDevice = 101
    cudaErrorInvalidResourceHandle = 400


class cudaMemcpyKind(enum.IntEnum):  # cuda-python's name
    # driver_types.h enum cudaMemcpyKind (recollection).
    cudaMemcpyHostToHost = 0
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2
    cudaMemcpyDeviceToDevice = 3
    cudaMemcpyDefault = 4


class cudaStream_t:  # cuda-python's name
    """cuda-python hands streams out as objects that ``int()`` turns into the handle; they
    are not ints, so code that passes one where TensorRT wants an int fails here too."""

    def __init__(self, handle: int) -> None:
        self.handle = handle

    def __int__(self) -> int:
        return self.handle


class _Stream:
    def __init__(self, device: int | None) -> None:
        self.device = device
        self.queue: deque[Callable[[], None]] = deque()


class FakeCuda(types.ModuleType):
    """``cuda.bindings.runtime``: every call returns ``(cudaError_t, *values)`` as cuda-python
    does; streams queue their work until synchronised (see the module docstring)."""

    cudaError_t = cudaError_t
    cudaMemcpyKind = cudaMemcpyKind
    # cuda-python's runtime declarations (cyruntime): cudaEventDisableTiming = 0x02,
    # cudaStreamLegacy = 0x1, cudaStreamPerThread = 0x2.
    cudaEventDisableTiming = 2
    cudaStreamLegacy, cudaStreamPerThread = 1, 2

    def __init__(self, gpus: tuple[tuple[str, tuple[int, int]], ...] = ((GPU, (9, 0)),),
                 no_device: cudaError_t = cudaError_t.cudaErrorNoDevice) -> None:
        super().__init__("cuda.bindings.runtime")
        self.gpus, self.no_device = list(gpus), no_device
        self.current = 0
        self.live: dict[int, tuple[str, int, ctypes.Array]] = {}  # ptr -> (kind, device, mem)
        # The NULL/legacy and per-thread default streams always exist.
        self.streams: dict[int, _Stream] = {1: _Stream(None), 2: _Stream(None)}
        self.events: dict[int, tuple[int, int] | None] = {}  # event -> (stream, marker) recorded
        self.done: set[int] = set()  # markers whose stream work has run
        self.calls: list[tuple] = []
        self._handles = itertools.count(0x7F00)

    # helpers for tests ---------------------------------------------------------------------

    def names(self, name: str) -> list[tuple]:
        return [c for c in self.calls if c[0] == name]

    def enqueue(self, stream: int, work: Callable[[], None]) -> None:
        """Queue a producer's work (another library's kernel) on ``stream``."""
        self.streams[int(stream)].queue.append(work)

    def pending(self) -> int:
        return sum(len(s.queue) for s in self.streams.values())

    def _drain(self, handle: int, until: int | None = None) -> None:
        queue = self.streams[handle].queue
        while queue and (until is None or until not in self.done):
            queue.popleft()()

    # device -------------------------------------------------------------------------------

    def cudaGetDeviceCount(self):
        return (cudaError_t.cudaSuccess, len(self.gpus)) if self.gpus else (self.no_device, 0)

    def cudaGetDeviceProperties(self, index: int):
        if not 0 <= index < len(self.gpus):
            return cudaError_t.cudaErrorInvalidDevice, None
        name, (major, minor) = self.gpus[index]
        # cudaDeviceProp.name is char[256]: cuda-python gives the bytes, NUL padded.
        return cudaError_t.cudaSuccess, types.SimpleNamespace(
            name=name.encode() + b"\0" * (256 - len(name)), major=major, minor=minor)

    def cudaSetDevice(self, index: int):
        self.calls.append(("cudaSetDevice", index))
        if not 0 <= index < len(self.gpus):
            return (cudaError_t.cudaErrorInvalidDevice,)
        self.current = index
        return (cudaError_t.cudaSuccess,)

    # memory -------------------------------------------------------------------------------

    def _alloc(self, kind: str, nbytes: int):
        mem = (ctypes.c_uint8 * (nbytes + ALIGNMENT))()
        ptr = -(-ctypes.addressof(mem) // ALIGNMENT) * ALIGNMENT
        self.live[ptr] = (kind, self.current, mem)
        self.calls.append((f"alloc {kind}", ptr, nbytes, self.current))
        return cudaError_t.cudaSuccess, ptr

    def cudaMalloc(self, nbytes: int):
        return self._alloc("device", nbytes)

    def cudaMallocHost(self, nbytes: int):
        return self._alloc("pinned", nbytes)

    def _free(self, kind: str, ptr: int):
        self.calls.append((f"free {kind}", ptr, self.current))
        if self.live.get(ptr, ("",))[0] != kind:
            return (cudaError_t.cudaErrorInvalidValue,)
        del self.live[ptr]
        return (cudaError_t.cudaSuccess,)

    def cudaFree(self, ptr: int):
        return self._free("device", ptr)

    def cudaFreeHost(self, ptr: int):
        return self._free("pinned", ptr)

    def cudaMemcpyAsync(self, dst: int, src: int, nbytes: int, kind, stream):
        handle = int(stream)
        self.calls.append(("cudaMemcpyAsync", cudaMemcpyKind(kind).name, dst, src, nbytes, handle))
        if handle not in self.streams:
            return (cudaError_t.cudaErrorInvalidResourceHandle,)
        self.enqueue(handle, lambda: ctypes.memmove(dst, src, nbytes))
        return (cudaError_t.cudaSuccess,)

    # streams and events ------------------------------------------------------------------

    def cudaStreamCreate(self):
        handle = next(self._handles)
        self.streams[handle] = _Stream(self.current)
        self.calls.append(("cudaStreamCreate", handle, self.current))
        return cudaError_t.cudaSuccess, cudaStream_t(handle)

    def cudaStreamSynchronize(self, stream):
        handle = int(stream)
        self.calls.append(("cudaStreamSynchronize", handle, self.current))
        if handle not in self.streams:
            return (cudaError_t.cudaErrorInvalidResourceHandle,)
        self._drain(handle)
        return (cudaError_t.cudaSuccess,)

    def cudaStreamDestroy(self, stream):
        # CUDA Runtime API (recollection): work still queued completes, then the stream is
        # released.
        handle = int(stream)
        self.calls.append(("cudaStreamDestroy", handle, self.current))
        if handle not in self.streams or handle in (1, 2):
            return (cudaError_t.cudaErrorInvalidResourceHandle,)
        self._drain(handle)
        del self.streams[handle]
        return (cudaError_t.cudaSuccess,)

    def cudaEventCreateWithFlags(self, flags: int):
        handle = next(self._handles)
        self.events[handle] = None  # before any record an event is complete (cudaEventRecord)
        self.calls.append(("cudaEventCreateWithFlags", handle, flags))
        return cudaError_t.cudaSuccess, handle

    def cudaEventRecord(self, event: int, stream):
        handle = int(stream)
        self.calls.append(("cudaEventRecord", event, handle))
        if event not in self.events or handle not in self.streams:
            return (cudaError_t.cudaErrorInvalidResourceHandle,)
        marker = next(self._handles)
        self.events[event] = (handle, marker)
        self.enqueue(handle, lambda: self.done.add(marker))
        return (cudaError_t.cudaSuccess,)

    def cudaStreamWaitEvent(self, stream, event: int, flags: int):
        # Waits for the work the event captured when this call is made (cudaEventRecord's
        # documentation in cuda-python); later records do not change it.
        handle = int(stream)
        self.calls.append(("cudaStreamWaitEvent", handle, event, flags))
        if event not in self.events or handle not in self.streams:
            return (cudaError_t.cudaErrorInvalidResourceHandle,)
        captured = self.events[event]
        if captured is not None:
            source, marker = captured
            self.enqueue(handle, lambda: self._drain(source, until=marker))
        return (cudaError_t.cudaSuccess,)

    def cudaEventDestroy(self, event: int):
        self.calls.append(("cudaEventDestroy", event))
        if self.events.pop(event, False) is False:
            return (cudaError_t.cudaErrorInvalidResourceHandle,)
        return (cudaError_t.cudaSuccess,)

    # arrays a test hands to the backend ---------------------------------------------------

    def device_array(self, shape: tuple[int, ...], dtype=np.float32, misalign: int = 0,
                     stream: int | None = None, fill: np.ndarray | None = None) -> DeviceBuffer:
        """A CUDA array in this fake's device memory, ``misalign`` bytes past an aligned
        address; ``fill`` is written by work queued on ``stream`` (a producer kernel)."""
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        _, base = self.cudaMalloc(nbytes + misalign)
        array = _array_at(base + misalign, shape, dtype)
        array[...] = 0
        if fill is not None:
            self.enqueue(stream if stream is not None else 1,
                         lambda: np.copyto(array, fill))
        return DeviceBuffer(array, stream=stream)


class DeviceBuffer:
    """A 'device' array exposed through ``__cuda_array_interface__`` (v3); ``stream`` is the
    stream its producer's pending work is on (the interface's optional ``stream`` key)."""

    def __init__(self, array: np.ndarray, strides=None, stream: int | None = None) -> None:
        self.array = array
        self.__cuda_array_interface__ = {
            "shape": array.shape, "typestr": array.dtype.str, "strides": strides,
            "data": (array.ctypes.data, False), "version": 3}
        if stream is not None:
            self.__cuda_array_interface__["stream"] = stream


class DLPackCuda:
    """Claims to live on a CUDA device and behaves as a DLPack producer should: its pending
    work (queued on ``producer``) is ordered before the consumer's ``stream``; ``None`` means
    the legacy default stream and -1 no ordering (array API standard, ``__dlpack__``;
    recollection). The capsule is NumPy's."""

    def __init__(self, array: np.ndarray, cuda: FakeCuda | None = None,
                 producer: int | None = None) -> None:
        self.array, self.cuda, self.producer = array, cuda, producer
        self.streams: list[int | None] = []

    def __dlpack_device__(self):
        return (2, 0)  # kDLCUDA, device 0

    def __dlpack__(self, stream: int | None = None, **kwargs):
        self.streams.append(stream)
        if self.cuda is not None and self.producer is not None and stream != -1:
            _, event = self.cuda.cudaEventCreateWithFlags(FakeCuda.cudaEventDisableTiming)
            self.cuda.cudaEventRecord(event, self.producer)
            self.cuda.cudaStreamWaitEvent(1 if stream is None else stream, event, 0)
        return self.array.__dlpack__()


def aligned_host(shape: tuple[int, ...], dtype=np.float32, misalign: int = 0) -> np.ndarray:
    """A host array starting ``misalign`` bytes past a 256-byte boundary."""
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = np.zeros(nbytes + ALIGNMENT + misalign, np.uint8)
    start = (-raw.ctypes.data) % ALIGNMENT + misalign
    return raw[start:start + nbytes].view(dtype).reshape(shape)


# --- tensorrt ------------------------------------------------------------------------------------

def _int_enum(name: str, members: dict[str, int]) -> type[enum.IntEnum]:
    return enum.IntEnum(name, members)


# ILogger::Severity, NvInferRuntime.h (10.16 and 11.1): kINTERNAL_ERROR = 0 ... kVERBOSE = 4.
Severity = _int_enum("Severity", {"INTERNAL_ERROR": 0, "ERROR": 1, "WARNING": 2, "INFO": 3,
                                  "VERBOSE": 4})
# DataType, NvInferRuntimeBase.h (identical in 10.16 and 11.1).
DataType = _int_enum("DataType", {"FLOAT": 0, "HALF": 1, "INT8": 2, "INT32": 3, "BOOL": 4,
                                  "UINT8": 5, "FP8": 6, "BF16": 7, "INT64": 8, "INT4": 9,
                                  "FP4": 10, "E8M0": 11})
# TensorIOMode, NvInferRuntimeBase.h: kNONE = 0, kINPUT = 1, kOUTPUT = 2.
TensorIOMode = _int_enum("TensorIOMode", {"NONE": 0, "INPUT": 1, "OUTPUT": 2})
# MemoryPoolType, NvInfer.h: kWORKSPACE = 0.
MemoryPoolType = _int_enum("MemoryPoolType", {"WORKSPACE": 0})

# NetworkDefinitionCreationFlag, NvInfer.h.
# 10.16: kEXPLICIT_BATCH = 0 (deprecated, ignored), kSTRONGLY_TYPED = 1,
#        kPREFER_JIT_PYTHON_PLUGINS = 2, kPREFER_AOT_PYTHON_PLUGINS = 3.
# 11.1:  kSTRONGLY_TYPED = 0 ("Deprecated in TensorRT 11.0. Strongly typed mode is always
#        enabled. This flag is retained for API compatibility but is ignored."),
#        kPREFER_JIT_PYTHON_PLUGINS = 1, kPREFER_AOT_PYTHON_PLUGINS = 2.
_CREATION_FLAGS = {
    10: {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1, "PREFER_JIT_PYTHON_PLUGINS": 2,
         "PREFER_AOT_PYTHON_PLUGINS": 3},
    11: {"STRONGLY_TYPED": 0, "PREFER_JIT_PYTHON_PLUGINS": 1, "PREFER_AOT_PYTHON_PLUGINS": 2},
}
# BuilderFlag, NvInfer.h (a subset). 10.16: kFP16 = 0 and kINT8 = 1 (deprecated since 10.12,
# "Superseded by strong typing"), kREFIT = 4, kTF32 = 6, kFP8 = 15, kBF16 = 17.
# 11.1: kFP16, kINT8, kFP8, kBF16 are gone (pyCore.cpp binds none of them); kREFIT = 4,
# kTF32 = 6.
_BUILDER_FLAGS = {
    10: {"FP16": 0, "INT8": 1, "REFIT": 4, "TF32": 6, "FP8": 15, "BF16": 17},
    11: {"REFIT": 4, "TF32": 6},
}


def nptype(trt_type):
    """tensorrt.nptype as in python/packaging/bindings_wheel/tensorrt/__init__.py (10.16 and
    11.1): BF16, FP8, INT4, FP4 and E8M0 have no NumPy type and raise TypeError."""
    mapping = {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT8: np.int8,
               DataType.INT32: np.int32, DataType.INT64: np.int64, DataType.BOOL: np.bool_,
               DataType.UINT8: np.uint8}
    if trt_type in mapping:
        return mapping[trt_type]
    raise TypeError("Could not resolve TensorRT datatype to an equivalent numpy datatype.")


def fake_tensorrt(version: str = TRT10, cuda: FakeCuda | None = None, *, parse_ok: bool = True,
                  build_ok: bool = True, io_dtype: DataType = DataType.FLOAT,
                  classes: int = CLASSES) -> types.ModuleType:
    """A module shaped like ``tensorrt`` ``version`` (10.x or 11.x), recording calls in
    ``trt.calls``; ``cuda`` is the FakeCuda whose devices and streams it runs on; its
    engines output ``classes`` logits."""
    major = int(version.split(".")[0])
    cuda = cuda if cuda is not None else FakeCuda()
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.cuda = cuda
    trt.calls = []
    trt.executions = []
    record = trt.calls.append
    trt.DataType, trt.TensorIOMode, trt.MemoryPoolType = DataType, TensorIOMode, MemoryPoolType
    # pyFoundationalTypes.cpp: m.attr("float32") = DataType::kFLOAT, and so on.
    trt.float32, trt.float16, trt.bfloat16 = DataType.FLOAT, DataType.HALF, DataType.BF16
    trt.int8, trt.uint8, trt.fp8 = DataType.INT8, DataType.UINT8, DataType.FP8
    trt.nptype = nptype
    trt.NetworkDefinitionCreationFlag = _int_enum("NetworkDefinitionCreationFlag",
                                                  _CREATION_FLAGS[major])
    trt.BuilderFlag = _int_enum("BuilderFlag", _BUILDER_FLAGS[major])
    first_logger: list = []

    class ILogger:
        """pyCore.cpp: Severity is exported into the ILogger scope (trt.ILogger.WARNING)."""

        def __init__(self) -> None:
            pass

    ILogger.Severity = Severity
    for member in Severity:
        setattr(ILogger, member.name, member)

    def emit(severity: Severity, message: str) -> None:
        first_logger[0].log(severity, message)

    def accept_logger(logger, where: str) -> None:
        """The process keeps the first logger; a different one later is ignored with a
        warning (issue 19; the wording is TensorRT's as recalled, not from the sources)."""
        if not isinstance(logger, ILogger):
            raise TypeError(f"{where}(): incompatible function arguments")
        if not first_logger:
            first_logger.append(logger)
        elif logger is not first_logger[0]:
            record(("logger ignored", where))
            emit(Severity.WARNING, "The logger passed into createInferRuntime differs from one "
                 "already provided for an existing builder, runtime, or refitter. Uses of the "
                 "global logger, returned by nvinfer1::getLogger(), will return the existing "
                 "value.")

    class IProgressMonitor:
        def __init__(self) -> None:
            pass

    # --- builder ------------------------------------------------------------------------

    class TimingCache:
        """Serialized as a header naming the TensorRT version and GPU, then its entries."""

        def __init__(self, gpu: str | None, entries: bytes = b"") -> None:
            self.gpu, self.entries = gpu, entries

        def serialize(self) -> memoryview:  # IHostMemory supports the buffer protocol
            header = f"TRTCACHE/{version}/{self.gpu or ''}/".encode()
            return memoryview(header + self.entries)

    class Network:
        def __init__(self, strongly_typed: bool) -> None:
            self.strongly_typed = strongly_typed
            self.inputs: list[str] = []

        @property
        def num_inputs(self) -> int:
            return len(self.inputs)

        def get_input(self, i: int) -> types.SimpleNamespace:
            return types.SimpleNamespace(name=self.inputs[i])

    class Profile:
        def __init__(self) -> None:
            self.shapes: dict[str, tuple[list[int], list[int], list[int]]] = {}

        def set_shape(self, name, low, opt, high) -> None:
            # pyCore.cpp opt_profile_set_shape: each of the three setDimensions calls must
            # return true, else RuntimeError("Shape provided for <min|opt|max> is inconsistent
            # with other shapes."). NvInferRuntime.h setDimensions: ranks equal and
            # 0 <= min <= opt <= max per axis (validated "only partially" before the build).
            record(("set_shape", name, list(low), list(opt), list(high)))
            for which, dims, below in (("min", low, None), ("opt", opt, low),
                                       ("max", high, opt)):
                bad = any(d < 0 for d in dims) or (
                    below is not None and (len(dims) != len(below)
                                           or any(b > d for b, d in zip(below, dims, strict=True))))
                if bad:
                    raise RuntimeError(f"Shape provided for {which} is inconsistent with other "
                                       "shapes.")
            self.shapes[name] = (list(low), list(opt), list(high))

    class Config:
        def __init__(self) -> None:
            self.profiles: list[Profile] = []
            self.cache: TimingCache | None = None
            self.flags: list = []
            self._monitor = None

        def set_memory_pool_limit(self, pool, size) -> None:
            record(("set_memory_pool_limit", MemoryPoolType(pool).name, size))

        @property
        def builder_optimization_level(self) -> int:
            return 3

        @builder_optimization_level.setter
        def builder_optimization_level(self, level: int) -> None:
            record(("builder_optimization_level", level))

        @property
        def progress_monitor(self):
            return self._monitor

        @progress_monitor.setter
        def progress_monitor(self, monitor) -> None:
            if not isinstance(monitor, IProgressMonitor):
                raise TypeError("progress_monitor: incompatible function arguments")
            record(("progress_monitor", type(monitor).__name__))
            self._monitor = monitor

        def set_flag(self, flag) -> None:
            record(("set_flag", trt.BuilderFlag(flag).name))
            self.flags.append(flag)

        def add_optimization_profile(self, profile) -> int:
            record(("add_optimization_profile", dict(profile.shapes)))
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def create_timing_cache(self, data) -> TimingCache | None:
            # pyCoreDoc.h: b"" creates a new cache. A blob this TensorRT cannot read (another
            # version) makes createTimingCache return nullptr, None in Python (issue 19).
            blob = bytes(data)
            record(("create_timing_cache", blob))
            if not blob:
                return TimingCache(None)
            parts = blob.split(b"/", 3)
            if len(parts) != 4 or parts[0] != b"TRTCACHE" or parts[1] != version.encode():
                emit(Severity.ERROR, "Timing cache blob could not be deserialized")
                return None
            return TimingCache(parts[2].decode() or None, parts[3])

        def set_timing_cache(self, cache, ignore_mismatch: bool) -> bool:
            # pyCore.cpp binds IBuilderConfig::setTimingCache(ITimingCache const&, bool):
            # pybind11 refuses None for a reference parameter with TypeError. The docstring:
            # "A failure will be reported if the CUDA device property in the provided cache
            # is different from current environment"; returns False then.
            if not isinstance(cache, TimingCache):
                raise TypeError("set_timing_cache(): incompatible function arguments. The "
                                "following argument types are supported: (self, cache: "
                                "tensorrt.ITimingCache, ignore_mismatch: bool) -> bool")
            record(("set_timing_cache", cache.gpu, cache.entries, ignore_mismatch))
            here = cuda.gpus[cuda.current][0]
            if cache.gpu is not None and cache.gpu != here and not ignore_mismatch:
                emit(Severity.ERROR, "Timing cache was created on a different device")
                return False
            cache.gpu = here
            self.cache = cache
            return True

        def get_timing_cache(self) -> TimingCache | None:
            return self.cache

    class Builder:
        def __init__(self, logger) -> None:
            accept_logger(logger, "Builder")
            record(("Builder", cuda.current))

        def create_network(self, flags: int = 0) -> Network:
            names = tuple(f.name for f in trt.NetworkDefinitionCreationFlag if flags >> f & 1)
            record(("create_network", flags, names))
            return Network(strongly_typed=major >= 11 or "STRONGLY_TYPED" in names)

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network, config):
            record(("build_serialized_network", cuda.current, network.strongly_typed,
                    tuple(trt.BuilderFlag(f).name for f in config.flags)))
            # Dynamic inputs need a profile (recollection: TensorRT logs "Network has dynamic
            # or shape inputs, but no optimization profile has been defined" and fails).
            covered = {name for p in config.profiles for name in p.shapes}
            if not build_ok or not set(network.inputs) <= covered:
                emit(Severity.ERROR, "build failed")
                return None
            if config.cache is not None:
                config.cache.entries += b"tactics;"
            return memoryview(engine_bytes(version))

    class OnnxParser:
        def __init__(self, network, logger) -> None:
            accept_logger(logger, "OnnxParser")
            self.network = network
            self.num_errors = 0

        def parse_from_file(self, path: str) -> bool:
            model = onnx.load(path)
            record(("parse_from_file", path, graph_precision(model)))
            self.network.inputs = [i.name for i in model.graph.input]
            self.num_errors = 0 if parse_ok else 1
            return parse_ok

        def get_error(self, i: int) -> str:
            return "In node 0 (importConv): UNSUPPORTED_NODE: fake refusal"

    # --- runtime ------------------------------------------------------------------------

    class Context:
        def __init__(self, engine: Engine) -> None:
            self.engine = engine
            self.shapes = {"image": OPT}
            self.addresses: dict[str, int] = {}

        def set_input_shape(self, name, shape) -> bool:
            # NvInferRuntime.h setInputShape: false if the name is not an input "or if some
            # other error occurred" (a shape outside the profile is one: recollection).
            shape = tuple(shape)
            ok = name == "image" and len(shape) == len(LOW) and all(
                lo <= s <= hi for s, lo, hi in zip(shape, LOW, HIGH, strict=True))
            if ok:
                self.shapes[name] = shape
            return ok

        def get_tensor_shape(self, name):
            n, _, h, w = self.shapes["image"]
            return self.shapes["image"] if name == "image" else (n, classes, h, w)

        def set_tensor_address(self, name, memory) -> bool:
            # NvInferRuntime.h setTensorAddress (10.16 l.4731/4758, 11.1 l.4351/4378): "True
            # on success, false if error occurred", false for an unknown name, and "The
            # pointer must have at least 256-byte alignment." The binding takes size_t.
            if not isinstance(memory, int):
                raise TypeError("set_tensor_address(): incompatible function arguments")
            record(("set_tensor_address", name, memory))
            if name not in ("image", "logits") or memory % ALIGNMENT:
                emit(Severity.ERROR, f"setTensorAddress: bad address for {name}")
                return False
            self.addresses[name] = memory
            return True

        def execute_async_v3(self, stream_handle) -> bool:
            # pyCore.cpp: execute_async_v3(self, stream_handle: int) -> enqueueV3(stream).
            # Kernels run later, on the stream. An engine is tied to the GPU that was
            # current when it was deserialized (recollection); enqueuing with another
            # current fails here rather than corrupting memory.
            if not isinstance(stream_handle, int):
                raise TypeError("execute_async_v3(): incompatible function arguments")
            if cuda.current != self.engine.device or set(self.addresses) != {"image",
                                                                              "logits"}:
                emit(Severity.ERROR, "enqueueV3 failed")
                return False
            image_at, logits_at = self.addresses["image"], self.addresses["logits"]
            image_shape, logits_shape = self.shapes["image"], self.get_tensor_shape("logits")
            dtype = nptype(io_dtype)

            def compute() -> None:
                image = _array_at(image_at, image_shape, dtype)
                _array_at(logits_at, logits_shape, dtype)[...] = expected_logits(image, classes)

            cuda.enqueue(stream_handle, compute)
            trt.executions.append((stream_handle, dict(self.addresses), cuda.current))
            return True

    class Engine:
        num_io_tensors = 2

        def __init__(self) -> None:
            self.device = cuda.current

        def get_tensor_name(self, i):
            return ("image", "logits")[i]

        def get_tensor_mode(self, name):
            return TensorIOMode.INPUT if name == "image" else TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name):
            return io_dtype

        def get_tensor_profile_shape(self, name, profile_index):
            return [LOW, OPT, HIGH]

        def create_execution_context(self):
            trt.context = Context(self)
            return trt.context

    class Runtime:
        def __init__(self, logger) -> None:
            accept_logger(logger, "Runtime")
            record(("Runtime", cuda.current))

        def deserialize_cuda_engine(self, data):
            # pyCore.cpp runtime_deserialize_cuda_engine returns deserializeCudaEngine's
            # pointer, None on failure; an engine only loads in the version that built it.
            if bytes(data) != engine_bytes(version):
                emit(Severity.ERROR, "engine deserialization failed")
                return None
            return Engine()

    trt.ILogger, trt.IProgressMonitor = ILogger, IProgressMonitor
    trt.Builder, trt.OnnxParser, trt.Runtime = Builder, OnnxParser, Runtime
    return trt


# --- engine files --------------------------------------------------------------------------------

def contract() -> Contract:
    return Contract(
        inputs=[TensorSpec("image", "float32", "NCHW", [1, 3, "height", "width"])],
        outputs=[TensorSpec("logits", "float32", "NCHW", [1, CLASSES, "height", "width"])],
        profile="deepglobe", classes=[str(i) for i in range(CLASSES)])


def write_engine(folder: Path, data: bytes | None = None, version: str = TRT10,
                 gpu: str = GPU, cc: str = "9.0") -> Path:
    """An engine file for the stand-in runtime and its sidecar."""
    data = engine_bytes(version) if data is None else data
    engine = folder / "model.engine"
    engine.write_bytes(data)
    sidecar = EngineSidecar(
        contract=contract(), tensorrt_version=version, gpu_name=gpu, compute_capability=cc,
        profile={"min": [64, 64], "opt": [128, 128], "max": [256, 256]},
        build={"onnx": "model.onnx"}, engine_bytes=len(data), engine_sha256=sha256_bytes(data))
    sidecar_path(engine).write_text(sidecar.to_json(), encoding="utf-8")
    return engine
