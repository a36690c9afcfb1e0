"""Pairing images with ground-truth masks, and masks with class ids, per dataset convention.

Naming conventions (folders are not searched recursively; only .jpg/.jpeg/.png/.tif/.tiff
files count, any other file is not an image and is ignored):

- DeepGlobe: ``<id>_sat.jpg`` pairs with ``<id>_mask.png``. Both may sit in one folder (the
  dataset's own layout: pass the same folder twice, or no labels folder), where files
  named ``*_mask.*`` are masks and all others images. Masks are RGB colour images; each
  channel is thresholded at 128 before matching the palette, as the dataset's README asks,
  because some of its masks carry JPEG-like noise around region borders.
- Inria: ``images/<name>.tif`` pairs with ``gt/<name>.tif`` (or ``.png``); masks are
  single-channel with 0/255 (the dataset's values) or 0/1, both read as 0 = background,
  1 = building.
- Any other profile: same-stem pairs (``a.jpg`` with ``a.png``) in two folders; masks hold
  class ids (palette-indexed PNG, or single-channel) or exact palette colours.

The suffixes are only stripped when present, so same-stem pairs work for every profile.
Files without a partner are returned, not dropped, so reports can list them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from ..errors import IsdnetError
from ..profiles import IGNORE_INDEX, Profile
from .headers import DEFAULT_MAX_PIXELS, checked_header
from .images import IMAGE_EXTENSIONS, decode_unchanged, pillow_guard, read_image

_SHOW = 5  # how many offending files/colours/values an error message names


@dataclass(frozen=True)
class Naming:
    image_suffix: str  # stripped from an image's stem to get the pairing key
    label_suffix: str  # stripped from a mask's stem
    example: str


@dataclass(frozen=True)
class Pair:
    key: str
    image: Path
    label: Path


def naming_for(profile: Profile) -> Naming:
    if profile.name == "deepglobe":
        return Naming("_sat", "_mask", "<id>_sat.jpg with <id>_mask.png")
    if profile.name == "inria":
        return Naming("", "", "images/<name>.tif with gt/<name>.tif")
    return Naming("", "", "<name>.jpg with <name>.png in the labels folder")


def mask_suffixes(profile: Profile | None = None) -> tuple[str, ...]:
    """Name endings that mark ground-truth masks: the profile's, or every known one."""
    from ..profiles import PROFILES

    profiles = [profile] if profile is not None else list(PROFILES.values())
    return tuple(sorted({naming_for(p).label_suffix for p in profiles} - {""}))


def split_masks(files: list[Path], profile: Profile | None = None
                ) -> tuple[list[Path], list[Path]]:
    """(images, masks): files named like a dataset's masks (DeepGlobe ``*_mask.png``) are
    ground truth, not images to segment or calibrate on."""
    suffixes = mask_suffixes(profile)
    masks = [f for f in files if suffixes and f.stem.endswith(suffixes)]
    return [f for f in files if f not in masks], masks


def describe_skipped_masks(masks: list[Path]) -> str:
    return (f"skipped {len(masks)} mask file(s) named like ground truth "
            f"({', '.join('*' + s for s in mask_suffixes())}), not images: {_names(masks)}")


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".")
                  and p.suffix.lower() in IMAGE_EXTENSIONS)


def _check_dir(folder: str | os.PathLike[str], what: str) -> Path:
    path = Path(folder)
    if not path.is_dir():
        raise IsdnetError(f"{what} folder {path} does not exist or is not a folder")
    return path


def list_images(images_dir: str | os.PathLike[str]) -> list[Path]:
    """Image files of a folder, sorted; an empty folder is an error."""
    folder = _check_dir(images_dir, "images")
    files = _files(folder)
    if not files:
        raise IsdnetError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {folder}")
    return files


def _key(path: Path, suffix: str) -> str:
    stem = path.stem
    return stem[: -len(suffix)] if suffix and stem.endswith(suffix) else stem


def _by_key(files: list[Path], suffix: str, what: str) -> dict[str, Path]:
    keyed: dict[str, Path] = {}
    for path in files:
        key = _key(path, suffix)
        if key in keyed:
            raise IsdnetError(f"{what} {keyed[key].name} and {path.name} both pair with "
                              f"'{key}'; keep only one of them in {path.parent}")
        keyed[key] = path
    return keyed


