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

Every reader checks the size a file declares against a pixel budget (``max_pixels``,
default ``headers.DEFAULT_MAX_PIXELS``; 0 = no limit) before decoding anything, so a tiny
file declaring a gigapixel image is refused in one line instead of exhausting memory.
GeoTIFFs can also be read window by window (``open_geotiff``) and labels written window by
window (``GeoTiffLabelWriter``), which is how ``infer`` streams images above the budget.

Every output file is written atomically (temporary file in the same folder, then
``os.replace``) so an interrupted run never leaves a half-written file behind.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from ..errors import IsdnetError, missing, one_line
from ..fileio import atomic_output, atomic_write_bytes
from ..profiles import IGNORE_INDEX
from .headers import (
    DEFAULT_MAX_PIXELS,
    MAX_BANDS,
    ImageHeader,
    checked_header,
    megapixels,
    over_budget,
    undecodable,
)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
MIB = 1 << 20
# Beyond the pixels it declares, a file may hold metadata (EXIF, ICC profiles, GeoTIFF
# tags); more than this on top of an uncompressed image of its size is not an image file.
_SLACK_BYTES = 64 * MIB
# GDAL's block cache, per process, while GeoTIFFs are read or written window by window: its
# default is 5% of the machine's memory, which would make memory grow with the image.
GDAL_CACHE_MIB = 64
MAX_LABEL_CLASSES = 65536  # the most a 16-bit label map holds (see label_dtype)
# Colour given to IGNORE_INDEX in written palettes, so ignored pixels stand out from
# class colours such as DeepGlobe's black 'unknown'.
IGNORE_COLOUR = (128, 128, 128)
_TIFF_EXTRASAMPLES = 338
_TIFF_ALPHA = (1, 2)  # associated / unassociated alpha

Palette = Sequence[Sequence[int]]
log = logging.getLogger(__name__)


def _read_bytes(path: Path, what: str, header: ImageHeader, max_pixels: int | None
                ) -> np.ndarray:
    """The file's bytes, refused first when there are far more of them than an image of
    the declared size can need (reading a file is itself an allocation)."""
    size = path.stat().st_size
    most = header.decode_pixels * MAX_BANDS * 8 + _SLACK_BYTES
    if max_pixels and size > most:
        raise IsdnetError(f"{what} {path} is a {size / MIB:.0f} MiB file for a "
                          f"{header.width}x{header.height} (WxH) image, more than any image "
                          "of that size needs; it is not a plain image file")
    try:
        return np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise IsdnetError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


@contextlib.contextmanager
def pillow_guard(path: Path, what: str) -> Iterator[None]:
    """Pillow's own decompression-bomb check, as one line (the budget was checked before:
    Pillow's fixed limit of about 179 MP can only bite when the budget was raised)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    except Image.DecompressionBombError as exc:
        raise IsdnetError(f"{what} {path} is too large for Pillow, which reads it ("
                          f"{one_line(exc)}); convert it to a GeoTIFF or a JPEG") from exc


def decode_unchanged(path: str | os.PathLike[str], what: str = "image",
                     max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode with OpenCV keeping bit depth and band count (BGR order for colour), after
    checking the declared size against ``max_pixels`` (0 or None: no limit)."""
    return _decode(Path(path), what, max_pixels)[1]


def _decode(path: Path, what: str, max_pixels: int | None) -> tuple[ImageHeader, np.ndarray]:
    header = checked_header(path, what, max_pixels)
    buf = _read_bytes(path, what, header, max_pixels)
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
        raise undecodable(path, what)
    return header, array


def _depth_name(dtype: np.dtype) -> str:
    if np.issubdtype(dtype, np.floating):
        return f"{dtype.itemsize * 8}-bit floating point"
    return f"{dtype.itemsize * 8}-bit"


def _tiff_band4_is_alpha(header: ImageHeader) -> bool:
    return header.format == "TIFF" and header.tags.get(_TIFF_EXTRASAMPLES) in _TIFF_ALPHA


