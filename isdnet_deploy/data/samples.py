"""Synthetic aerial-like images with exact masks, for trying the toolchain without a dataset.

Nothing is downloaded. The images only look roughly aerial (smooth class regions with a
class-specific colour and texture); a trained ISDNet will not score well on them, but
every part of the pipeline (pairing, mask decoding, inference, metrics, reports) runs
exactly as on the real data. Output is deterministic for a given seed.

Layouts follow each dataset's own naming, so ``pair_files`` pairs them as it would the
real data:

- DeepGlobe: ``OUT/<id>_sat.jpg`` (JPEG, like the dataset) and ``OUT/<id>_mask.png``
  (RGB palette colours) in one folder;
- Inria: ``OUT/images/<name>.tif`` (RGB) and ``OUT/gt/<name>.tif`` (single band,
  0 = background, 255 = building);
- any other profile: ``OUT/images/<name>.png`` and ``OUT/labels/<name>.png``
  (palette-indexed class ids).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from ..errors import IsdnetError
from ..fileio import atomic_write_bytes
from ..profiles import MIN_SIZE, Profile, get_profile
from .images import colorize, write_image, write_label_png

# DeepGlobe classes: unknown, urban, agriculture, rangeland, forest, water, barren.
_DEEPGLOBE_WEIGHTS = (0.02, 0.14, 0.34, 0.12, 0.16, 0.10, 0.12)
_DEEPGLOBE_COLOURS = ((18, 18, 20), (142, 136, 128), (168, 158, 92), (146, 138, 96),
                      (48, 78, 44), (38, 62, 92), (186, 168, 138))
_DEEPGLOBE_GRAIN = (3.0, 10.0, 6.0, 8.0, 12.0, 3.0, 9.0)
_ROOF_COLOURS = ((182, 172, 160), (150, 84, 70), (92, 92, 98), (204, 202, 198), (120, 110, 100))
_REGION_PX = 96  # typical region diameter in pixels


def sample_dirs(out_dir: str | os.PathLike[str], profile: Profile | str) -> tuple[Path, Path]:
    """(images folder, masks folder) of a generated set, for ``pair_files``."""
    profile = get_profile(profile) if isinstance(profile, str) else profile
    out = Path(out_dir)
    if profile.name == "deepglobe":
        return out, out
    if profile.name == "inria":
        return out / "images", out / "gt"
    return out / "images", out / "labels"


def _smooth_field(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Zero-mean, unit-ish random field varying on a scale of ``cell`` pixels."""
    gh, gw = max(2, round(h / cell) + 2), max(2, round(w / cell) + 2)
    grid = rng.standard_normal((gh, gw)).astype(np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)


def _region_labels(rng: np.random.Generator, h: int, w: int,
                   weights: tuple[float, ...]) -> np.ndarray:
    """Class map whose regions are where each class's random field is the highest."""
    scores = [_smooth_field(rng, h, w, _REGION_PX) + 0.35 * _smooth_field(rng, h, w, 24)
              + 1.2 * np.log(wt) for wt in weights]
    return np.argmax(np.stack(scores), axis=0).astype(np.uint8)


def _grain(rng: np.random.Generator, h: int, w: int, sigma: float) -> np.ndarray:
    noise = rng.standard_normal((h, w)).astype(np.float32)
    return cv2.GaussianBlur(noise, (0, 0), sigma) * (1.0 + sigma)


