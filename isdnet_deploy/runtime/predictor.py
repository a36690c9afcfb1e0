"""Whole images of any size through an artifact: tiling where the artifact cannot take
the image whole.

Tiling works in *network pixels*, i.e. on the image after the profile's test scale,
because that is what an artifact's size limits refer to. An image is tiled when it is
larger than the artifact accepts: a static artifact's fixed size, a TensorRT engine's
largest profile shape, or a caller's memory budget (``max_size``); ``tile`` forces
tiling. Tile logits are blended by ``runtime.tiling`` and resized to the image exactly as
whole-image inference resizes its logits, so a tile covering the whole image gives the
same labels as no tiling at all.

Labels-only artifacts have no scores to blend: each tile's labels become one-hot votes,
blended with the same centre-weighted window, so an overlapped pixel takes the label most
tiles (weighted towards tile centres, where context is best) gave it. Without overlap that
is simply each tile's own labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import IsdnetError, one_line
from . import preprocess
from .inputs import classify_image
from .segmenter import Segmenter
from .tiling import tiled_logits

Size = tuple[int, int]


@dataclass(frozen=True)
class TileSettings:
    """How to tile; sizes are HxW in network pixels (after the test scale)."""

    tile: Size | None = None  # always tile with this size
    max_size: Size | None = None  # tile only images larger than this (memory budget)
    overlap: float = 0.25  # fraction of the tile (< 1) or whole pixels (>= 1)
    window: str = "hann"


def _as_size(value: Any) -> Size | None:
    if isinstance(value, list | tuple) and len(value) == 2 and all(
            isinstance(v, int) and v > 0 for v in value):
        return int(value[0]), int(value[1])
    return None


def artifact_limits(segmenter: Segmenter) -> tuple[Size | None, Size | None]:
    """(fixed input size, largest accepted size) of the artifact, either may be None.

    The largest size comes from ``contract.extra['profile_max']`` or, for TensorRT
    engines, from the sidecar's optimization profile.
    """
    contract = segmenter.contract
    fixed = None if contract.dynamic else _as_size(contract.fixed_size)
    largest = _as_size(contract.extra.get("profile_max"))
    sidecar = getattr(segmenter.backend, "sidecar", None)
    if largest is None and sidecar is not None:
        largest = _as_size(getattr(sidecar, "profile", {}).get("max"))
    return fixed, largest


def _smaller(a: Size | None, b: Size | None) -> Size | None:
    if a is None or b is None:
        return a or b
    return min(a[0], b[0]), min(a[1], b[1])


def _fmt(size: Size) -> str:
    return f"{size[0]}x{size[1]}"


def engine_error(exc: Exception) -> IsdnetError | None:
    """A one-line error for engine failures on one image (e.g. out of memory)."""
    module = type(exc).__module__ or ""
    if isinstance(exc, MemoryError) or module.startswith(("onnxruntime", "tensorrt")):
        return IsdnetError(f"the inference engine failed on this image ({type(exc).__name__}: "
                           f"{one_line(exc)}); if it ran out of memory, tile with --max-size")
    return None


class Predictor:
    """A ``Segmenter`` that tiles images larger than its artifact accepts."""

    def __init__(self, segmenter: Segmenter, tiles: TileSettings | None = None) -> None:
        self.segmenter = segmenter
        self.tiles = tiles or TileSettings()
        self.contract = segmenter.contract
        self.fixed, largest = artifact_limits(segmenter)
        self.limit = _smaller(self.tiles.max_size, largest)
        self.last_tiles = 0
        self._calls = 0
        tile = self.tiles.tile
        if self.fixed is not None:
            if tile is not None and tile != self.fixed:
                raise IsdnetError(f"this artifact only accepts {_fmt(self.fixed)} inputs, so "
                                  f"its tiles are that size; drop --tile {_fmt(tile)} or give "
                                  f"--tile {_fmt(self.fixed)}")
            budget = self.tiles.max_size
            if budget is not None and (budget[0] < self.fixed[0] or budget[1] < self.fixed[1]):
                raise IsdnetError(f"--max-size {_fmt(budget)} is below this artifact's fixed "
                                  f"input size {_fmt(self.fixed)}; export a smaller static "
                                  "model or a dynamic one")
        elif tile is not None and largest is not None and (
                tile[0] > largest[0] or tile[1] > largest[1]):
            raise IsdnetError(f"--tile {_fmt(tile)} is larger than this artifact accepts "
                              f"(at most {_fmt(largest)}); use a smaller tile")

    @property
    def num_classes(self) -> int:
        return self.contract.num_classes

    def network_size(self, height: int, width: int) -> Size:
        """The size the artifact sees for an HxW image (the test scale applied)."""
        scale = self.contract.test_scale
        if self.segmenter.scale and scale != 1.0:
            return preprocess.scaled_size(height, width, scale)
        return height, width

    def plan(self, height: int, width: int) -> tuple[Size | None, bool]:
        """(tile size or None for whole-image inference, pad-to-tile) for a network-size
        image."""
        if self.fixed is not None:
            return (None, False) if (height, width) == self.fixed else (self.fixed, True)
        if self.tiles.tile is not None:
            return self.tiles.tile, False
        if self.limit is not None and (height > self.limit[0] or width > self.limit[1]):
            return self.limit, False
        return None, False

    def tile_scores(self, tile: np.ndarray) -> np.ndarray:
        """(C,h,w) float32 scores of one network-size tile: logits, or one-hot votes for
        labels-only artifacts."""
        self._calls += 1
        feeds = preprocess.prepare_feeds(np.ascontiguousarray(tile), self.contract)
        outputs = self.segmenter.run_feeds(feeds)
        if "logits" in outputs:
            logits = np.asarray(outputs["logits"])
            return (logits[0] if logits.ndim == 4 else logits).astype(np.float32, copy=False)
        labels = np.asarray(outputs["labels"])
        labels = labels.reshape(labels.shape[-2:])
        if labels.size and int(labels.max()) >= self.num_classes:
            raise IsdnetError(f"the artifact returned class id {int(labels.max())} but its "
                              f"contract lists {self.num_classes} classes; re-export it")
        return np.eye(self.num_classes, dtype=np.float32)[labels].transpose(2, 0, 1)

    def predict(self, image: np.ndarray) -> np.ndarray:
        """HxW class ids for an HxWx3 uint8 RGB image, tiled when needed."""
        try:
            return self._predict(image)
        except IsdnetError:
            raise
        except Exception as exc:
            error = engine_error(exc)
            if error is None:
                raise
            raise error from None

    def _predict(self, image: np.ndarray) -> np.ndarray:
        classify_image(image)
        height, width = image.shape[:2]
        net = self.network_size(height, width)
        tile, pad = self.plan(*net)
        if tile is None:
            self.last_tiles = 1
            return self.segmenter.predict(image)
        scaled = preprocess.resize_image(image, net)
        start = self._calls
        scores = tiled_logits(scaled, self.tile_scores, tile, self.tiles.overlap,
                              num_classes=self.num_classes, window=self.tiles.window,
                              min_tile=self.contract.min_size, pad_to_tile=pad)
        self.last_tiles = self._calls - start
        if self.contract.output_kind == "labels":
            return preprocess.resize_labels(scores.argmax(axis=0).astype(np.uint8),
                                            (height, width))
        return preprocess.logits_to_labels(scores[None], (height, width))