def read_image(path: str | os.PathLike[str], conversions: list[str] | None = None,
               max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read a JPEG/PNG/TIFF as HxWx3 uint8 RGB following the module's input policy.

    Conversions are never silent: each one appends '<file>: what was done' to
    ``conversions`` when given, else it is logged as a warning. A file declaring more
    than ``max_pixels`` pixels is refused before decoding (0 or None: no limit).
    """
    path = Path(path)
    header, array = _decode(path, "image", max_pixels)

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
        if header.format == "PNG":
            converted("RGBA, alpha dropped")
            return cv2.cvtColor(array, cv2.COLOR_BGRA2RGB)
        if _tiff_band4_is_alpha(header):
            converted("RGB+alpha TIFF, alpha dropped")
            # OpenCV's TIFF reader premultiplies colour by alpha; Pillow keeps stored values.
            with pillow_guard(path, "image"), Image.open(path) as im:
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
    """A lookup table class id -> RGB colour, 256 rows (or one per class when the palette
    is longer, up to ``MAX_LABEL_CLASSES``); IGNORE_INDEX -> IGNORE_COLOUR unless the palette
    itself reaches it."""
    if len(palette) > MAX_LABEL_CLASSES:
        raise IsdnetError(f"a palette holds at most {MAX_LABEL_CLASSES} colours, got "
                          f"{len(palette)}")
    lut = np.zeros((max(256, len(palette)), 3), dtype=np.uint8)
    lut[: len(palette)] = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    if len(palette) <= IGNORE_INDEX:
        lut[IGNORE_INDEX] = IGNORE_COLOUR
    return lut


def label_dtype(num_classes: int) -> np.dtype:
    """The palette rule: label maps are 8-bit and palette-indexed for up to 256 classes
    (ids 0..255, one colour each; 255 doubles as the ignore index of masks); artifacts with
    more classes (int32 labels) get 16-bit label maps without a palette, up to 65536."""
    return np.dtype(np.uint8 if num_classes <= 256 else np.uint16)


def _check_labels(labels: np.ndarray, what: str, dtype: Any = np.uint8) -> np.ndarray:
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise IsdnetError(f"{what}: labels must be an HxW integer array, "
                          f"got {labels.dtype} of shape {labels.shape}")
    top = np.iinfo(dtype).max
    if labels.size and (labels.min() < 0 or labels.max() > top):
        raise IsdnetError(f"{what}: label values must be 0..{top}, "
                          f"got {labels.min()}..{labels.max()}")
    return labels.astype(dtype, copy=False)


def colorize(labels: np.ndarray, palette: Palette) -> np.ndarray:
    """HxW class ids -> HxWx3 uint8 RGB using the palette."""
    return palette_lut(palette)[_check_labels(labels, "colorize", label_dtype(len(palette)))]


def encode_label_png(labels: np.ndarray, palette: Palette, what: str = "label map") -> bytes:
    """Class ids as palette-indexed PNG bytes: pixel values are the ids, viewers show colours.

    Index IGNORE_INDEX (255) gets IGNORE_COLOUR unless the palette itself is that long. A
    palette of more than 256 classes gives a 16-bit grayscale PNG of ids instead (see
    ``label_dtype``). ``infer``'s files and ``serve``'s answers are these bytes.
    """
    dtype = label_dtype(len(palette))
    labels = np.ascontiguousarray(_check_labels(labels, what, dtype))
    if dtype != np.uint8:
        ok, encoded = cv2.imencode(".png", labels)
        if not ok:
            raise IsdnetError(f"OpenCV could not encode the {what}")
        return encoded.tobytes()
    image = Image.fromarray(labels)
    image.putpalette(palette_lut(palette).tobytes(), rawmode="RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def write_label_png(path: str | os.PathLike[str], labels: np.ndarray,
                    palette: Palette) -> Path:
    """Save class ids as a palette-indexed PNG (``encode_label_png``), atomically."""
    path = Path(path)
    return atomic_write_bytes(path, encode_label_png(labels, palette, f"label map for {path}"))


def read_label_png(path: str | os.PathLike[str],
                   max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Class ids from a palette-indexed ('P') or single-channel label image (PNG or TIFF).

    Colour masks are rejected here; ``datasets.load_mask`` maps colours with a profile.
    """
    path = Path(path)
    checked_header(path, "label image", max_pixels)
    try:
        with pillow_guard(path, "label image"), Image.open(path) as im:
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
        values = decode_unchanged(path, "label image", max_pixels)
    if values.ndim != 2:
        raise IsdnetError(f"label image {path} has {values.shape[2]} channels; expected a "
                          "palette-indexed or single-channel image of class ids")
    if not np.issubdtype(values.dtype, np.integer):
        raise IsdnetError(f"label image {path} holds {values.dtype} values; class ids must be "
                          "integers 0..255")
    if values.dtype == np.uint16 and values.size and values.max() > 255:
        return values  # the 16-bit label map of an artifact with more than 256 classes
    if values.size and (values.min() < 0 or values.max() > 255):
        raise IsdnetError(f"label image {path} holds values {values.min()}..{values.max()}; "
                          "class ids must be 0..255")
    return values.astype(np.uint8)


def read_palette(path: str | os.PathLike[str]) -> list[tuple[int, int, int]] | None:
    """The palette embedded in a 'P' mode PNG (256 entries), or None if it has none."""
    with pillow_guard(Path(path), "label image"), Image.open(path) as im:
        if im.mode != "P":
            return None
        flat = im.getpalette("RGB") or []
    return [(flat[i], flat[i + 1], flat[i + 2]) for i in range(0, len(flat), 3)]


def overlay(image_rgb: np.ndarray, labels: np.ndarray, palette: Palette,
            alpha: float = 0.5) -> np.ndarray:
    """Blend class colours over the image; IGNORE_INDEX pixels keep the plain image."""
    labels = _check_labels(labels, "overlay", label_dtype(len(palette)))
    if image_rgb.shape[:2] != labels.shape:
        raise IsdnetError(f"overlay: image is {image_rgb.shape[1]}x{image_rgb.shape[0]} but "
                          f"labels are {labels.shape[1]}x{labels.shape[0]} (WxH)")
    if not 0.0 <= alpha <= 1.0:
        raise IsdnetError(f"overlay alpha must be within 0..1, got {alpha}")
    colours = palette_lut(palette)[labels].astype(np.float32)
    base = image_rgb.astype(np.float32)
    blended = (1.0 - alpha) * base + alpha * colours
    if len(palette) <= IGNORE_INDEX:
        blended[labels == IGNORE_INDEX] = base[labels == IGNORE_INDEX]
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)


