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
from dataclasses import dataclass, field
from pathlib import Path

from ..data.datasets import list_images, split_masks
from ..data.headers import DEFAULT_MAX_PIXELS, ImageHeader, checked_header, over_budget, read_header
from ..data.images import (
    open_geotiff,
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


@dataclass(frozen=True)
class FilePlan:
    """What segmenting one file will write, decided from its header before decoding: the
    same decision for plain ``infer``, the resume check and the Ray workers."""

    path: Path
    labels: Path  # <stem>_labels.png, or .tif for a GeoTIFF (with rasterio) or a stream
    overlay: Path | None  # <stem>_overlay.jpg|png, when asked for and not streamed
    streamed: bool  # above the pixel budget: labelled window by window
    georeferenced: bool  # the input carries GeoTIFF tags

    @property
    def outputs(self) -> tuple[Path, ...]:
        return (self.labels,) if self.overlay is None else (self.labels, self.overlay)


@dataclass
class FileResult:
    """One segmented file, as ``infer_files`` reports it."""

    inference: float  # seconds of inference (pre/post-processing and tiling included)
    tiled: bool = False
    streamed: bool = False
    plain_geotiff: bool = False  # a GeoTIFF written as a plain PNG (no rasterio)
    conversions: list[str] = field(default_factory=list)


def plan_file(path: Path, out_dir: str | os.PathLike[str], *, overlay_images: bool = False,
              max_pixels: int | None = DEFAULT_MAX_PIXELS, geo: bool | None = None
              ) -> FilePlan:
    """The outputs of ``path`` (its header checked against the pixel budget); raises
    IsdnetError for an image that cannot be segmented within it."""
    out = Path(out_dir)
    geo = has_rasterio() if geo is None else geo
    header = checked_header(path, "image", None)
    labels = out / f"{path.stem}{LABELS_SUFFIX}"
    georeferenced = _georeferenced(header)
    if max_pixels and header.decode_pixels > max_pixels and header.windowed:
        if not geo:
            raise over_budget(
                f"image {path} is {header.width}x{header.height} pixels (WxH)", max_pixels,
                "; TIFFs above it are streamed window by window once rasterio is installed "
                "(pip install 'isdnet-deploy[geo]')")
        return FilePlan(path, labels.with_suffix(".tif"), None, True, georeferenced)
    overlay_path = None
    if overlay_images:
        ext = ".jpg" if path.suffix.lower() in (".jpg", ".jpeg") else ".png"
        overlay_path = out / f"{path.stem}{OVERLAY_SUFFIX}{ext}"
    suffix = ".tif" if georeferenced and geo else ".png"
    return FilePlan(path, labels.with_suffix(suffix), overlay_path, False, georeferenced)


# How each output format ends: a file cut short (a copy interrupted, a disk filled) lacks it.
_PNG_END = b"IEND\xaeB`\x82"
_JPEG_END = b"\xff\xd9"


def output_complete(path: Path) -> bool:
    """Whether an output file is whole: a PNG ends with its IEND chunk, a JPEG with its
    end-of-image marker, a TIFF opens and its last row reads back. Our writers are atomic,
    so a partial file only comes from outside (a copy, a full disk): it is redone."""
    try:
        size = path.stat().st_size
        if path.suffix == ".png" or path.suffix == ".jpg":
            end = _PNG_END if path.suffix == ".png" else _JPEG_END
            with path.open("rb") as f:
                f.seek(max(0, size - len(end)))
                return f.read() == end
        with open_geotiff(path) as tiff:
            tiff.read(tiff.height - 1, 0, tiff.height, tiff.width)
        return True
    except Exception:  # whatever stops it reading back (GDAL's errors included): redo it
        return False


def outputs_complete(plan: FilePlan) -> bool:
    """Whether every output of ``plan`` is present and whole (resume skips the file)."""
    return all(output_complete(path) for path in plan.outputs)


def segment_file(predictor: Predictor, plan: FilePlan, *,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS,
                 progress: bool = False) -> FileResult:
    """Segment one planned file and write its outputs atomically: THE per-image work of
    ``infer``, run as is by ``infer_files`` and by each Ray worker (``apps.distributed``),
    so both write the same bytes."""
    palette = predictor.contract.display_palette()
    path = plan.path
    if plan.streamed:
        from tqdm.auto import tqdm

        start = time.perf_counter()
        with tqdm(desc=path.name, unit="tile", disable=not progress, leave=False) as bar:
            def advance(done: int, total: int) -> None:
                bar.total = total
                bar.update(done - bar.n)

            stream_geotiff(predictor, path, plan.labels, palette,
                           max_block_pixels=max_pixels, progress=advance)
        return FileResult(time.perf_counter() - start, tiled=True, streamed=True)
    result = FileResult(0.0)
    georef = None
    if plan.labels.suffix == ".tif":
        image, georef = read_geotiff(path, max_pixels)
    else:
        image = read_image(path, result.conversions, max_pixels)
        result.plain_geotiff = plan.georeferenced
    start = time.perf_counter()
    labels = predictor.predict(image)
    result.inference = time.perf_counter() - start
    result.tiled = predictor.last_tiles > 1
    if georef is not None:
        write_geotiff_labels(plan.labels, labels, georef, palette)
    else:
        write_label_png(plan.labels, labels, palette)
    if plan.overlay is not None:
        write_image(plan.overlay, overlay(image, labels, palette))
    return result


def add_notes(report: BatchReport, results: Sequence[tuple[Path, FileResult]],
              overlay_images: bool) -> None:
    """The notes ``infer`` ends with: conversions, streamed images, plain GeoTIFF outputs."""
    conversions = [c for _, r in results for c in r.conversions]
    streamed = [p.name for p, r in results if r.streamed]
    plain_geotiffs = [p.name for p, r in results if r.plain_geotiff]
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


def infer_files(predictor: Predictor, paths: Sequence[Path], out_dir: str | os.PathLike[str],
                *, overlay_images: bool = False, progress: bool = True,
                report: BatchReport | None = None,
                max_pixels: int | None = DEFAULT_MAX_PIXELS,
                resume: bool = False) -> BatchReport:
    """Segment each file and write ``<stem>_labels.png`` (palette-indexed class ids), or
    ``<stem>_labels.tif`` with the input's georeference for a GeoTIFF when rasterio is
    installed; ``<stem>_overlay.jpg|png`` with ``overlay_images``.

    A file declaring more than ``max_pixels`` pixels (0 or None: no limit) is refused
    before decoding, unless it is a TIFF and rasterio is installed: then it is streamed
    into a tiled ``<stem>_labels.tif`` in memory that does not grow with the image.
    With ``resume``, files whose outputs are all present and whole are skipped
    (``report.skipped``).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    geo = has_rasterio()
    report = report or BatchReport()
    results: list[tuple[Path, FileResult]] = []
    skipped = report.skipped

    def work(path: Path) -> dict[str, float]:
        plan = plan_file(path, out, overlay_images=overlay_images, max_pixels=max_pixels,
                         geo=geo)
        if resume and outputs_complete(plan):
            report.skipped += 1
            return {}
        result = segment_file(predictor, plan, max_pixels=max_pixels, progress=progress)
        report.tiled += result.tiled
        results.append((path, result))
        return {"inference": result.inference}

    run_batch(paths, work, progress=progress, desc="infer", report=report)
    report.done -= report.skipped - skipped  # run_batch counted them as done
    add_notes(report, results, overlay_images)
    return report
