"""Feature detection for the TensorRT and CUDA Python APIs.

TensorRT 11 removed the weak-typing precision flags (``BuilderFlag.FP16``/``INT8``) and INT8
calibration; TensorRT 10 still has them and also offers strongly typed networks. Code here
asks the module what it has (``hasattr``), never which version string it reports, so one
path serves both. Everything that touches ``tensorrt`` or ``cuda-python`` is kept in this
file and the two thin callers (``engine.build``, ``runtime.tensorrt_backend``) so that the
rest can be tested with a stand-in module on a machine without a GPU.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from ..errors import IsdnetError, MissingDependencyError, missing

log = logging.getLogger("isdnet_deploy.tensorrt")

# TensorRT severities by name (the enum's members have these names in 10.x and 11.x).
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
    """NVIDIA's cuda-python runtime bindings (new and pre-12.8 module layouts)."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime
        except ImportError:
            raise missing("cuda-python", "tensorrt",
                          "needed for CUDA streams and device buffers") from None
    return runtime


# --- builder features ---------------------------------------------------------------------

def weak_precision_flag(trt: ModuleType, name: str) -> Any | None:
    """``BuilderFlag.<name>`` where this TensorRT still has it (10.x), else None (11.x)."""
    return getattr(trt.BuilderFlag, name, None)


def strongly_typed_flag(trt: ModuleType) -> Any | None:
    creation = getattr(trt, "NetworkDefinitionCreationFlag", None)
    return getattr(creation, "STRONGLY_TYPED", None) if creation is not None else None


def tensorrt_version(trt: ModuleType) -> str:
    return str(getattr(trt, "__version__", "unknown"))


# --- logging and progress adapters -------------------------------------------------------

def make_logger(trt: ModuleType, level: str = "warning") -> Any:
    """A ``trt.ILogger`` that forwards to Python logging, so the CLI decides what is shown."""
    if level not in LOG_LEVELS:
        raise IsdnetError(f"log level {level!r} is not one of: {', '.join(LOG_LEVELS)}")
    threshold = LOG_LEVELS[level]

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: Any, msg: str) -> None:
            py_level = _SEVERITY_TO_LOGGING.get(getattr(severity, "name", str(severity)),
                                                logging.INFO)
            if py_level >= threshold:
                log.log(py_level, "TensorRT: %s", msg)

    return _Logger()


def make_progress_monitor(trt: ModuleType) -> Any | None:
    """A ``trt.IProgressMonitor`` drawing one tqdm bar per top-level build phase.

    TensorRT calls it from several threads, hence the lock. None where the API lacks it.
    """
    base = getattr(trt, "IProgressMonitor", None)
    if base is None:
        return None
    from tqdm.auto import tqdm

    class _Monitor(base):
        def __init__(self) -> None:
            base.__init__(self)
            self._lock = threading.Lock()
            self._bars: dict[str, Any] = {}

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            with self._lock:
                depth = 0 if parent_phase is None else 1
                self._bars[phase_name] = tqdm(total=num_steps, desc=phase_name, leave=depth == 0,
                                              position=depth, unit="step")

        def step_complete(self, phase_name: str, step: int) -> bool:
            with self._lock:
                bar = self._bars.get(phase_name)
                if bar is not None:
                    bar.update(step + 1 - bar.n)
            return True

        def phase_finish(self, phase_name: str) -> None:
            with self._lock:
                bar = self._bars.pop(phase_name, None)
                if bar is not None:
                    bar.close()

    return _Monitor()


# --- CUDA device ---------------------------------------------------------------------------

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


def gpu_info(cudart: ModuleType, index: int = 0) -> GpuInfo:
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


def parse_device(device: str) -> int:
    """'cuda' / 'auto' / 'cuda:1' -> device index; anything else is not a TensorRT device."""
    text = device.strip().lower()
    if text in ("cuda", "auto"):
        return 0
    if text.startswith("cuda:") and text[5:].isdigit():
        return int(text[5:])
    raise IsdnetError(f"device {device!r} cannot run a TensorRT engine; pass device='cuda' "
                      "(or cuda:N)")


@contextlib.contextmanager
def redirect_logging_to_tqdm(enabled: bool):
    """Keep TensorRT log lines from tearing the progress bars apart."""
    if not enabled:
        yield
        return
    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm(loggers=[log, logging.getLogger()]):
        yield