def _rasterio() -> Any:
    try:
        import rasterio
    except ImportError:
        raise missing("rasterio", "geo", why="needed for GeoTIFF georeferencing") from None
    return rasterio


@contextlib.contextmanager
def _gdal(path: Path, what: str) -> Iterator[Any]:
    """rasterio with GDAL's block cache bounded, and GDAL's errors as one line (a plain
    TIFF, without georeference, is read and written as such, without a warning)."""
    rasterio = _rasterio()
    try:
        with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MIB), warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            yield rasterio
    except rasterio.errors.RasterioError as exc:
        raise IsdnetError(f"cannot read {what} {path}: {one_line(exc)}") from exc


class GeoTiff:
    """An open GeoTIFF, read window by window as HxWx3 uint8 RGB.

    Same band policy as ``read_image``: 1 band -> gray RGB, a 4th band only dropped when
    GDAL marks it as alpha; 8-bit only.
    """

    def __init__(self, dataset: Any, path: Path) -> None:
        self.dataset, self.path = dataset, path
        dtypes, count = set(dataset.dtypes), dataset.count
        interp = [c.name for c in dataset.colorinterp]
        if dtypes != {"uint8"}:
            raise IsdnetError(
                f"GeoTIFF {path} is {'/'.join(sorted(dtypes))}; the model takes 8-bit RGB: "
                "convert it first, e.g. gdal_translate -ot Byte -scale in.tif out.tif")
        if not ((count == 4 and interp[3] == "alpha") or count in (1, 3)):
            raise IsdnetError(
                f"GeoTIFF {path} has {count} bands ({', '.join(interp)}); the model takes "
                "3-band RGB: write an RGB copy, e.g. gdal_translate -b 1 -b 2 -b 3")
        self.bands = list(range(1, min(count, 3) + 1))
        self.height, self.width = dataset.height, dataset.width
        self.georef = {"crs": dataset.crs, "transform": dataset.transform,
                       "width": dataset.width, "height": dataset.height}

    @property
    def block(self) -> tuple[int, int]:
        """(height, width) of the blocks GDAL decodes: a window costs whole blocks."""
        return tuple(self.dataset.block_shapes[0])

    def read(self, top: int, left: int, bottom: int, right: int) -> np.ndarray:
        from rasterio.windows import Window

        window = Window(left, top, right - left, bottom - top)
        bands = self.dataset.read(indexes=self.bands, window=window)
        rgb = np.transpose(bands, (1, 2, 0))
        if rgb.shape[2] == 1:
            rgb = np.repeat(rgb, 3, axis=2)
        return np.ascontiguousarray(rgb)


