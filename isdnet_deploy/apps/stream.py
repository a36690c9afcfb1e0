"""Labelling a TIFF/GeoTIFF larger than memory allows: window by window, tile by tile.

The image is never held whole. Tiles are planned over the image with ``runtime.tiling``
(the same plan, the same centre-weighted window and the same blend as in-memory tiling),
each tile is read from the file with rasterio windows, labelled through the ``Predictor``'s
own tile path, and its weighted scores are added to small accumulators; as soon as no
later tile can touch a region, it is divided, turned into labels and written into a tiled
GeoTIFF carrying the input's georeference. Tiles go row by row, left to right; the
overlap a tile row leaves for the next one (partial sums) waits in a temporary folder
beside the output instead of memory, so resident memory is one tile's worth whatever the
image's size (measured figures in the README and ``benchmarks/geotiff_memory.py``).

Where no test scale applies, the labels are the in-memory tiled labels exactly (per pixel,
the same float32 sums in the same order). With a test scale, tiles are planned in the
file's pixels and each tile is resized to the network size and its scores back, as
whole-image inference does for an image of that tile's size: the plan then differs from
in-memory tiling, which resizes the whole image first.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..data.images import geotiff_label_writer, open_geotiff
from ..errors import IsdnetError
from ..runtime import preprocess
from ..runtime.predictor import Predictor
from ..runtime.tiling import plan_tiles, tiled_logits, window_2d

# Network pixels per tile when neither the artifact nor the caller sets one. ONNX Runtime
# (fp32, CPU) needs about 130 bytes per network pixel for a forward (2061 MiB at 4000x4000,
# README), so a 2048x2048 tile costs about half a GiB.
DEFAULT_STREAM_TILE = (2048, 2048)
Size = tuple[int, int]


@dataclass
class StreamResult:
    tiles: int  # tiles labelled
    tile: Size  # tile size in the file's pixels


def _network_tile(predictor: Predictor) -> Size:
    """The tile size the artifact should see: its fixed size, the caller's tile or memory
    budget, the engine's largest size, else ``DEFAULT_STREAM_TILE``."""
    return predictor.fixed or predictor.tiles.tile or predictor.limit or DEFAULT_STREAM_TILE


def _scale(predictor: Predictor) -> float:
    scale = predictor.contract.test_scale
    return scale if predictor.segmenter.scale and scale != 1.0 else 1.0


class _Frontier:
    """Partial sums of the rows a tile row shares with the next one, stored per column
    segment in files (``np.save``), read back in column order by the next row."""

    def __init__(self, folder: Path, row: int) -> None:
        self.folder, self.row = folder, row
        self.segments: list[tuple[int, int, Path]] = []  # (first column, end column, file)
        self._loaded: tuple[int, np.ndarray] | None = None

    def put(self, left: int, sums: np.ndarray) -> None:
        path = self.folder / f"r{self.row}_c{left}.npy"
        np.save(path, sums)
        self.segments.append((left, left + sums.shape[-1], path))

    def take(self, left: int, right: int) -> np.ndarray:
        """Columns [left, right) of the stored sums (requests come in column order)."""
        parts = []
        for first, end, path in self.segments:
            if end <= left or first >= right:
                continue
            if self._loaded is None or self._loaded[0] != first:
                self._loaded = (first, np.load(path))
            data = self._loaded[1]
            parts.append(data[..., max(left, first) - first:min(right, end) - first])
        return np.concatenate(parts, axis=-1)

    def remove(self) -> None:
        for _, _, path in self.segments:
            path.unlink(missing_ok=True)


