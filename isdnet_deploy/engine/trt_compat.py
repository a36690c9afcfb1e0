"""The builder-side differences between TensorRT 10.x and 11.x, found by what the module has.

Read from NVIDIA/TensorRT's headers and Python bindings at tags v10.16 and v11.1
(``include/NvInfer.h``, ``python/src/infer/pyCore.cpp``):

* ``BuilderFlag.FP16`` / ``INT8`` exist in 10.x (deprecated since 10.12) and are gone in 11.x,
  where every network is strongly typed.
* ``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` is 1 in 10.x and must be set to get a
  strongly typed network; in 11.x it is 0, deprecated and ignored, and bit 1 of the
  ``create_network`` mask now means ``PREFER_JIT_PYTHON_PLUGINS``. So the mask is computed
  here, never as ``1 << 1``.
* ``STRONGLY_TYPED``, ``IProgressMonitor``, ``builder_optimization_level`` and
  ``OnnxParser.parse_from_file`` all exist from 10.0 on, which the [tensorrt] extra requires,
  so the builder uses them without checking.

Code asks the module what it has (``hasattr``), never which version string it reports. What
the runtime shares with the builder (imports, logger, GPU facts) is in
``runtime.tensorrt_support``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from types import ModuleType
from typing import Any

from ..runtime.tensorrt_support import log


def always_strongly_typed(trt: ModuleType) -> bool:
    """True on TensorRT 11.x, which dropped the weak-typing precision flags
    (``BuilderFlag.FP16`` and the like): every network is strongly typed there."""
    return not hasattr(trt.BuilderFlag, "FP16")


def network_creation_flags(trt: ModuleType, strongly_typed: bool) -> int:
    """The ``Builder.create_network`` bitmask.

    10.x: ``1 << STRONGLY_TYPED`` (= 1 << 1) for a strongly typed network. 11.x: 0, since
    networks are strongly typed anyway and the flag (= 0) is ignored.
    """
    if not strongly_typed or always_strongly_typed(trt):
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


def make_progress_monitor(trt: ModuleType) -> Any:
    """A ``trt.IProgressMonitor`` drawing one tqdm bar per top-level build phase.

    TensorRT calls it from several threads, hence the lock.
    """
    from tqdm.auto import tqdm

    class _Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
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


@contextlib.contextmanager
def redirect_logging_to_tqdm(enabled: bool):
    """Keep TensorRT log lines from tearing the progress bars apart."""
    if not enabled:
        yield
        return
    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm(loggers=[log, logging.getLogger()]):
        yield