@contextlib.contextmanager
def open_geotiff(path: str | os.PathLike[str], max_block_pixels: int | None = None
                 ) -> Iterator[GeoTiff]:
    """A GeoTIFF opened for windowed reading; nothing is decoded yet. ``max_block_pixels``
    refuses files whose blocks (a single strip, typically) are larger: GDAL decodes whole
    blocks, so such a file cannot be read in bounded memory."""
    path = Path(path)
    _rasterio()  # a missing extra is named first
    checked_header(path, "GeoTIFF", None)
    with _gdal(path, "GeoTIFF") as rasterio, rasterio.open(path) as dataset:
        geotiff = GeoTiff(dataset, path)
        bh, bw = geotiff.block
        if max_block_pixels and bh * bw > max_block_pixels:
            raise over_budget(
                f"GeoTIFF {path} stores its pixels in blocks of {bw}x{bh} (WxH, "
                f"{megapixels(bh * bw)}), and a window costs whole blocks",
                max_block_pixels, "; rewrite it tiled: gdal_translate -co TILED=YES in.tif out.tif")
        yield geotiff


def read_geotiff(path: str | os.PathLike[str], max_pixels: int | None = DEFAULT_MAX_PIXELS
                 ) -> tuple[np.ndarray, dict[str, Any]]:
    """HxWx3 uint8 RGB plus the georeference (``crs``, ``transform``) of a GeoTIFF, read
    whole; above ``max_pixels`` (0 or None: no limit) it is refused before reading."""
    path = Path(path)
    _rasterio()  # a missing extra is named first
    checked_header(path, "GeoTIFF", max_pixels)
    with open_geotiff(path) as geotiff:
        if max_pixels and geotiff.height * geotiff.width > max_pixels:
            raise over_budget(f"GeoTIFF {path} is {geotiff.width}x{geotiff.height} pixels "
                              f"(WxH, {megapixels(geotiff.height * geotiff.width)})",
                              max_pixels)
        return geotiff.read(0, 0, geotiff.height, geotiff.width), geotiff.georef


def _georef(like: str | os.PathLike[str] | dict[str, Any]) -> dict[str, Any]:
    if isinstance(like, dict):
        return like
    with open_geotiff(like) as geotiff:
        return geotiff.georef


@contextlib.contextmanager
def geotiff_label_writer(path: str | os.PathLike[str], like: str | os.PathLike[str] |
                         dict[str, Any], palette: Palette | None = None
                         ) -> Iterator[Any]:
    """Yield ``write(labels, top, left)``, which writes a window of class ids into a tiled,
    deflate-compressed 1-band GeoTIFF with the georeference of ``like`` (the input GeoTIFF's
    path or ``GeoTiff.georef``). The file appears, atomically, once the block succeeds.

    Labels are 8-bit with the palette as colour table, or 16-bit for palettes of more than
    256 classes (``label_dtype``).
    """
    path = Path(path)
    georef = _georef(like)
    dtype = label_dtype(len(palette) if palette is not None else 0)
    height, width = georef["height"], georef["width"]

    def write(labels: np.ndarray, top: int, left: int) -> None:
        from rasterio.windows import Window

        labels = _check_labels(labels, f"label map for {path}", dtype)
        if top + labels.shape[0] > height or left + labels.shape[1] > width:
            raise IsdnetError(
                f"labels for {path} are {labels.shape[1]}x{labels.shape[0]} at ({left}, {top})"
                f" but the georeferenced input is {width}x{height} (WxH); resize labels back "
                "first")
        dst.write(labels, 1, window=Window(left, top, labels.shape[1], labels.shape[0]))

    with _gdal(path, "GeoTIFF") as rasterio, atomic_output(path) as tmp, rasterio.open(
            tmp, "w", driver="GTiff", height=height, width=width, count=1, dtype=dtype.name,
            crs=georef["crs"], transform=georef["transform"], compress="deflate", tiled=True,
            blockxsize=256, blockysize=256, BIGTIFF="IF_SAFER") as dst:
        if palette is not None and dtype == np.uint8:
            lut = palette_lut(palette)
            dst.write_colormap(1, {i: (*map(int, lut[i]), 255) for i in range(256)})
        yield write


def write_geotiff_labels(path: str | os.PathLike[str], labels: np.ndarray,
                         like: str | os.PathLike[str] | dict[str, Any],
                         palette: Palette | None = None) -> Path:
    """Write class ids as a 1-band GeoTIFF with the georeference of ``like`` (the input
    GeoTIFF's path or the dict ``read_geotiff`` returned); the palette, when given, is
    embedded as the band's colour table."""
    georef = _georef(like)
    if (georef["height"], georef["width"]) != labels.shape:
        raise IsdnetError(
            f"labels for {path} are {labels.shape[1]}x{labels.shape[0]} but the georeferenced "
            f"input is {georef['width']}x{georef['height']} (WxH); resize labels back first")
    with geotiff_label_writer(path, georef, palette) as write:
        write(labels, 0, 0)
    return Path(path)
