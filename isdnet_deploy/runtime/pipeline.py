"""Overlapping pre-processing with inference, as the paper suggests for the pyramid.

A background thread decodes frame k+1, applies the test scale and computes the OpenCV
pyramid (for external-pyramid artifacts) while the engine runs frame k. NumPy, OpenCV and
ONNX Runtime release the GIL in their heavy loops, so the two stages really overlap.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from .segmenter import Segmenter

_DONE = object()


class Pipeline:
    def __init__(self, segmenter: Segmenter, loader: Callable[[Any], np.ndarray] | None = None,
                 depth: int = 2, color: str = "rgb") -> None:
        """``loader`` turns each item (e.g. a path) into an HxWx3 image; identity if None."""
        self.segmenter = segmenter
        self.loader = loader
        self.depth = depth
        self.color = color

    def _prepare(self, item: Any) -> tuple[dict[str, np.ndarray], tuple[int, int]]:
        image = self.loader(item) if self.loader else item
        return self.segmenter.feeds(image, self.color)

    def sequential(self, items: Iterable[Any]) -> Iterator[np.ndarray]:
        """The same work without overlap, for comparison."""
        for item in items:
            feeds, size = self._prepare(item)
            yield self.segmenter.finish(self.segmenter.run_feeds(feeds), size)

    def __call__(self, items: Iterable[Any]) -> Iterator[np.ndarray]:
        prepared: queue.Queue = queue.Queue(maxsize=self.depth)
        stop = threading.Event()

        def produce() -> None:
            try:
                for item in items:
                    if stop.is_set():
                        return
                    prepared.put(self._prepare(item))
                prepared.put(_DONE)
            except BaseException as exc:  # handed to the consumer, raised there
                prepared.put(exc)

        worker = threading.Thread(target=produce, name="isdnet-prefetch", daemon=True)
        worker.start()
        try:
            while True:
                entry = prepared.get()
                if entry is _DONE:
                    break
                if isinstance(entry, BaseException):
                    raise entry
                feeds, size = entry
                yield self.segmenter.finish(self.segmenter.run_feeds(feeds), size)
        finally:
            stop.set()
            while worker.is_alive():
                try:
                    prepared.get_nowait()
                except queue.Empty:
                    worker.join(timeout=0.05)
