"""Reading aerial images and writing label maps, with one policy for odd inputs.

Decoding uses OpenCV, like mmsegmentation's reference pipeline, so pixels match what the
PyTorch model was evaluated on. Input policy for ``read_image`` (every image becomes
HxWx3 uint8 RGB):

- grayscale (1 band, or gray+alpha) is replicated to three equal RGB channels;
- 4 bands: a PNG's or a TIFF's *alpha* band (TIFF ExtraSamples = alpha) is dropped; any
  other 4-band TIFF (typically RGB+NIR, whose band order varies by sensor) is rejected,
  because guessing which three bands are RGB silently ruins accuracy;
- 16-bit and floating-point images are rejected, not rescaled: the right scaling of
  16-bit sensor data (bit depth used, percentile stretch…) is data-specific and the model
  was trained on 8-bit RGB;
- JPEG EXIF orientation is ignored (aerial tiles are stored north-up; OpenCV's
  IMREAD_UNCHANGED does not rotate either);
- multi-page TIFFs: the first page is read.

Every output file is written atomically (temporary file in the same folder, then
``os.replace``) so an interrupted run never leaves a half-written file behind.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from ..errors import IsdnetError, missing
from ..fileio import atomic_output, atomic_write_bytes
from ..profiles import IGNORE_INDEX

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
# Colour given to IGNORE_INDEX in written palettes, so ignored pixels stand out from
# class colours such as DeepGlobe's black 'unknown'.
IGNORE_COLOUR = (128, 128, 128)
_TIFF_EXTRASAMPLES = 338
_TIFF_ALPHA = (1, 2)  # associated / unassociated alpha

Palette = Sequence[Sequence[int]]
log = logging.getLogger(__name__)


def _read_bytes(path: Path, what: str) -> np.ndarray:
    if not path.is_file():
        raise IsdnetError(f"{what} {path} does not exist or is not a file")
    try:
        return np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise IsdnetError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def decode_unchanged(path: str | os.PathLike[str], what: str = "image") -> np.ndarray:
    """Decode with OpenCV keeping bit depth and band count (BGR order for colour)."""
    path = Path(path)
    buf = _read_bytes(path, what)
    level = cv2.utils.logging.getLogLevel()
    # OpenCV logs decoder warnings to stderr; our error message below says it all.
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    try:
        array = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if buf.size else None
    except cv2.error:
        array = None
    finally:
        cv2.utils.logging.setLogLevel(level)
    if array is None:
        raise IsdnetError(f"cannot decode {what} {path}: the file is empty, corrupt or not a "
                          "JPEG/PNG/TIFF image; re-export it as 8-bit RGB JPEG, PNG or TIFF")
    return array


def _depth_name(dtype: np.dtype) -> str:
    if np.issubdtype(dtype, np.floating):
        return f"{dtype.itemsize * 8}-bit floating point"
    return f"{dtype.itemsize * 8}-bit"


def _tiff_band4_is_alpha(path: Path) -> bool:
    try:
        with Image.open(path) as im:
            extra = im.tag_v2.get(_TIFF_EXTRASAMPLES) if hasattr(im, "tag_v2") else None
    except (OSError, ValueError):
        return False
    if extra is None:
        return False
    values = extra if isinstance(extra, tuple) else (extra,)
    return bool(values) and values[0] in _TIFF_ALPHA


def read_image(path: str | os.PathLike[str], conversions: list[str] | None = None
               ) -> np.ndarray:
    """Read a JPEG/PNG/TIFF as HxWx3 uint8 RGB following the module's input policy.

    Conversions are never silent: each one appends '<file>: what was done' to
    ``conversions`` when given, else it is logged as a warning.
    """
    path = Path(path)
    array = decode_unchanged(path)

    def converted(what: str) -> None:
        line = f"{path.name}: {what}"
        if conversions is None:
            log.warning("converted %s", line)
        else:
            conversions.append(line)

    if array.dtype != np.uint8:
        raise IsdnetError(
            f"image {path} is {_depth_name(array.dtype)} per band; the model takes 8-bit RGB: "
            "convert it first, e.g. gdal_translate -ot Byte -scale in.tif out.tif "
            "(choose the scaling that suits your sensor)")
    if array.ndim == 2 or array.shape[2] == 1:
        converted("grayscale, replicated to three RGB channels")
        return np.repeat(array.reshape(*array.shape[:2], 1), 3, axis=2)
    bands = array.shape[2]
    if bands == 3:
        return cv2.cvtColor(array, cv2.COLOR_BGR2RGB)
    if bands == 4:
        with open(path, "rb") as fh:
            is_png = fh.read(8) == b"\x89PNG\r\n\x1a\n"
        if is_png:
            converted("RGBA, alpha dropped")
            return cv2.cvtColor(array, cv2.COLOR_BGRA2RGB)
        if _tiff_band4_is_alpha(path):
            converted("RGB+alpha TIFF, alpha dropped")
            # OpenCV's TIFF reader premultiplies colour by alpha; Pillow keeps stored values.
            with Image.open(path) as im:
                return np.ascontiguousarray(np.asarray(im)[:, :, :3])
        raise IsdnetError(
            f"image {path} has 4 bands that are not RGB+alpha (e.g. RGB+NIR); the model takes "
            "3-band RGB: write an RGB copy, e.g. gdal_translate -b 1 -b 2 -b 3 in.tif out.tif")
    raise IsdnetError(f"image {path} has {bands} bands; the model takes 3-band RGB: write an "
                      "RGB copy, e.g. gdal_translate -b 1 -b 2 -b 3 in.tif out.tif")


def write_image(path: str | os.PathLike[str], rgb: np.ndarray, jpeg_quality: int = 95) -> Path:
    """Write an HxWx3 uint8 RGB image; the format follows the extension."""
    path = Path(path)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise IsdnetError(f"cannot write {path}: expected HxWx3 uint8 RGB, "
                          f"got {rgb.dtype} array of shape {rgb.shape}")
    ext = path.suffix.lower()
    if ext not in IMAGE_EXTENSIONS:
        raise IsdnetError(f"cannot write {path}: use one of {', '.join(IMAGE_EXTENSIONS)}")
    params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if ext in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise IsdnetError(f"OpenCV could not encode {path}")
    return atomic_write_bytes(path, buf.tobytes())


def palette_lut(palette: Palette) -> np.ndarray:
    """A 256x3 uint8 lookup table: class id -> colour; IGNORE_INDEX -> IGNORE_COLOUR."""
    if len(palette) > 256:
        raise IsdnetError(f"a palette holds at most 256 colours, got {len(palette)}")
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[: len(palette)] = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    if len(palette) <= IGNORE_INDEX:
        lut[IGNORE_INDEX] = IGNORE_COLOUR
    return lut


def _check_labels(labels: np.ndarray, what: str) -> np.ndarray:
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise IsdnetError(f"{what}: labels must be an HxW integer array, "
                          f"got {labels.dtype} of shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise IsdnetError(f"{what}: label values must be 0..255, "
                          f"got {labels.min()}..{labels.max()}")
    return labels.astype(np.uint8, copy=False)


def colorize(labels: np.ndarray, palette: Palette) -> np.ndarray:
    """HxW class ids -> HxWx3 uint8 RGB using the palette."""
    return palette_lut(palette)[_check_labels(labels, "colorize")]


def write_label_png(path: str | os.PathLike[str], labels: np.ndarray,
                    palette: Palette) -> Path:
    """Save class ids as a palette-indexed PNG: pixel values are the ids, viewers show colours.

    Index IGNORE_INDEX (255) gets IGNORE_COLOUR unless the palette itself is that long.
    """
    path = Path(path)
    labels = _check_labels(labels, f"label map for {path}")
    image = Image.fromarray(np.ascontiguousarray(labels))
    image.putpalette(palette_lut(palette).tobytes(), rawmode="RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return atomic_write_bytes(path, buffer.getvalue())


def read_label_png(path: str | os.PathLike[str]) -> np.ndarray:
    """Class ids from a palette-indexed ('P') or single-channel label image (PNG or TIFF).

    Colour masks are rejected here; ``datasets.load_mask`` maps colours with a profile.
    """
    path = Path(path)
    _read_bytes(path, "label image")
    try:
        with Image.open(path) as im:
            mode = im.mode
            if mode in ("P", "L"):
                return np.array(im, dtype=np.uint8)
            if mode == "1":
                return np.array(im, dtype=np.uint8)
            if mode in ("RGB", "RGBA"):
                raise IsdnetError(
                    f"label image {path} is an RGB colour mask; load it with a dataset "
                    "profile (isdnet_deploy.data.datasets.load_mask) to map colours to classes")
            values = np.array(im)
    except (OSError, ValueError):
        values = decode_unchanged(path, "label image")
    if values.ndim != 2:
        raise IsdnetError(f"label image {path} has {values.shape[2]} channels; expected a "
                          "palette-indexed or single-channel image of class ids")
    if not np.issubdtype(values.dtype, np.integer):
        raise IsdnetError(f"label image {path} holds {values.dtype} values; class ids must be "
                          "integers 0..255")
    if values.size and (values.min() < 0 or values.max() > 255):
        raise IsdnetError(f"label image {path} holds values {values.min()}..{values.max()}; "
                          "class ids must be 0..255")
    return values.astype(np.uint8)


def read_palette(path: str | os.PathLike[str]) -> list[tuple[int, int, int]] | None:
    """The palette embedded in a 'P' mode PNG (256 entries), or None if it has none."""
    with Image.open(path) as im:
        if im.mode != "P":
            return None
        flat = im.getpalette("RGB") or []
    return [(flat[i], flat[i + 1], flat[i + 2]) for i in range(0, len(flat), 3)]


def overlay(image_rgb: np.ndarray, labels: np.ndarray, palette: Palette,
            alpha: float = 0.5) -> np.ndarray:
    """Blend class colours over the image; IGNORE_INDEX pixels keep the plain image."""
    labels = _check_labels(labels, "overlay")
    if image_rgb.shape[:2] != labels.shape:
        raise IsdnetError(f"overlay: image is {image_rgb.shape[1]}x{image_rgb.shape[0]} but "
                          f"labels are {labels.shape[1]}x{labels.shape[0]} (WxH)")
    if not 0.0 <= alpha <= 1.0:
        raise IsdnetError(f"overlay alpha must be within 0..1, got {alpha}")
    colours = palette_lut(palette)[labels].astype(np.float32)
    base = image_rgb.astype(np.float32)
    blended = (1.0 - alpha) * base + alpha * colours
    blended[labels == IGNORE_INDEX] = base[labels == IGNORE_INDEX]
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)


def _rasterio() -> Any:
    try:
        import rasterio
    except ImportError:
        raise missing("rasterio", "geo", why="needed for GeoTIFF georeferencing") from None
    return rasterio


def read_geotiff(path: str | os.PathLike[str]) -> tuple[np.ndarray, dict[str, Any]]:
    """HxWx3 uint8 RGB plus the georeference (``crs``, ``transform``) of a GeoTIFF.

    Same band policy as ``read_image``: 1 band -> gray RGB, a 4th band only dropped when
    GDAL marks it as alpha.
    """
    rasterio = _rasterio()
    path = Path(path)
    _read_bytes(path, "GeoTIFF")
    try:
        with rasterio.open(path) as src:
            dtypes = set(src.dtypes)
            count = src.count
            interp = [c.name for c in src.colorinterp]
            georef = {"crs": src.crs, "transform": src.transform,
                      "width": src.width, "height": src.height}
            if dtypes != {"uint8"}:
                raise IsdnetError(
                    f"GeoTIFF {path} is {'/'.join(sorted(dtypes))}; the model takes 8-bit RGB: "
                    "convert it first, e.g. gdal_translate -ot Byte -scale in.tif out.tif")
            if (count == 4 and interp[3] == "alpha") or count in (1, 3):
                bands = src.read(indexes=list(range(1, min(count, 3) + 1)))
            else:
                raise IsdnetError(
                    f"GeoTIFF {path} has {count} bands ({', '.join(interp)}); the model takes "
                    "3-band RGB: write an RGB copy, e.g. gdal_translate -b 1 -b 2 -b 3")
    except rasterio.errors.RasterioIOError as exc:
        raise IsdnetError(f"cannot read GeoTIFF {path}: {exc}") from None
    rgb = np.transpose(bands, (1, 2, 0))
    if rgb.shape[2] == 1:
        rgb = np.repeat(rgb, 3, axis=2)
    return np.ascontiguousarray(rgb), georef


def write_geotiff_labels(path: str | os.PathLike[str], labels: np.ndarray,
                         like: str | os.PathLike[str] | dict[str, Any],
                         palette: Palette | None = None) -> Path:
    """Write class ids as a 1-band uint8 GeoTIFF with the georeference of ``like``.

    ``like`` is the input GeoTIFF's path or the dict ``read_geotiff`` returned; the palette,
    when given, is embedded as the band's colour table.
    """
    rasterio = _rasterio()
    path = Path(path)
    labels = _check_labels(labels, f"label map for {path}")
    if isinstance(like, dict):
        georef = like
    else:
        with rasterio.open(like) as src:
            georef = {"crs": src.crs, "transform": src.transform,
                      "width": src.width, "height": src.height}
    if (georef["height"], georef["width"]) != labels.shape:
        raise IsdnetError(
            f"labels for {path} are {labels.shape[1]}x{labels.shape[0]} but the georeferenced "
            f"input is {georef['width']}x{georef['height']} (WxH); resize labels back first")
    with atomic_output(path) as tmp, rasterio.open(
            tmp, "w", driver="GTiff", height=labels.shape[0], width=labels.shape[1], count=1,
            dtype="uint8", crs=georef["crs"], transform=georef["transform"],
            compress="deflate") as dst:
        dst.write(labels, 1)
        if palette is not None:
            lut = palette_lut(palette)
            dst.write_colormap(1, {i: (*map(int, lut[i]), 255) for i in range(256)})
    return path
