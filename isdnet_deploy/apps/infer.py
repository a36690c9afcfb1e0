"""``infer`` over files: find the images, segment each (tiled when needed), write
palette-indexed label PNGs (GeoTIFFs with their georeference), overlays on request.

Every file's declared size is checked against the pixel budget before it is decoded; a
TIFF/GeoTIFF above the budget is streamed window by window (``apps.stream``) when
rasterio is installed, and any other format above it is refused.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..data.datasets import list_images, split_masks
from ..data.headers import DEFAULT_MAX_PIXELS, ImageHeader, checked_header, over_budget, read_header
from ..data.images import (
    overlay,
    read_geotiff,
    read_image,
    write_geotiff_labels,
    write_image,
    write_label_png,
)
from ..errors import IsdnetError
from ..profiles import Profile
from ..runtime.predictor import Predictor
from .batch import BatchReport, Failure, run_batch
from .stream import stream_geotiff

# TIFF tags whose presence makes a TIFF a GeoTIFF (GeoKeyDirectory, ModelPixelScale,
# ModelTiepoint, ModelTransformation).
_GEOTIFF_TAGS = (34735, 33550, 33922, 34264)
LABELS_SUFFIX = "_labels"
OVERLAY_SUFFIX = "_overlay"


def is_geotiff(path: str | os.PathLike[str]) -> bool:
    """Whether a TIFF carries GeoTIFF georeferencing tags (read from its header only)."""
    path = Path(path)
    if path.suffix.lower() not in (".tif", ".tiff"):
        return False
    try:
        return _georeferenced(read_header(path))
    except IsdnetError:
        return False


def _georeferenced(header: ImageHeader) -> bool:
    return header.format == "TIFF" and any(t in header.tags for t in _GEOTIFF_TAGS)


def has_rasterio() -> bool:
    try:
        import rasterio  # noqa: F401
    except ImportError:
        return False
    return True


def _is_own_output(path: Path) -> bool:
    return path.stem.endswith((LABELS_SUFFIX, OVERLAY_SUFFIX))


def collect_inputs(paths: Iterable[str | os.PathLike[str]], out_dir: str | os.PathLike[str],
                   profile: Profile | None = None
                   ) -> tuple[list[Path], list[Failure], list[Path]]:
    """(images, failures, skipped masks) from files and folders (not recursive).

    In a folder, files named like ground-truth masks (the dataset pairing rules: DeepGlobe's
    ``*_mask``) are skipped and returned so the caller can say so; a file named on the
    command line is always taken. Outputs of an earlier run in the output folder are
    skipped, and a second input whose output name would overwrite the first's is refused.
    """
    out = Path(out_dir).resolve()
    found: list[Path] = []
    failures: list[Failure] = []
    skipped: list[Path] = []
    for arg in paths:
        path = Path(arg)
        if path.is_dir():
            try:
                files, masks = split_masks(list_images(path), profile)
            except IsdnetError as exc:
                failures.append(Failure.of(str(path), exc))
                continue
            skipped += masks
            if path.resolve() == out:
                files = [f for f in files if not _is_own_output(f)]
            found += files
        elif path.is_file():
            found.append(path)
        else:
            failures.append(Failure(str(path), "no such file or folder"))
    unique: list[Path] = []
    seen: set[Path] = set()
    by_stem: dict[str, Path] = {}
    for path in found:
        if path.resolve() in seen:
            continue
        seen.add(path.resolve())
        if path.stem in by_stem:
            failures.append(Failure(str(path), f"its output name {path.stem}{LABELS_SUFFIX}.* "
                                               f"is already used by {by_stem[path.stem]}; "
                                               "rename one of them or run them separately"))
            continue
        by_stem[path.stem] = path
        unique.append(path)
    return unique, failures, skipped


def infer_files(predictor: Predictor, paths: Sequence[Path], out_dir: str | os.PathLike[str],
                *, overlay_images: bool = False, progress: bool = True,
                report: BatchReport | None = None,
                max_pixels: int | None = DEFAULT_MAX_PIXELS) -> BatchReport:
    """Segment each file and write ``<stem>_labels.png`` (palette-indexed class ids), or
    ``<stem>_labels.tif`` with the input's georeference for a GeoTIFF when rasterio is
    installed; ``<stem>_overlay.jpg|png`` with ``overlay_images``.

    A file declaring more than ``max_pixels`` pixels (0 or None: no limit) is refused
    before decoding, unless it is a TIFF and rasterio is installed: then it is streamed
    into a tiled ``<stem>_labels.tif`` in memory that does not grow with the image.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    palette = predictor.contract.display_palette()
    geo = has_rasterio()
    report = report or BatchReport()
    plain_geotiffs: list[str] = []
    conversions: list[str] = []
    streamed: list[str] = []

    def stream(path: Path) -> dict[str, float]:
        from tqdm.auto import tqdm

        start = time.perf_counter()
        with tqdm(desc=path.name, unit="tile", disable=not progress, leave=False) as bar:
            def advance(done: int, total: int) -> None:
                bar.total = total
                bar.update(done - bar.n)

            stream_geotiff(predictor, path, out / f"{path.stem}{LABELS_SUFFIX}.tif", palette,
                           max_block_pixels=max_pixels, progress=advance)
        report.tiled += 1
        streamed.append(path.name)
        return {"inference": time.perf_counter() - start}

    def work(path: Path) -> dict[str, float]:
        header = checked_header(path, "image", None)
        if max_pixels and header.decode_pixels > max_pixels and header.windowed:
            if geo:
                return stream(path)
            raise over_budget(
                f"image {path} is {header.width}x{header.height} pixels (WxH)", max_pixels,
                "; TIFFs above it are streamed window by window once rasterio is installed "
                "(pip install 'isdnet-deploy[geo]')")
        georef = None
        georeferenced = _georeferenced(header)
        if georeferenced and geo:
            image, georef = read_geotiff(path, max_pixels)
        else:
            image = read_image(path, conversions, max_pixels)
            if georeferenced:
                plain_geotiffs.append(path.name)
        start = time.perf_counter()
        labels = predictor.predict(image)
        seconds = time.perf_counter() - start
        if predictor.last_tiles > 1:
            report.tiled += 1
        if georef is not None:
            write_geotiff_labels(out / f"{path.stem}{LABELS_SUFFIX}.tif", labels, georef,
                                 palette)
        else:
            write_label_png(out / f"{path.stem}{LABELS_SUFFIX}.png", labels, palette)
        if overlay_images:
            ext = ".jpg" if path.suffix.lower() in (".jpg", ".jpeg") else ".png"
            write_image(out / f"{path.stem}{OVERLAY_SUFFIX}{ext}",
                        overlay(image, labels, palette))
        return {"inference": seconds}

    run_batch(paths, work, progress=progress, desc="infer", report=report)
    if conversions:
        report.notes.append(f"{len(conversions)} image(s) were converted to 3-channel RGB: "
                            + "; ".join(conversions))
    if streamed:
        overlays = " (no overlays for them)" if overlay_images else ""
        report.notes.append(
            f"{len(streamed)} image(s) above the pixel budget were streamed window by window "
            f"into tiled <stem>_labels.tif files{overlays}: {', '.join(streamed)}")
    if plain_geotiffs:
        report.notes.append(
            f"{len(plain_geotiffs)} GeoTIFF input(s) got plain PNG label maps without "
            "georeference; install rasterio (pip install 'isdnet-deploy[geo]') to write "
            "georeferenced <stem>_labels.tif")
    return report
