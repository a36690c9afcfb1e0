"""What both the TensorRT runtime and the engine builder need from ``tensorrt`` and
``cuda-python``: importing them, the GPU they run on, CUDA error checks, and the one
TensorRT logger of the process.

Lives in ``runtime/`` because the runtime needs it and must not import ``engine/``; the
builder imports it from here. Every TensorRT or CUDA module is passed in (``trt``,
``cudart``), so tests drive this code with stand-ins on machines without a GPU.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from ..errors import IsdnetError, MissingDependencyError, missing
from .backend import Device

log = logging.getLogger("isdnet_deploy.tensorrt")

# TensorRT severities by name: ILogger::Severity in NvInferRuntime.h (10.x and 11.x alike:
# kINTERNAL_ERROR = 0, kERROR, kWARNING, kINFO, kVERBOSE = 4).
_SEVERITY_TO_LOGGING = {
    "INTERNAL_ERROR": logging.CRITICAL,
    "ERROR": logging.ERROR,
    "WARNING": logging.WARNING,
    "INFO": logging.INFO,
    "VERBOSE": logging.DEBUG,
}
LOG_LEVELS = {"error": logging.ERROR, "warning": logging.WARNING, "info": logging.INFO,
              "verbose": logging.DEBUG}


def import_tensorrt() -> ModuleType:
    try:
        import tensorrt
    except ImportError:
        raise missing("tensorrt", "tensorrt", "needed to build and run TensorRT engines") from None
    return tensorrt


def import_cudart() -> ModuleType:
    """NVIDIA's cuda-python runtime bindings: ``cuda.bindings.runtime`` in current releases,
    ``cuda.cudart`` in the older ones that the [tensorrt] extra (cuda-python >= 12.0) still
    admits."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime
        except ImportError:
            raise missing("cuda-python", "tensorrt",
                          "needed for CUDA streams and device buffers") from None
    return runtime


def tensorrt_version(trt: ModuleType) -> str:
    return str(getattr(trt, "__version__", "unknown"))


# --- the process's one TensorRT logger -------------------------------------------------------

_threshold = logging.WARNING
_LOGGERS: weakref.WeakKeyDictionary[ModuleType, Any] = weakref.WeakKeyDictionary()


def set_log_level(level: str) -> None:
    """Which TensorRT messages reach Python logging from now on, for every builder and
    runtime of the process (they share one logger, see ``tensorrt_logger``)."""
    global _threshold
    if level not in LOG_LEVELS:
        raise IsdnetError(f"log level {level!r} is not one of: {', '.join(LOG_LEVELS)}")
    _threshold = LOG_LEVELS[level]


def tensorrt_logger(trt: ModuleType) -> Any:
    """The one ``trt.ILogger`` of this process, forwarding to Python logging.

    TensorRT keeps the first logger it is given for the process: a builder or runtime made
    later with another logger gets a warning and the first logger stays in use (issue 19's
    reading of TensorRT 10.16/11.1, and TensorRT's warning "The logger passed into
    createInferRuntime differs from one already provided…" as recalled; the headers only
    document the global ``getLogger()``). So every builder and runtime here shares one
    logger, as Polygraphy's ``get_trt_logger`` does, and the level is a process setting
    (``set_log_level``) read when a message arrives. One logger per ``tensorrt`` module
    object: a real process has one; tests pass stand-in modules.
    """
    existing = _LOGGERS.get(trt)
    if existing is not None:
        return existing

    class _ForwardingLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: Any, msg: str) -> None:
            py_level = _SEVERITY_TO_LOGGING.get(getattr(severity, "name", str(severity)),
                                                logging.INFO)
            if py_level >= _threshold:
                log.log(py_level, "TensorRT: %s", msg)

    logger = _LOGGERS[trt] = _ForwardingLogger()
    return logger


# --- CUDA ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    compute_capability: str  # "major.minor"


def check_cuda(result: Any, what: str) -> Any:
    """Unpack a cuda-python ``(err, *values)`` tuple; a failure becomes one clear line."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise IsdnetError(f"CUDA call {what} failed: {getattr(err, 'name', err)}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def gpu_info(cudart: ModuleType, index: int) -> GpuInfo:
    """Name and compute capability of GPU ``index``; no GPU -> MissingDependencyError."""
    err, count = cudart.cudaGetDeviceCount()
    if int(err) != 0 or count == 0:
        reason = getattr(err, "name", str(err)) if int(err) != 0 else "no devices"
        raise MissingDependencyError(
            f"no CUDA GPU is visible ({reason}); TensorRT needs an NVIDIA GPU with a working "
            "driver (check nvidia-smi and CUDA_VISIBLE_DEVICES)")
    if not 0 <= index < count:
        raise IsdnetError(f"device cuda:{index} does not exist; this machine has {count} "
                          f"GPU(s): use cuda:0..cuda:{count - 1}")
    props = check_cuda(cudart.cudaGetDeviceProperties(index), "cudaGetDeviceProperties")
    name = props.name
    if isinstance(name, bytes):
        name = name.split(b"\0", 1)[0].decode(errors="replace")
    return GpuInfo(index=index, name=str(name), compute_capability=f"{props.major}.{props.minor}")


def cuda_device_index(device: Any) -> int:
    """The CUDA ordinal of a TensorRT device ('cuda', 'cuda:N'); anything else is refused."""
    parsed = Device.parse(device)
    if not parsed.is_cuda:
        raise IsdnetError(f"device {device!r} cannot run a TensorRT engine; pass device='cuda' "
                          "(or cuda:N)")
    return parsed.index
