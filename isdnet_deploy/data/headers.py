"""Image sizes read from file headers, before anything is decoded, and the pixel budget.

A decoder allocates what a header declares: a valid 629-byte JPEG can declare 32000x32000
pixels and make OpenCV ask for gigabytes, and deflate-compressed PNGs and TIFFs of a few
kilobytes do the same. Every reader in ``data`` therefore reads the declared size first
(PNG's IHDR, JPEG's frame header, the first TIFF directory, the BMP and WebP headers: a
few bytes, found by seeking) and checks it against a pixel budget; a file in any other
format is refused, because OpenCV would otherwise choose a decoder from its content.

A decode costs 3–4 bytes per pixel for the 8-bit images the model takes (up to 8 bands
times 8 bytes for the high-depth files that are decoded only to be refused by name), and
inference on the decoded image costs far more; the budget is in pixels so that a user can
relate it to image sizes.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from ..errors import IsdnetError

# The default budget, 64 million pixels (8000x8000), is 2.56 times the largest image of the
# datasets ISDNet was evaluated on (Inria Aerial, 5000x5000 = 25 MP; DeepGlobe 2448x2448 =
# 6 MP, Cityscapes 2 MP) and still within an ordinary workstation's memory for the whole
# pipeline: measured with `isdnet-deploy infer` on the ONNX Runtime fp32 artifact (fresh
# process, peak resident memory), a 5000x5000 image peaks at 3.6 GiB and an 8000x8000 one
# at 8.6 GiB (the network sees 0.8x, as the profiles' test scale asks; the forward alone is
# ~2 GiB at 4000x4000, README). Above the budget, GeoTIFFs are streamed tile by tile in
# bounded memory by `infer`; other formats must be converted (or the budget raised).
DEFAULT_MAX_PIXELS = 64_000_000
MAX_BANDS = 4  # gray, gray+alpha, RGB, RGB+alpha: anything wider is refused by name
FORMATS = "JPEG/PNG/TIFF"
_MAX_TIFF_TAGS = 4096  # real files hold a few dozen; bounds the directory read
_MAX_JPEG_MARKERS = 100_000
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_PNG_BANDS = {0: 1, 2: 3, 3: 4, 4: 2, 6: 4}  # colour type -> bands (palette: RGB or RGBA)


@dataclass(frozen=True)
class ImageHeader:
    """What a file declares, before decoding: format, size, bands and, for TIFF, the
    tile size and the tags of the first directory."""

    format: str  # JPEG, PNG, TIFF, BMP, WebP
    width: int
    height: int
    bands: int | None = None
    tile: tuple[int, int] | None = None  # (height, width) of a tiled TIFF's tiles
    # TIFF: every tag of the first directory, with its first value where that is an
    # integer stored in the entry itself (None otherwise)
    tags: Mapping[int, int | None] = field(default_factory=dict)

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def decode_pixels(self) -> int:
        """Pixels a decoder holds at once: the image, or one TIFF tile when that is larger
        (a tiny image can declare a huge tile, and decoders allocate whole tiles)."""
        tile = self.tile[0] * self.tile[1] if self.tile else 0
        return max(self.pixels, tile)

    @property
    def windowed(self) -> bool:
        """Whether the format can be read window by window (TIFF, through GDAL)."""
        return self.format == "TIFF"


class _Unreadable(Exception):
    """A header that cannot be parsed; turned into one IsdnetError naming the file."""


def _unpack(fmt: str, data: bytes) -> tuple[int, ...]:
    if len(data) < struct.calcsize(fmt):
        raise _Unreadable("the file ends inside its header")
    return struct.unpack(fmt, data[:struct.calcsize(fmt)])


def _png(f: BinaryIO) -> ImageHeader:
    f.seek(8)
    length, kind, width, height, _depth, colour = _unpack(">I4sIIBB", f.read(18))
    if kind != b"IHDR" or length != 13:
        raise _Unreadable("its first chunk is not IHDR")
    return ImageHeader("PNG", width, height, _PNG_BANDS.get(colour))


def _jpeg(f: BinaryIO) -> ImageHeader:
    f.seek(2)
    for _ in range(_MAX_JPEG_MARKERS):
        byte = f.read(1)
        if not byte:
            break
        if byte != b"\xff":
            continue  # entropy-coded data or padding between segments
        marker = f.read(1)
        while marker == b"\xff":
            marker = f.read(1)
        if not marker:
            break
        code = marker[0]
        if code in (0xD8, 0x01) or 0xD0 <= code <= 0xD7 or code == 0x00:
            continue  # markers without a length
        if code in (0xD9, 0xDA):
            raise _Unreadable("no frame header before the image data")
        (length,) = _unpack(">H", f.read(2))
        if code in _JPEG_SOF:
            _precision, height, width, bands = _unpack(">BHHB", f.read(6))
            return ImageHeader("JPEG", width, height, bands)
        if length < 2:
            raise _Unreadable("a segment has an invalid length")
        f.seek(length - 2, os.SEEK_CUR)
    raise _Unreadable("no frame header found")


def _tiff(f: BinaryIO, head: bytes) -> ImageHeader:
    order = "<" if head[:2] == b"II" else ">"
    (version,) = _unpack(order + "H", head[2:4])
    if version == 42:
        (offset,) = _unpack(order + "I", head[4:8])
        count_fmt, entry_size, value_fmt = "H", 12, "I"
    else:  # BigTIFF
        (offset,) = _unpack(order + "Q", head[8:16])
        count_fmt, entry_size, value_fmt = "Q", 20, "Q"
    if offset >= 1 << 62:  # beyond any file; seek() would raise ValueError (fuzz-found)
        raise _Unreadable(f"its first directory is at offset {offset}, past the file's end")
    f.seek(offset)
    (count,) = _unpack(order + count_fmt, f.read(struct.calcsize(count_fmt)))
    if not 0 < count <= _MAX_TIFF_TAGS:
        raise _Unreadable(f"its first directory declares {count} tags")
    table = f.read(count * entry_size)
    values: dict[int, int | None] = {}
    inline = struct.calcsize(value_fmt)
    for i in range(count):
        entry = table[i * entry_size:(i + 1) * entry_size]
        tag, kind, n = _unpack(order + "HH" + value_fmt, entry)
        values[tag] = None
        size = {3: 2, 4: 4, 16: 8}.get(kind)  # SHORT, LONG, LONG8
        if size is None or n < 1 or size > inline:
            continue
        start = 4 + inline
        (values[tag],) = _unpack(order + {2: "H", 4: "I", 8: "Q"}[size],
                                 entry[start:start + size])
    width, height, tile_w, tile_h = (values.get(t) for t in (256, 257, 322, 323))
    if width is None or height is None:
        raise _Unreadable("its first directory has no image width or length")
    tile = (tile_h, tile_w) if tile_w is not None and tile_h is not None else None
    return ImageHeader("TIFF", width, height, values.get(277) or 1, tile, values)


def _bmp(f: BinaryIO) -> ImageHeader:
    f.seek(14)
    (size,) = _unpack("<I", f.read(4))
    if size == 12:
        width, height = _unpack("<hh", f.read(4))
    else:
        width, height = _unpack("<ii", f.read(8))
    return ImageHeader("BMP", abs(width), abs(height))


def _webp(f: BinaryIO) -> ImageHeader:
    f.seek(12)
    chunk = f.read(18)
    kind = chunk[:4]
    if kind == b"VP8X":
        w, h = chunk[12:15], chunk[15:18]
        return ImageHeader("WebP", int.from_bytes(w, "little") + 1,
                           int.from_bytes(h, "little") + 1)
    if kind == b"VP8L":
        (bits,) = _unpack("<I", chunk[9:13])
        return ImageHeader("WebP", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    if kind == b"VP8 ":
        width, height = _unpack("<HH", chunk[14:18])
        return ImageHeader("WebP", width & 0x3FFF, height & 0x3FFF)
    raise _Unreadable("unknown WebP chunk")


def _parse(f: BinaryIO) -> ImageHeader:
    head = f.read(16)
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return _png(f)
    if head.startswith(b"\xff\xd8"):
        return _jpeg(f)
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return _tiff(f, head)
    if head.startswith(b"BM"):
        return _bmp(f)
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return _webp(f)
    raise _Unreadable("not a JPEG, PNG or TIFF file" if head else "the file is empty")


def undecodable(path: Path, what: str, detail: str = "") -> IsdnetError:
    """The one message for a file no decoder can read."""
    detail = f" ({detail})" if detail else ""
    return IsdnetError(f"cannot decode {what} {path}: the file is empty, corrupt or not a "
                       f"{FORMATS} image{detail}; re-export it as 8-bit RGB JPEG, PNG or TIFF")


def read_header(path: str | os.PathLike[str], what: str = "image") -> ImageHeader:
    """The declared size of a JPEG/PNG/TIFF (BMP, WebP) file; nothing is decoded."""
    path = Path(path)
    if not path.is_file():
        raise IsdnetError(f"{what} {path} does not exist or is not a file")
    try:
        with open(path, "rb") as f:
            header = _parse(f)
    except _Unreadable as exc:
        raise undecodable(path, what, str(exc)) from None
    except OSError as exc:
        raise IsdnetError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if header.width < 1 or header.height < 1:
        raise undecodable(path, what, f"it declares {header.width}x{header.height} pixels")
    return header


def megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:.1f} MP"


def check_budget(header: ImageHeader, path: str | os.PathLike[str], what: str,
                 max_pixels: int | None) -> ImageHeader:
    """Refuse, before any decoding, a file wider than ``MAX_BANDS`` bands or one whose
    decode would exceed ``max_pixels`` (0 or None: no limit)."""
    if header.bands is not None and header.bands > MAX_BANDS:
        raise IsdnetError(f"{what} {path} has {header.bands} bands; at most {MAX_BANDS} are read "
                          "(gray, RGB, alpha) and the model takes 3-band RGB: write an RGB copy, "
                          "e.g. gdal_translate -b 1 -b 2 -b 3 in.tif out.tif")
    if not max_pixels or header.decode_pixels <= max_pixels:
        return header
    size = f"{header.width}x{header.height} pixels (WxH, {megapixels(header.pixels)})"
    if header.decode_pixels > header.pixels:
        th, tw = header.tile or (0, 0)
        size += f" in {tw}x{th} tiles ({megapixels(header.decode_pixels)} per tile)"
    reason = "" if header.windowed else (
        f"; {header.format} has no windowed decoding, so the whole image would be decoded at "
        "once (a tiled GeoTIFF can be streamed by 'infer')")
    raise over_budget(f"{what} {path} is {size}", max_pixels, reason)


def over_budget(problem: str, max_pixels: int, reason: str = "") -> IsdnetError:
    """The one message for anything above the pixel budget: the size, the budget, the way
    to raise it (a keyword in Python, an option on the command line)."""
    text = f"{problem}, above the pixel budget of {megapixels(max_pixels)}{reason}"
    return IsdnetError(f"{text}; pass max_pixels= a larger number (0 = no limit) if this "
                       "machine has the memory",
                       cli=f"{text}; raise --max-pixels (now {max_pixels}; 0 = no limit) if "
                           "this machine has the memory")


def checked_header(path: str | os.PathLike[str], what: str = "image",
                   max_pixels: int | None = DEFAULT_MAX_PIXELS) -> ImageHeader:
    """``read_header`` then ``check_budget``: what every reader calls before decoding."""
    return check_budget(read_header(path, what), path, what, max_pixels)
