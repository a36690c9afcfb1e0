"""The shallow-branch input computed with NumPy/OpenCV, equal to the torch op to ~1e-6.

Works on HxWxC float32 images (channels last, what OpenCV filters natively) and returns
the 6-channel residual, channels last; ``shallow_input_nchw`` gives the 1x6xHxW tensor an
exported graph takes. PyTorch's 'reflect' padding is OpenCV's BORDER_REFLECT_101.
"""

from __future__ import annotations

import cv2
import numpy as np

_TAPS = np.array([1, 4, 6, 4, 1], dtype=np.float32) / 16.0


def legacy_nearest_index(in_size: int, out_size: int) -> np.ndarray:
    """Source pixels PyTorch's legacy 'nearest' picks: floor(i * float32(in / out))."""
    scale = np.float32(in_size) / np.float32(out_size)
    index = np.floor(np.arange(out_size, dtype=np.float32) * scale).astype(np.int64)
    return np.minimum(index, in_size - 1)


def bilinear_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """First and second source index and the second's weight, per output pixel, of
    PyTorch's bilinear resize (align_corners=False) along one axis.

    PyTorch's vectorised CPU kernels form (i + 0.5) * scale - 0.5 with a single rounding to
    float32 (a fused multiply-add); float64 arithmetic is exact here, so rounding it once
    reproduces that. The C library and labels-output graphs compute the same values.
    """
    scale = np.float64(np.float32(in_size) / np.float32(out_size))
    src = ((np.arange(out_size, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    src = np.maximum(src, np.float32(0.0))
    first = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    second = np.minimum(first + 1, in_size - 1)
    return first, second, (src - first).astype(np.float32)


def resize_bilinear(x: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """PyTorch's bilinear resize (align_corners=False) in its float32 arithmetic.

    cv2.resize rounds its interpolation weights differently (errors ~1e-5 on unit-scale
    data), too far from the model's op for a 1e-5 parity bound.
    """
    r0, r1, wr = bilinear_taps(x.shape[0], out_h)
    c0, c1, wc = bilinear_taps(x.shape[1], out_w)
    wc = wc[:, None] if x.ndim == 3 else wc
    wr = wr[:, None, None] if x.ndim == 3 else wr[:, None]
    cols = x[:, c0] * (np.float32(1.0) - wc) + x[:, c1] * wc
    return cols[r0] * (np.float32(1.0) - wr) + cols[r1] * wr


def gaussian_blur(x: np.ndarray, gain: float = 1.0) -> np.ndarray:
    taps = _TAPS * np.float32(np.sqrt(gain))
    return cv2.sepFilter2D(x, cv2.CV_32F, taps, taps, borderType=cv2.BORDER_REFLECT_101)


def _level(current: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    down = np.ascontiguousarray(gaussian_blur(current)[::2, ::2])
    inserted = np.zeros((2 * down.shape[0], 2 * down.shape[1], *down.shape[2:]), np.float32)
    inserted[::2, ::2] = down
    up = gaussian_blur(inserted, gain=4.0)
    if up.ndim == 2:
        up = up[:, :, None]
    h, w = current.shape[:2]
    if up.shape[:2] != (h, w):
        up = up[legacy_nearest_index(up.shape[0], h)][:, legacy_nearest_index(up.shape[1], w)]
    return current - up, down


def shallow_input(image_hwc: np.ndarray) -> np.ndarray:
    """HxWx3 normalised float image -> HxWx6 residual (level 0, then level 1 resized)."""
    image = np.ascontiguousarray(image_hwc, dtype=np.float32)
    high, down = _level(image)
    low, _ = _level(down)
    h, w = image.shape[:2]
    low = resize_bilinear(low, h, w)
    return np.concatenate([high, low], axis=2)


def shallow_input_nchw(image_hwc: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(shallow_input(image_hwc).transpose(2, 0, 1)[None])
