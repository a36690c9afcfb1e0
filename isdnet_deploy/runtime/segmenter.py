"""``Segmenter``: image in, labels out, over any backend, using the artifact's contract.

Every failure of its public methods is an ``IsdnetError`` (the cause chained), whatever
raised it underneath: OpenCV, NumPy, an engine, or memory.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..contract import OUTPUT_SIZE_INPUT, Contract
from ..errors import IsdnetError, one_line
from . import preprocess
from .backend import Backend
from .inputs import classify_image, is_cuda_array, to_host_array


@contextlib.contextmanager
def one_error_type(action: str, fix: str = "the image or the artifact is not what the "
                   "artifact's contract describes") -> Iterator[None]:
    """Turn anything but an IsdnetError raised inside into one, naming ``action`` and
    what to check (``fix``)."""
    try:
        yield
    except IsdnetError:
        raise
    except MemoryError as exc:
        problem = f"{action} ran out of memory"
        raise IsdnetError(f"{problem}; tile large images (Predictor with "
                          "TileSettings(max_size=...)) or give smaller ones",
                          cli=f"{problem}; tile large images with --max-size") from exc
    except Exception as exc:
        raise IsdnetError(f"{action} failed ({type(exc).__name__}: {one_line(exc)}); "
                          f"{fix}") from exc


class Segmenter:
    """Wraps a backend with the pre/post-processing its contract asks for.

    ``scale=True`` applies the profile's test scale (DeepGlobe: 2448 -> 1958), runs, and
    returns labels at the image's own size, as the official test pipeline does.
    """

    def __init__(self, backend: Backend, scale: bool = True) -> None:
        self.backend = backend
        self.contract: Contract = backend.contract
        self.scale = scale

    @property
    def classes(self) -> list[str]:
        return self.contract.classes

    def _rgb(self, image: Any, color: str) -> tuple[str, np.ndarray]:
        if color not in ("rgb", "bgr"):
            raise IsdnetError(f"color must be 'rgb' or 'bgr', not {color!r}")
        array = to_host_array(image)
        kind = classify_image(array)
        if kind == "hwc8" and color == "bgr":
            array = array[:, :, ::-1]
        return kind, array

    def feeds(self, image: Any, color: str = "rgb") -> tuple[dict[str, np.ndarray],
                                                               tuple[int, int]]:
        """The artifact's feeds for ``image`` and the size labels must come back at."""
        with one_error_type("preparing the image"):
            return self._feeds(image, color)

    def _feeds(self, image: Any, color: str) -> tuple[dict[str, np.ndarray], tuple[int, int]]:
        kind, array = self._rgb(image, color)
        if kind == "nchw":
            return preprocess.feeds_from_normalised(array, self.contract), array.shape[2:]
        size = array.shape[:2]
        if self.scale and self.contract.test_scale != 1.0:
            scaled = preprocess.scaled_size(*size, self.contract.test_scale)
            self._check_scaled_size(size, scaled)
            array = preprocess.resize_image(array, scaled)
        return preprocess.prepare_feeds(np.ascontiguousarray(array), self.contract,
                                        output_size=size), size

    def _check_scaled_size(self, size: tuple[int, int], scaled: tuple[int, int]) -> None:
        """Name the image's own size when the test scale takes it below the minimum."""
        minimum, scale = self.contract.min_size, self.contract.test_scale
        if min(scaled) >= minimum:
            return
        need = math.ceil((minimum - 0.5) / scale)
        problem = (f"image is {size[0]}x{size[1]}; the profile's test scale {scale:g} makes it "
                   f"{scaled[0]}x{scaled[1]}, below the model's minimum of {minimum}x{minimum}; "
                   f"use images of at least {need}x{need}")
        raise IsdnetError(f"{problem}, or load with scale=False",
                          cli=f"{problem}, or pass --no-scale")

    def run_feeds(self, feeds: dict[str, np.ndarray],
                  out: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        with one_error_type(f"the {self.backend.name} engine"):
            return self.backend.run(feeds, out)

    def logits(self, image: Any, color: str = "rgb") -> np.ndarray:
        """1 x classes x h x w scores at the size the artifact saw (after test scale)."""
        if self.contract.output_kind != "logits":
            raise IsdnetError("this artifact outputs labels only; export with "
                              "--output-kind logits to get scores")
        feeds, _ = self.feeds(image, color)
        return self.run_feeds(feeds)["logits"]

    def predict(self, image: Any, color: str = "rgb", out: np.ndarray | None = None
                ) -> np.ndarray:
        """HxW class ids at the input image's size; fills ``out`` when given."""
        with one_error_type("prediction"):
            if is_cuda_array(image) and self.backend.device.is_cuda:
                return self._predict_device(image, out)
            feeds, size = self.feeds(image, color)
            return self.finish(self.run_feeds(feeds), size, out)

    def finish(self, outputs: dict[str, np.ndarray], size: tuple[int, int],
               out: np.ndarray | None = None) -> np.ndarray:
        """Labels at ``size`` from the artifact's outputs."""
        with one_error_type("turning outputs into labels"):
            return self._finish(outputs, size, out)

    def _finish(self, outputs: dict[str, np.ndarray], size: tuple[int, int],
                out: np.ndarray | None) -> np.ndarray:
        if out is not None and tuple(out.shape) != tuple(size):
            raise IsdnetError(f"out buffer is {out.shape}, labels are {tuple(size)}")
        if "labels" in outputs:
            return preprocess.resize_labels(outputs["labels"], size, out)
        return preprocess.logits_to_labels(outputs["logits"], size, out)

    def _predict_device(self, image: Any, out: np.ndarray | None) -> np.ndarray:
        """Device-resident input goes to the engine as is (zero-copy): it must already be
        in the artifact's input form, at the artifact's size."""
        info = self.backend.inputs[0]
        h_axis, w_axis = info.spatial_axes() or (2, 3)
        size = (int(image.shape[h_axis]), int(image.shape[w_axis]))
        feeds = {info.name: image}
        if self.contract.output_resize == "graph":
            feeds[OUTPUT_SIZE_INPUT] = np.asarray(size, np.int32)
        return self.finish(self.run_feeds(feeds), size, out)

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> Segmenter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
