"""Image -> artifact feeds, and outputs -> labels; NumPy/OpenCV only (no torch).

Mirrors the official test pipeline: mmcv's keep-ratio resize (bilinear) to the profile's
test scale, normalisation with mmseg's mean/std, logits bilinearly resized back to the
image size before the argmax.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..contract import Contract
from ..errors import IsdnetError
from ..pyramid.opencv_ops import shallow_input_nchw


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


def prepare_feeds(image_rgb: np.ndarray, contract: Contract) -> dict[str, np.ndarray]:
    """Feeds for one HxWx3 uint8 RGB image (already at the size the artifact should see)."""
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
    return feeds


def logits_to_labels(logits: np.ndarray, size: tuple[int, int] | None = None,
                     out: np.ndarray | None = None) -> np.ndarray:
    """1xCxhxw logits -> HxW labels; resized bilinearly first when ``size`` differs."""
    scores = logits[0]
    if size is not None and tuple(scores.shape[1:]) != tuple(size):
        hwc = np.ascontiguousarray(scores.transpose(1, 2, 0))
        scores = cv2.resize(hwc, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
        if scores.ndim == 2:
            scores = scores[:, :, None]
        labels = scores.argmax(axis=2)
    else:
        labels = scores.argmax(axis=0)
    if out is None:
        return labels.astype(np.uint8 if scores.shape[-1] <= 256 else np.int32)
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
