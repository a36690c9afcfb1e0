"""Sliding-window inference for images larger than an engine's input.

Tiles overlap and their logits are blended with a smooth window that is highest in a
tile's centre, where the network saw the most context, and low (but above zero, so the
image's own borders still count) at its edges; the blend is normalised by the summed
weights. A tile that covers the whole image is run once and returned unchanged, so
tiling never alters whole-image inference.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import cv2
import numpy as np

from ..errors import IsdnetError
from ..profiles import MIN_SIZE

Box = tuple[int, int, int, int]  # (y0, x0, y1, x1), end-exclusive
LogitsFn = Callable[[np.ndarray], np.ndarray]
WINDOWS = ("hann", "uniform")


def _overlap_px(overlap: float, tile: int) -> int:
    if isinstance(overlap, float) and 0.0 <= overlap < 1.0:
        return round(overlap * tile)
    if overlap != int(overlap) or overlap < 0:
        raise IsdnetError(f"overlap {overlap} must be a fraction in [0, 1) or whole pixels")
    return int(overlap)


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    """Tile starts spread evenly from 0 to length - tile, overlapping by >= overlap."""
    if tile >= length:
        return [0]
    stride = tile - overlap
    if stride <= 0:
        raise IsdnetError(f"overlap {overlap} px must be smaller than the tile ({tile} px)")
    n = math.ceil((length - tile) / stride) + 1
    return [round(i * (length - tile) / (n - 1)) for i in range(n)]


def plan_tiles(height: int, width: int, tile: tuple[int, int], overlap: float = 0.25,
               min_tile: int = MIN_SIZE) -> list[Box]:
    """Boxes covering an HxW image; the last tile of each row/column touches the border.

    ``overlap`` is a fraction of the tile (float < 1) or pixels (int). A tile larger than
    the image is shrunk to it; below ``min_tile`` the model has no spatial extent left.
    """
    th, tw = min(tile[0], height), min(tile[1], width)
    if min(th, tw) < min_tile:
        raise IsdnetError(
            f"tile {th}x{tw} (image {height}x{width}) is below the minimum of {min_tile} px; "
            f"use tiles and images of at least {min_tile}x{min_tile}")
    ys = _starts(height, th, _overlap_px(overlap, th))
    xs = _starts(width, tw, _overlap_px(overlap, tw))
    return [(y, x, y + th, x + tw) for y in ys for x in xs]


def window_2d(h: int, w: int, kind: str = "hann", floor: float = 0.05) -> np.ndarray:
    """Blend weights for one tile: separable Hann ramp lifted to ``floor`` at the edges.

    'uniform' weighs every pixel 1 (plain averaging of overlaps, as mmsegmentation's
    slide mode does).
    """
    if kind not in WINDOWS:
        raise IsdnetError(f"unknown blending window {kind!r}; choose one of {', '.join(WINDOWS)}")
    if kind == "uniform":
        return np.ones((h, w), dtype=np.float32)
    if not 0.0 < floor <= 1.0:
        raise IsdnetError(f"window floor must be in (0, 1], got {floor}")

    def ramp(n: int) -> np.ndarray:
        hann = np.sin(np.pi * (np.arange(n) + 0.5) / n) ** 2
        return floor + (1.0 - floor) * hann

    return np.outer(ramp(h), ramp(w)).astype(np.float32)


def _as_chw(out: np.ndarray, box: Box, num_classes: int | None) -> np.ndarray:
    out = np.asarray(out)
    if out.ndim == 4 and out.shape[0] == 1:
        out = out[0]
    h, w = box[2] - box[0], box[3] - box[1]
    if out.ndim != 3 or out.shape[1:] != (h, w):
        raise IsdnetError(f"logits for a {h}x{w} tile have shape {out.shape}; expected "
                          f"(C,{h},{w}): the backend must return full-resolution logits")
    if num_classes is not None and out.shape[0] != num_classes:
        raise IsdnetError(f"logits have {out.shape[0]} classes but {num_classes} were expected; "
                          "check the profile")
    return out


def tiled_logits(image: np.ndarray, logits_fn: LogitsFn, tile: tuple[int, int],
                 overlap: float = 0.25, num_classes: int | None = None,
                 window: str = "hann", floor: float = 0.05, min_tile: int = MIN_SIZE,
                 pad_to_tile: bool = False) -> np.ndarray:
    """(C,H,W) float32 logits of an HxWx3 image, from ``logits_fn(tile) -> (C,h,w)``.

    ``pad_to_tile`` serves fixed-shape engines: an image smaller than the tile is
    reflect-padded up to it and the logits cropped back, so every call gets exactly
    ``tile``.
    """
    if image.ndim != 3:
        raise IsdnetError(f"image must be HxWxC, got shape {image.shape}")
    height, width = image.shape[:2]
    if pad_to_tile and (height < tile[0] or width < tile[1]):
        padded = cv2.copyMakeBorder(image, 0, max(0, tile[0] - height), 0,
                                    max(0, tile[1] - width), cv2.BORDER_REFLECT_101)
        logits = tiled_logits(padded, logits_fn, tile, overlap, num_classes, window, floor,
                              min_tile)
        return np.ascontiguousarray(logits[:, :height, :width])
    boxes = plan_tiles(height, width, tile, overlap, min_tile)
    if len(boxes) == 1:
        return _as_chw(logits_fn(image), boxes[0], num_classes).astype(np.float32, copy=False)
    th, tw = boxes[0][2] - boxes[0][0], boxes[0][3] - boxes[0][1]
    weights = window_2d(th, tw, window, floor)

    def run(box: Box) -> np.ndarray:
        y0, x0, y1, x1 = box
        return _as_chw(logits_fn(np.ascontiguousarray(image[y0:y1, x0:x1])), box, num_classes)

    first = run(boxes[0])
    total = np.zeros((first.shape[0], height, width), dtype=np.float32)
    weight_sum = np.zeros((height, width), dtype=np.float32)
    for box, out in zip(boxes, itertools.chain([first], map(run, boxes[1:])), strict=True):
        y0, x0, y1, x1 = box
        total[:, y0:y1, x0:x1] += out * weights
        weight_sum[y0:y1, x0:x1] += weights
    total /= weight_sum
    return total


def tiled_labels(image: np.ndarray, logits_fn: LogitsFn, tile: tuple[int, int],
                 overlap: float = 0.25, num_classes: int | None = None,
                 window: str = "hann", floor: float = 0.05, min_tile: int = MIN_SIZE,
                 pad_to_tile: bool = False) -> np.ndarray:
    """HxW uint8 class ids: the argmax of ``tiled_logits``."""
    logits = tiled_logits(image, logits_fn, tile, overlap, num_classes, window, floor,
                          min_tile, pad_to_tile)
    return logits.argmax(axis=0).astype(np.uint8)
