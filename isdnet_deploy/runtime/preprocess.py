"""Image -> artifact feeds, and outputs -> labels; NumPy/OpenCV only (no torch).

Mirrors the official test pipeline: mmcv's keep-ratio resize (bilinear) to the profile's
test scale, normalisation with mmseg's mean/std, logits bilinearly resized back to the
image size before the argmax.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..contract import OUTPUT_SIZE_INPUT, Contract
from ..errors import IsdnetError
from ..profiles import MAX_SIZE
from ..pyramid.opencv_ops import bilinear_taps, shallow_input_nchw

# Output rows per block of logits_to_labels: one class's scratch rows of a block stay in
# the CPU caches (blocks of 16 to 128 rows measured alike at 2448x2448, 256 rows 1.7x
# slower).
_BLOCK_ROWS = 32


def scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    return int(height * scale + 0.5), int(width * scale + 0.5)


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if image.shape[:2] == tuple(size):
        return image
    return cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)


def normalise(image_rgb: np.ndarray, contract: Contract) -> np.ndarray:
    """HxWx3 uint8 RGB -> normalised float32 HxWx3 ((x - mean) / std, as mmseg)."""
    mean = np.asarray(contract.mean, np.float32)
    std = np.asarray(contract.std, np.float32)
    return (image_rgb.astype(np.float32) - mean) / std


def check_size(contract: Contract, height: int, width: int) -> None:
    if min(height, width) < contract.min_size:
        raise IsdnetError(f"image is {height}x{width}, below the model's minimum of "
                          f"{contract.min_size}x{contract.min_size}; upscale or pad it")
    if contract.fixed_size and [height, width] != list(contract.fixed_size):
        h, w = contract.fixed_size
        raise IsdnetError(f"this artifact was exported for {h}x{w} only, the input is "
                          f"{height}x{width}; export with --dynamic or use tiled inference")


def check_output_size(contract: Contract, size: tuple[int, int],
                      output_size: tuple[int, int]) -> None:
    """The labels size an ``output_resize == "graph"`` artifact may be asked for: from the
    network input's size up to twice it (the graph's exact bilinear enlarges by at most 2),
    and at most ``profiles.MAX_SIZE``, where the graph's index arithmetic is proven safe."""
    for side, net, out in zip(("height", "width"), size, output_size, strict=True):
        if out > MAX_SIZE:
            raise IsdnetError(
                f"labels {side} {out} is above {MAX_SIZE}, the largest side this artifact "
                f"resizes its labels to in the graph (its integer resampling is proven "
                f"int32-safe up to there); tile the image (TileSettings(max_size=...))",
                cli=f"labels {side} {out} is above {MAX_SIZE}, the largest side this artifact "
                    f"resizes its labels to; tile the image with --max-size")
        if not net <= out <= 2 * net:
            raise IsdnetError(
                f"labels {side} {out} is not between the network input's {side} {net} and "
                f"twice it; this artifact resizes its logits by at most 2x (the test scale "
                f"must lie in [0.5, 1]); use the image's own size before the test scale")


def prepare_feeds(image_rgb: np.ndarray, contract: Contract,
                  output_size: tuple[int, int] | None = None) -> dict[str, np.ndarray]:
    """Feeds for one HxWx3 uint8 RGB image (already at the size the artifact should see).

    ``output_size`` is the size labels must come back at (the image's size before the test
    scale); artifacts that resize in the graph take it as an input, by default the image's
    own size (no resize). Others ignore it.
    """
    h, w = image_rgb.shape[:2]
    check_size(contract, h, w)
    normalised = None
    if contract.input_kind == "uint8":
        feeds = {"image": np.ascontiguousarray(image_rgb[None])}
    else:
        normalised = normalise(image_rgb, contract)
        feeds = {"image": np.ascontiguousarray(normalised.transpose(2, 0, 1)[None])}
    if contract.pyramid == "external":
        if normalised is None:
            normalised = normalise(image_rgb, contract)
        feeds["residual"] = shallow_input_nchw(normalised)
    if contract.output_resize == "graph":
        target = (h, w) if output_size is None else tuple(output_size)
        check_output_size(contract, (h, w), target)
        feeds[OUTPUT_SIZE_INPUT] = np.asarray(target, np.int32)
    return feeds


def feeds_from_normalised(image_nchw: np.ndarray, contract: Contract) -> dict[str, np.ndarray]:
    """Feeds for an already normalised 1x3xHxW float image (float-input artifacts only)."""
    if contract.input_kind != "float":
        raise IsdnetError("this artifact takes raw uint8 RGB bytes (1xHxWx3); pass the "
                          "HxWx3 uint8 image instead of a normalised float tensor")
    check_size(contract, image_nchw.shape[2], image_nchw.shape[3])
    feeds = {"image": np.ascontiguousarray(image_nchw, dtype=np.float32)}
    if contract.pyramid == "external":
        feeds["residual"] = shallow_input_nchw(image_nchw[0].transpose(1, 2, 0))
    if contract.output_resize == "graph":
        feeds[OUTPUT_SIZE_INPUT] = np.asarray(image_nchw.shape[2:], np.int32)
    return feeds