def _names(paths: list[Path]) -> str:
    more = f" (+{len(paths) - _SHOW} more)" if len(paths) > _SHOW else ""
    return ", ".join(p.name for p in paths[:_SHOW]) + more


def pair_files(images_dir: str | os.PathLike[str], labels_dir: str | os.PathLike[str] | None,
               profile: Profile) -> tuple[list[Pair], list[Path], list[Path]]:
    """(pairs, unpaired images, unpaired masks), each sorted by name.

    ``labels_dir`` may be None (or equal ``images_dir``) only for DeepGlobe, whose images
    and masks share a folder.
    """
    naming = naming_for(profile)
    images_path = _check_dir(images_dir, "images")
    labels_path = images_path if labels_dir is None else _check_dir(labels_dir, "labels")
    same = images_path.resolve() == labels_path.resolve()
    if same and not naming.label_suffix:
        raise IsdnetError(f"profile {profile.name} needs images and masks in separate folders "
                          f"({naming.example}); pass the masks folder as well")
    files = _files(images_path)
    if same:
        labels = [p for p in files if p.stem.endswith(naming.label_suffix)]
        images = [p for p in files if not p.stem.endswith(naming.label_suffix)]
    else:
        images, labels = files, _files(labels_path)
    if not images:
        raise IsdnetError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {images_path}")
    if not labels:
        raise IsdnetError(f"no masks in {labels_path}; {profile.name} expects {naming.example}")
    image_keys = _by_key(images, naming.image_suffix, "images")
    label_keys = _by_key(labels, naming.label_suffix, "masks")
    pairs = [Pair(k, image_keys[k], label_keys[k]) for k in sorted(image_keys)
             if k in label_keys]
    unpaired_images = sorted(p for k, p in image_keys.items() if k not in label_keys)
    unpaired_labels = sorted(p for k, p in label_keys.items() if k not in image_keys)
    if not pairs:
        raise IsdnetError(
            f"no image in {images_path} has a mask in {labels_path}: {profile.name} expects "
            f"{naming.example}; images: {_names(unpaired_images)}; masks: "
            f"{_names(unpaired_labels)}")
    return pairs, unpaired_images, unpaired_labels


def _is_binary_palette(profile: Profile) -> bool:
    return all(v in (0, 255) for colour in profile.palette for v in colour)


def _value_list(values: np.ndarray, counts: np.ndarray) -> str:
    order = np.argsort(-counts, kind="stable")
    shown = ", ".join(f"{values[i]} ({counts[i]} px)" for i in order[:_SHOW])
    return shown + (f" (+{len(values) - _SHOW} more)" if len(values) > _SHOW else "")


def _ids_from_values(values: np.ndarray, profile: Profile, path: Path) -> np.ndarray:
    counts = np.bincount(values.ravel())
    present = np.flatnonzero(counts)
    if profile.num_classes == 2:
        # Binary datasets (Inria) store building = 255 or = 1; there is no ignore value.
        if set(present.tolist()) <= {0, 1}:
            return values.astype(np.uint8)
        if set(present.tolist()) <= {0, 255}:
            return (values == 255).astype(np.uint8)
        bad = present[~np.isin(present, (0, 1, 255))]
        if bad.size:
            raise IsdnetError(f"mask {path} holds values {_value_list(bad, counts[bad])}; "
                              f"{profile.name} masks hold only 0/255 or 0/1")
        raise IsdnetError(f"mask {path} mixes 1 and 255 as values; {profile.name} masks hold "
                          "only 0/255 or 0/1")
    allowed = (present < profile.num_classes) | (present == IGNORE_INDEX)
    if not allowed.all():
        bad = present[~allowed]
        raise IsdnetError(
            f"mask {path} holds values {_value_list(bad, counts[bad])} that are neither class "
            f"ids 0..{profile.num_classes - 1} nor the ignore index {IGNORE_INDEX}; check the "
            f"profile ({profile.name})")
    return values.astype(np.uint8)