def _deepglobe(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    labels = _region_labels(rng, h, w, _DEEPGLOBE_WEIGHTS)
    image = np.asarray(_DEEPGLOBE_COLOURS, dtype=np.float32)[labels]
    fine = _grain(rng, h, w, 0.8)
    image += (np.asarray(_DEEPGLOBE_GRAIN, dtype=np.float32)[labels] * fine)[:, :, None]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    # Agriculture: parcels of different brightness, ploughed in stripes.
    theta = rng.uniform(0, np.pi)
    stripes = np.sin(2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / rng.uniform(5, 9))
    parcels = _smooth_field(rng, h, w, 40)
    farm = labels == 2
    image[farm] += (8.0 * stripes[farm] + 14.0 * np.sign(parcels[farm]))[:, None]
    # Forest: clumpy canopy; urban: block pattern of roofs and streets.
    forest = labels == 4
    image[forest] += 18.0 * _grain(rng, h, w, 2.0)[forest][:, None]
    blocks = rng.uniform(-28, 28, size=(h // 8 + 1, w // 8 + 1)).astype(np.float32)
    urban = labels == 1
    image[urban] += blocks[(yy[urban] // 8).astype(int), (xx[urban] // 8).astype(int)][:, None]
    image += 8.0 * _smooth_field(rng, h, w, 300)[:, :, None]  # uneven illumination
    image = cv2.GaussianBlur(image, (0, 0), 0.7)
    return np.clip(image + 0.5, 0, 255).astype(np.uint8), labels


def _inria(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    ground = _smooth_field(rng, h, w, 120)
    grass, pavement = np.array((98, 114, 78), np.float32), np.array((132, 127, 116), np.float32)
    mix = (1.0 / (1.0 + np.exp(-2.0 * ground)))[:, :, None]
    image = mix * grass + (1.0 - mix) * pavement
    image += 6.0 * _grain(rng, h, w, 1.0)[:, :, None]
    trees = _smooth_field(rng, h, w, 30) > 1.1
    image[trees] = image[trees] * 0.5 + np.array((30, 52, 30), np.float32)
    for _ in range(max(1, (h + w) // 300)):  # roads
        y0, y1 = rng.uniform(0, h, 2)
        cv2.line(image, (0, int(y0)), (w - 1, int(y1)), (108, 108, 110), int(rng.uniform(5, 10)))
    labels = np.zeros((h, w), np.uint8)
    density = _smooth_field(rng, h, w, 200)
    for _ in range(h * w // 900):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        if density[int(cy), int(cx)] < rng.uniform(-1.0, 1.5):
            continue
        bh, bw = rng.uniform(8, 30, 2)
        box = cv2.boxPoints(((cx, cy), (bw, bh), rng.uniform(0, 90))).astype(np.int32)
        cv2.fillPoly(image, [box + np.array([3, 3], np.int32)], (45, 45, 48))  # shadow
        roof = np.array(_ROOF_COLOURS[rng.integers(len(_ROOF_COLOURS))], np.float32)
        cv2.fillPoly(image, [box], tuple(float(c) for c in roof * rng.uniform(0.85, 1.1)))
        cv2.fillPoly(labels, [box], 1)
    image = cv2.GaussianBlur(image, (0, 0), 0.6)
    return np.clip(image + 0.5, 0, 255).astype(np.uint8), labels


def _generic(rng: np.random.Generator, h: int, w: int,
             profile: Profile) -> tuple[np.ndarray, np.ndarray]:
    labels = _region_labels(rng, h, w, (1.0,) * profile.num_classes)
    muted = 0.6 * np.asarray(profile.palette, np.float32) + 50.0
    image = muted[labels] + 8.0 * _grain(rng, h, w, 1.0)[:, :, None]
    return np.clip(image + 0.5, 0, 255).astype(np.uint8), labels


def _write_gray_tiff(path: Path, values: np.ndarray) -> Path:
    ok, buf = cv2.imencode(".tif", values)
    if not ok:
        raise IsdnetError(f"OpenCV could not encode {path}")
    return atomic_write_bytes(path, buf.tobytes())


def photo_like(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Seeded HxWx3 uint8 image with photo-like spatial correlation rather than white noise,
    for parity checks and realistic JPEG sizes."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (max(height // 16, 2), max(width // 16, 2), 3))
    image = cv2.resize(coarse.astype(np.float32), (width, height),
                       interpolation=cv2.INTER_CUBIC)
    image = image + rng.normal(0, 12, image.shape)
    return np.clip(image, 0, 255).round().astype(np.uint8)


def synthetic_pair(profile: Profile | str, height: int, width: int,
                   seed: int | Sequence[int] = 0) -> tuple[np.ndarray, np.ndarray]:
    """One seeded (HxWx3 uint8 RGB image, HxW uint8 class map) pair of ``profile``'s kind,
    in memory: what ``generate_sample_set`` writes, for training and calibration loops."""
    profile = get_profile(profile) if isinstance(profile, str) else profile
    if min(height, width) < MIN_SIZE:
        raise IsdnetError(f"sample size {height}x{width} is too small; both sides must be "
                          f">= {MIN_SIZE}")
    rng = np.random.default_rng(seed)
    if profile.name == "deepglobe":
        return _deepglobe(rng, height, width)
    if profile.name == "inria":
        return _inria(rng, height, width)
    return _generic(rng, height, width, profile)


def generate_sample_set(out_dir: str | os.PathLike[str], profile: Profile | str,
                        count: int = 4, size: tuple[int, int] = (512, 512),
                        seed: int = 0) -> list[Path]:
    """Write ``count`` image/mask pairs; returns the written paths (image, mask, image…)."""
    profile = get_profile(profile) if isinstance(profile, str) else profile
    h, w = size
    if min(h, w) < MIN_SIZE:
        raise IsdnetError(f"sample size {h}x{w} is too small; both sides must be >= {MIN_SIZE}")
    if count < 1:
        raise IsdnetError(f"sample count must be at least 1, got {count}")
    images_dir, labels_dir = sample_dirs(out_dir, profile)
    written: list[Path] = []
    for i in range(count):
        image, labels = synthetic_pair(profile, h, w, [seed, i])
        if profile.name == "deepglobe":
            written.append(write_image(images_dir / f"synth{i:03d}_sat.jpg", image, 90))
            written.append(write_image(labels_dir / f"synth{i:03d}_mask.png",
                                       colorize(labels, profile.palette)))
        elif profile.name == "inria":
            written.append(write_image(images_dir / f"synth{i + 1}.tif", image))
            written.append(_write_gray_tiff(labels_dir / f"synth{i + 1}.tif", labels * 255))
        else:
            written.append(write_image(images_dir / f"synth{i:03d}.png", image))
            written.append(write_label_png(labels_dir / f"synth{i:03d}.png", labels,
                                           profile.palette))
    return written