def logits_to_labels(logits: np.ndarray, size: tuple[int, int] | None = None,
                     out: np.ndarray | None = None) -> np.ndarray:
    """1xCxhxw logits -> HxW labels: the first class with the highest score, after resizing
    the logits bilinearly to ``size`` when it differs, as the official pipeline does.

    The resize is PyTorch's bilinear (align_corners=False) in exactly specified float32
    arithmetic, so that the C library (c/src/postprocess.c) and labels-output graphs
    (export/graph.py) reproduce it to the bit: sample positions and weights as PyTorch
    computes them (``bilinear_taps``), each value ``a * w0 + b * w1`` with both products
    rounded, columns first, then rows. PyTorch's CPU kernel fuses one of the products into
    an FMA, so it differs from this in the last bit of some values (argmax agreement stays
    above 99.99 %). cv2.resize's float path, used before, rounds its weights to other values
    and its SIMD arithmetic depends on the CPU. NaN scores never win; a pixel whose scores
    are all NaN gets class 0.

    Rows are resized in blocks, one class at a time, with the argmax fused in, so the
    full-resolution CxHxW scores never exist. 2448x2448 from 1958x1958 with 7 classes, on
    this project's shared 2-core machine (``benchmarks/c_vs_python.py``, medians of 5
    interleaved runs): 500 ms, where cv2.resize plus ``argmax`` took 584 ms.
    """
    scores = np.asarray(logits, np.float32)[0]
    classes, h, w = scores.shape
    height, width = (h, w) if size is None else (int(size[0]), int(size[1]))
    labels = np.zeros((height, width), np.uint8 if classes <= 256 else np.int32)
    resize = (height, width) != (h, w)
    if resize:
        r0, r1, wr = bilinear_taps(h, height)
        c0, c1, wc = bilinear_taps(w, width)
        wc0 = np.float32(1.0) - wc
        wr0, wr1 = (np.float32(1.0) - wr)[:, None], wr[:, None]
        starts = range(0, height, _BLOCK_ROWS)
        span = max(r1[min(y + _BLOCK_ROWS, height) - 1] + 1 - r0[y] for y in starts)
        cols0 = np.empty((span, width), np.float32)
        cols1 = np.empty((span, width), np.float32)
        rows1 = np.empty((_BLOCK_ROWS, width), np.float32)
    rows0 = np.empty((_BLOCK_ROWS, width), np.float32)
    best = np.empty((_BLOCK_ROWS, width), np.float32)
    higher = np.empty((_BLOCK_ROWS, width), bool)
    step = np.empty((_BLOCK_ROWS, width), labels.dtype)
    for y0 in range(0, height, _BLOCK_ROWS):
        y1 = min(y0 + _BLOCK_ROWS, height)
        n = y1 - y0
        if resize:
            lo, hi = r0[y0], r1[y1 - 1] + 1
            a, b, p, q = cols0[:hi - lo], cols1[:hi - lo], rows0[:n], rows1[:n]
        block, top, more, delta = labels[y0:y1], best[:n], higher[:n], step[:n]
        for k in range(classes):
            if resize:
                source = scores[k, lo:hi]
                np.take(source, c0, axis=1, out=a)
                np.take(source, c1, axis=1, out=b)
                a *= wc0
                b *= wc
                a += b
                np.take(a, r0[y0:y1] - lo, axis=0, out=p)
                np.take(a, r1[y0:y1] - lo, axis=0, out=q)
                p *= wr0[y0:y1]
                q *= wr1[y0:y1]
                p += q
            else:
                p = scores[k, y0:y1]
            if k == 0:
                np.fmax(p, -np.inf, out=top)
                continue
            np.greater(p, top, out=more)
            np.fmax(top, p, out=top)
            # block = where(more, k, block) without a branchy masked store: k - block wraps
            # in uint8, and block + (k - block) is k again.
            np.subtract(k, block, out=delta)
            np.multiply(delta, more, out=delta)
            block += delta
    if out is None:
        return labels
    np.copyto(out, labels, casting="unsafe")
    return out


def resize_labels(labels: np.ndarray, size: tuple[int, int],
                  out: np.ndarray | None = None) -> np.ndarray:
    if tuple(labels.shape) != tuple(size):
        labels = cv2.resize(labels if labels.dtype == np.uint8 else labels.astype(np.int32),
                            (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
    if out is None:
        return labels
    np.copyto(out, labels, casting="unsafe")
    return out
