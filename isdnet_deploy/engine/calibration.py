"""Calibration and verification inputs: real images when given, else seeded synthetic ones.

An ``ImageSource`` turns either into network feeds the way inference prepares them; a
``CalibrationReader`` hands them to ONNX Runtime's calibrator through its
``CalibrationDataReader`` interface; ``held_out_split`` keeps INT8 verification off the
images the ranges came from.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from .. import runtime
from ..contract import Contract
from ..data.headers import DEFAULT_MAX_PIXELS
from ..data.images import read_image
from ..errors import IsdnetError

# Held-out verification images of synthetic calibration: seeds far from the calibration ones.
VERIFY_SEED_OFFSET = 10_000
# Calibration and verification size for dynamic models: activation ranges are statistics of
# image content, nearly independent of the crop size, and a forward pass at the paper's
# 1958x1958 takes seconds on a CPU.
DEFAULT_CALIB_SIZE = (512, 512)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")

ImageChoice = Sequence[str | os.PathLike] | str | os.PathLike | None


def list_calibration_images(folder: str | os.PathLike) -> list[Path]:
    """The images under ``folder`` (recursively); files named like ground-truth masks (the
    dataset pairing rules: DeepGlobe's ``*_mask``) are left out, with a warning."""
    from ..data.datasets import describe_skipped_masks, split_masks
    from .precision import CalibrationWarning

    folder = Path(folder)
    if not folder.is_dir():
        raise IsdnetError(f"calibration folder {folder} does not exist or is not a folder")
    images, masks = split_masks(sorted(p for p in folder.rglob("*")
                                       if p.suffix.lower() in IMAGE_SUFFIXES))
    if masks:
        warnings.warn(describe_skipped_masks(masks), CalibrationWarning, stacklevel=3)
    if not images:
        raise IsdnetError(f"calibration folder {folder} holds no images "
                          f"({', '.join(IMAGE_SUFFIXES)}); point --calib at the images to "
                          "calibrate on, or leave it out to use synthetic images")
    return images


def select_images(choice: ImageChoice, max_images: int, seed: int) -> list[Path] | None:
    """A folder's images or a list of image paths, at most ``max_images`` of them (a seeded
    pick); None when no images were given (synthetic inputs then)."""
    if choice is None:
        return None
    if isinstance(choice, (str, os.PathLike)):
        images = list_calibration_images(choice)
    else:
        images = [Path(p) for p in choice]
        if not images:
            raise IsdnetError("the list of calibration images is empty; pass images, or None "
                              "to calibrate on synthetic images")
        absent = [p for p in images if not p.is_file()]
        if absent:
            raise IsdnetError(f"calibration image {absent[0]} does not exist")
    if len(images) > max_images:
        picks = np.random.default_rng(seed).choice(len(images), max_images, replace=False)
        images = [images[i] for i in sorted(picks)]
    return images


def synthetic_image(size: tuple[int, int], seed: int) -> np.ndarray:
    """A seeded RGB image with smooth structure at several scales (not white noise, whose
    activation ranges look nothing like a photograph's)."""
    h, w = size
    rng = np.random.default_rng(seed)
    acc = np.zeros((h, w, 3), np.float32)
    for cells, weight in ((3, 0.45), (12, 0.3), (48, 0.15)):
        coarse = rng.random((cells, cells, 3), dtype=np.float32)
        acc += weight * cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    acc += 0.1 * rng.random((h, w, 3), dtype=np.float32)
    return np.clip(acc * 255.0, 0, 255).astype(np.uint8)


def input_size(contract: Contract, size: tuple[int, int] | None) -> tuple[int, int]:
    """The HxW to calibrate and verify at: the model's fixed size, else ``size`` (default
    ``DEFAULT_CALIB_SIZE``) checked against the model's minimum."""
    if not contract.dynamic and contract.fixed_size:
        fixed = (int(contract.fixed_size[0]), int(contract.fixed_size[1]))
        if size is not None and tuple(size) != fixed:
            raise IsdnetError(f"this model has a fixed input size {fixed[0]}x{fixed[1]}; "
                              f"it cannot be calibrated or verified at {size[0]}x{size[1]}")
        return fixed
    size = tuple(size or DEFAULT_CALIB_SIZE)
    if min(size) < contract.min_size:
        raise IsdnetError(f"size {size[0]}x{size[1]} is below the model's minimum "
                          f"{contract.min_size}x{contract.min_size}")
    return int(size[0]), int(size[1])


def network_input(image: np.ndarray, contract: Contract, size: tuple[int, int]) -> np.ndarray:
    """Scale like inference does (the profile's test scale), then centre-crop to ``size``."""
    h, w = size
    if not contract.dynamic:
        return runtime.resize_image(image, (h, w))
    image = runtime.resize_image(image, runtime.scaled_size(*image.shape[:2],
                                                            contract.test_scale))
    ih, iw = image.shape[:2]
    if ih < h or iw < w:
        scale = max(h / ih, w / iw)
        image = runtime.resize_image(image, (max(h, round(ih * scale)),
                                             max(w, round(iw * scale))))
        ih, iw = image.shape[:2]
    top, left = (ih - h) // 2, (iw - w) // 2
    return np.ascontiguousarray(image[top:top + h, left:left + w])


class ImageSource:
    """Calibration-like network inputs: real images when given (refused above the pixel
    budget ``max_pixels`` before decoding), else ``count`` seeded synthetic ones (seeds
    ``seed``, ``seed + 1``, ...)."""

    def __init__(self, contract: Contract, size: tuple[int, int],
                 images: Sequence[Path] | None, count: int, seed: int,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS) -> None:
        self.contract, self.size, self.images = contract, size, list(images or [])
        self.count = len(self.images) if self.images else count
        self.seed, self.max_pixels = seed, max_pixels

    def feeds(self, index: int) -> dict[str, np.ndarray]:
        if self.images:
            image = network_input(read_image(self.images[index], max_pixels=self.max_pixels),
                                  self.contract, self.size)
        else:
            image = synthetic_image(self.size, self.seed + index)
        return runtime.prepare_feeds(image, self.contract)

    def describe(self) -> str:
        if self.images:
            return f"{self.count} image(s) from {self.images[0].parent}"
        return f"{self.count} seeded synthetic image(s) (seed {self.seed})"


def held_out_split(contract: Contract, size: tuple[int, int], images: list[Path] | None, *,
                   num_synthetic: int, num_verify: int, max_images: int, seed: int,
                   max_pixels: int | None = DEFAULT_MAX_PIXELS
                   ) -> tuple[ImageSource, ImageSource]:
    """(calibration, verification) sources, verification held out from calibration.

    Synthetic calibration is verified on other seeds (``VERIFY_SEED_OFFSET`` away). A folder
    gives ``num_verify`` images picked at random (seeded) when it holds at least twice that
    many; a smaller one cannot spare them, and the calibration source itself is returned as
    the verification source.
    """
    held_out = None
    if images is None:
        held_out = ImageSource(contract, size, None, num_verify, seed + VERIFY_SEED_OFFSET)
    elif len(images) >= 2 * num_verify:
        picks = set(np.random.default_rng(seed + 1).choice(len(images), num_verify,
                                                           replace=False).tolist())
        held_out = ImageSource(contract, size, [p for i, p in enumerate(images) if i in picks],
                               num_verify, seed, max_pixels)
        images = [p for i, p in enumerate(images) if i not in picks][:max_images]
    calibration = ImageSource(contract, size, images, num_synthetic, seed, max_pixels)
    return calibration, (calibration if held_out is None else held_out)


def describe_split(calibration: ImageSource, verification: ImageSource) -> str:
    if verification is calibration:
        return (f"{calibration.describe()}; verified on the calibration images themselves "
                "(give at least twice --verify images to hold some out)")
    return f"{calibration.describe()}; verified on {verification.describe()} held out"


class CalibrationReader(CalibrationDataReader):
    """Feeds a source's inputs to ONNX Runtime's calibrator one at a time, with a progress
    bar; ``get_next`` returns None when they are used up, ``rewind`` starts over."""

    def __init__(self, source: ImageSource, progress: bool) -> None:
        from tqdm.auto import tqdm

        self.source = source
        self.index = 0
        self.bar = tqdm(total=source.count, desc="calibrating", unit="image",
                        disable=not progress)

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.index >= self.source.count:
            self.bar.close()
            return None
        feeds = self.source.feeds(self.index)
        self.index += 1
        self.bar.update(1)
        return feeds

    def rewind(self) -> None:
        self.index = 0
        self.bar.reset()

    def __len__(self) -> int:
        return self.source.count