def _ids_from_colours(rgb: np.ndarray, profile: Profile, path: Path) -> np.ndarray:
    if _is_binary_palette(profile):
        rgb = np.where(rgb >= 128, np.uint8(255), np.uint8(0))
    flat = rgb.reshape(-1, 3).astype(np.uint32)
    codes = (flat[:, 0] << 16) | (flat[:, 1] << 8) | flat[:, 2]
    palette = np.asarray(profile.palette, dtype=np.uint32)
    palette_codes = (palette[:, 0] << 16) | (palette[:, 1] << 8) | palette[:, 2]
    order = np.argsort(palette_codes)
    sorted_codes = palette_codes[order]
    pos = np.clip(np.searchsorted(sorted_codes, codes), 0, len(sorted_codes) - 1)
    matched = sorted_codes[pos] == codes
    if not matched.all():
        bad, counts = np.unique(codes[~matched], return_counts=True)
        colours = [f"({c >> 16},{(c >> 8) & 255},{c & 255})" for c in bad.tolist()]
        shown = _value_list(np.array(colours), counts)
        raise IsdnetError(
            f"mask {path} has {len(bad)} colour(s) not in the {profile.name} palette "
            f"({int(counts.sum())} px): {shown}; check the profile or repaint those pixels")
    return order[pos].astype(np.uint8).reshape(rgb.shape[:2])


def load_mask(path: str | os.PathLike[str], profile: Profile,
              max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """HxW uint8 class ids (IGNORE_INDEX = ignore) from a mask in any supported form.

    Palette-indexed PNGs give their indices; single-channel masks give their values (with
    the 0/255 -> 0/1 rule for two-class profiles); colour masks are matched to the
    profile's palette (thresholded at 128 for 0/255 palettes such as DeepGlobe's). A mask
    declaring more than ``max_pixels`` pixels is refused before decoding (0: no limit).
    """
    path = Path(path)
    if checked_header(path, "mask", max_pixels).format == "PNG":
        try:
            with pillow_guard(path, "mask"), Image.open(path) as im:
                if im.mode == "P":
                    return _ids_from_values(np.array(im), profile, path)
        except (OSError, ValueError):
            pass  # not a readable PNG: decode_unchanged below names the problem
    array = decode_unchanged(path, "mask", max_pixels)
    if array.dtype not in (np.uint8, np.uint16):
        raise IsdnetError(f"mask {path} has {array.dtype} pixels; masks must be 8-bit (or "
                          "16-bit single-channel) integers")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        return _ids_from_values(array, profile, path)
    if array.dtype != np.uint8:
        raise IsdnetError(f"mask {path} is a 16-bit colour image; colour masks must be 8-bit")
    code = cv2.COLOR_BGR2RGB if array.shape[2] == 3 else cv2.COLOR_BGRA2RGB
    return _ids_from_colours(cv2.cvtColor(array, code), profile, path)


def check_same_size(image: np.ndarray, mask: np.ndarray, image_path: Path | str,
                    mask_path: Path | str) -> None:
    if image.shape[:2] != mask.shape[:2]:
        raise IsdnetError(
            f"image {image_path} is {image.shape[1]}x{image.shape[0]} but mask {mask_path} is "
            f"{mask.shape[1]}x{mask.shape[0]} (WxH); they must match pixel for pixel")


def load_pair(pair: Pair, profile: Profile, max_pixels: int | None = DEFAULT_MAX_PIXELS
              ) -> tuple[np.ndarray, np.ndarray]:
    """(HxWx3 uint8 RGB image, HxW uint8 class ids), checked to be the same size; both
    files are checked against the pixel budget before either is decoded."""
    checked_header(pair.label, "mask", max_pixels)
    image = read_image(pair.image, max_pixels=max_pixels)
    mask = load_mask(pair.label, profile, max_pixels)
    check_same_size(image, mask, pair.image, pair.label)
    return image, mask


def iter_pairs(pairs: list[Pair], profile: Profile,
               max_pixels: int | None = DEFAULT_MAX_PIXELS
               ) -> Iterator[tuple[Pair, np.ndarray, np.ndarray]]:
    for pair in pairs:
        image, mask = load_pair(pair, profile, max_pixels)
        yield pair, image, mask