def stream_geotiff(predictor: Predictor, source: str | os.PathLike[str],
                   destination: str | os.PathLike[str], palette: list[list[int]], *,
                   max_block_pixels: int | None = None,
                   progress: Callable[[int, int], None] | None = None) -> StreamResult:
    """Label ``source`` window by window into the GeoTIFF ``destination`` (atomically).

    ``progress(done, total)`` is called after each tile. ``max_block_pixels`` refuses a
    file whose storage blocks (a single huge strip, typically) are larger, as GDAL decodes
    whole blocks.
    """
    if predictor.num_classes > 256:
        raise IsdnetError(f"streaming blends one score per class and pixel; this artifact has "
                          f"{predictor.num_classes} classes (at most 256 can be streamed): "
                          "tile the image into files within the pixel budget instead")
    scale = _scale(predictor)
    network = _network_tile(predictor)
    tile = (max(1, math.floor(network[0] / scale)), max(1, math.floor(network[1] / scale)))
    overlap = predictor.tiles.overlap
    if overlap >= 1:  # whole pixels are network pixels, as in in-memory tiling
        overlap = round(overlap / scale)
    min_tile = math.ceil(predictor.contract.min_size / scale)
    out = Path(destination)
    with open_geotiff(source, max_block_pixels) as geotiff, \
            geotiff_label_writer(out, geotiff.georef, palette) as write, \
            tempfile.TemporaryDirectory(prefix=".isdnet-stream.", dir=out.parent) as scratch:
        boxes = plan_tiles(geotiff.height, geotiff.width, tile, overlap, min_tile)
        ys = sorted({b[0] for b in boxes})
        xs = sorted({b[1] for b in boxes})
        th, tw = boxes[0][2] - boxes[0][0], boxes[0][3] - boxes[0][1]
        weights = window_2d(th, tw, predictor.tiles.window)
        blender = _Blender(geotiff, write, predictor, (th, tw), scale, weights)
        previous: _Frontier | None = None
        for r, top in enumerate(ys):
            bottom_final = ys[r + 1] if r + 1 < len(ys) else geotiff.height
            carried = ys[r - 1] + th - top if r else 0
            frontier = _Frontier(Path(scratch), r)
            blender.row(top, xs, bottom_final, carried, previous, frontier)
            if previous is not None:
                previous.remove()
            previous = frontier
            if progress is not None:
                progress((r + 1) * len(xs), len(boxes))
    return StreamResult(len(boxes), (th, tw))


class _Blender:
    """One tile row at a time: accumulate, finish what no later tile touches, carry the
    rest (to the right within the row, to the frontier for the next row)."""

    def __init__(self, geotiff: Any, write: Callable[[np.ndarray, int, int], None],
                 predictor: Predictor, tile: Size, scale: float, weights: np.ndarray) -> None:
        self.geotiff, self.write, self.predictor = geotiff, write, predictor
        self.th, self.tw = tile
        self.scale, self.weights = scale, weights
        self.classes = predictor.num_classes
        self.network = _network_tile(predictor)

    def scores(self, image: np.ndarray) -> np.ndarray:
        """(C, h, w) float32 scores of one tile at its own size, as whole-image inference
        would give for an image of that size (resized to the network size and back)."""
        predictor, (h, w) = self.predictor, image.shape[:2]
        net = preprocess.scaled_size(h, w, self.scale) if self.scale != 1.0 else (h, w)
        resized = preprocess.resize_image(image, net)
        scores = tiled_logits(resized, predictor.tile_scores, self.network, 0,
                              num_classes=self.classes, window=predictor.tiles.window,
                              min_tile=predictor.contract.min_size,
                              pad_to_tile=predictor.fixed is not None)
        if net == (h, w):
            return scores
        hwc = cv2.resize(np.ascontiguousarray(scores.transpose(1, 2, 0)), (w, h),
                         interpolation=cv2.INTER_LINEAR)
        return np.ascontiguousarray(hwc.reshape(h, w, -1).transpose(2, 0, 1))

    def row(self, top: int, xs: list[int], bottom_final: int, carried: int,
            previous: _Frontier | None, frontier: _Frontier) -> None:
        """Tiles at ``top``, left to right; ``carried`` rows at the top hold partial sums
        of earlier rows (``previous``)."""
        th, tw = self.th, self.tw
        sums = weight = None
        for c, left in enumerate(xs):
            new_sums = np.zeros((self.classes, th, tw), np.float32)
            new_weight = np.zeros((th, tw), np.float32)
            keep = 0
            if sums is not None:  # columns [left, end of the tile before) carried over
                shift = left - xs[c - 1]
                keep = tw - shift
                new_sums[:, :, :keep] = sums[:, :, shift:]
                new_weight[:, :keep] = weight[:, shift:]
            if previous is not None and carried:  # the rows above, for the new columns
                stored = previous.take(left + keep, left + tw)
                new_sums[:, :carried, keep:] = stored[:-1]
                new_weight[:carried, keep:] = stored[-1]
            sums, weight = new_sums, new_weight
            scores = self.scores(self.geotiff.read(top, left, top + th, left + tw))
            sums += np.multiply(scores, self.weights, out=scores)
            weight += self.weights
            right = xs[c + 1] if c + 1 < len(xs) else self.geotiff.width
            self._finish(sums[:, :, :right - left], weight[:, :right - left], top, left,
                         bottom_final, frontier)

    def _finish(self, sums: np.ndarray, weight: np.ndarray, top: int, left: int,
                bottom_final: int, frontier: _Frontier) -> None:
        """Columns no later tile of this row touches: rows above the next tile row become
        labels; the rows it shares go to the frontier."""
        final = bottom_final - top
        blended = sums[:, :final] / weight[:final]
        labels = blended.argmax(axis=0)
        self.write(labels.astype(np.uint8 if self.classes <= 256 else np.uint16), top, left)
        if final < sums.shape[1]:
            frontier.put(left, np.concatenate([sums[:, final:], weight[None, final:]]))
