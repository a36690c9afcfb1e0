"""The one small interface every runtime backend implements.

A backend only moves named arrays through an engine; pre/post-processing lives in
``Segmenter``, judging outputs lives in ``isdnet_deploy.metrics``. Adding a backend is one
file with a subclass of ``Backend`` plus one line in ``runtime.registry``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping

import numpy as np

from ..contract import Contract


class Backend(ABC):
    """An opened artifact that maps input arrays to output arrays."""

    name: str = "backend"
    device: str = "cpu"
    contract: Contract

    @abstractmethod
    def run(self, feeds: Mapping[str, np.ndarray],
            out: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Run once. ``out`` holds caller-owned buffers to fill instead of allocating."""

    def synchronize(self) -> None:
        """Wait for queued device work (a no-op on synchronous CPU backends)."""
        return None

    def reset_peak_device_memory(self) -> None:
        """Start a new peak-memory window (backends that can measure one override this)."""
        return None

    def peak_device_memory(self) -> int | None:
        """Bytes of device memory at the peak since the last reset; None where unknown."""
        return None

    def close(self) -> None:
        """Release sessions, engines and device memory."""
        return None

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
