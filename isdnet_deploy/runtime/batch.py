"""Running a ``Segmenter`` over many files: tiling, per-image timing, per-file failures.

Tiling works in *network pixels*, i.e. on the image after the profile's test scale,
because that is what an artifact's size limits refer to. An image is tiled when it is
larger than the artifact accepts: a static artifact's fixed size, a TensorRT engine's
largest profile shape, or a caller's memory budget (``max_size``); ``tile`` forces
tiling. Tile logits are blended by ``runtime.tiling`` and resized to the image exactly as
whole-image inference resizes its logits, so a tile covering the whole image gives the
same labels as no tiling at all.

Labels-only artifacts have no scores to blend: each tile's labels become one-hot votes,
blended with the same centre-weighted window, so an overlapped pixel takes the label most
tiles (weighted towards tile centres, where context is best) gave it. Without overlap that
is simply each tile's own labels.

A batch never stops at a bad file: the error is recorded against the file, the rest run,
and the caller reports every failure at the end.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ..data.datasets import Pair, list_images, load_pair
from ..data.images import (
    overlay,
    read_geotiff,
    read_image,
    write_geotiff_labels,
    write_image,
    write_label_png,
)
from ..errors import IsdnetError
from ..metrics.segmentation import ConfusionAccumulator, scores
from ..profiles import IGNORE_INDEX, Profile
from . import preprocess
from .inputs import classify_image
from .segmenter import Segmenter
from .tiling import tiled_logits

Size = tuple[int, int]
T = TypeVar("T")

# TIFF tags whose presence makes a TIFF a GeoTIFF (GeoKeyDirectory, ModelPixelScale,
# ModelTiepoint, ModelTransformation).
_GEOTIFF_TAGS = (34735, 33550, 33922, 34264)
LABELS_SUFFIX = "_labels"
OVERLAY_SUFFIX = "_overlay"


@dataclass(frozen=True)
class TileSettings:
    """How to tile; sizes are HxW in network pixels (after the test scale)."""

    tile: Size | None = None  # always tile with this size
    max_size: Size | None = None  # tile only images larger than this (memory budget)
    overlap: float = 0.25  # fraction of the tile (< 1) or whole pixels (>= 1)
    window: str = "hann"


def _as_size(value: Any) -> Size | None:
    if isinstance(value, list | tuple) and len(value) == 2 and all(
            isinstance(v, int) and v > 0 for v in value):
        return int(value[0]), int(value[1])
    return None


def artifact_limits(segmenter: Segmenter) -> tuple[Size | None, Size | None]:
    """(fixed input size, largest accepted size) of the artifact, either may be None.

    The largest size comes from ``contract.extra['profile_max']`` or, for TensorRT
    engines, from the sidecar's optimization profile.
    """
    contract = segmenter.contract
    fixed = None if contract.dynamic else _as_size(contract.fixed_size)
    largest = _as_size(contract.extra.get("profile_max"))
    sidecar = getattr(segmenter.backend, "sidecar", None)
    if largest is None and sidecar is not None:
        largest = _as_size(getattr(sidecar, "profile", {}).get("max"))
    return fixed, largest


def _smaller(a: Size | None, b: Size | None) -> Size | None:
    if a is None or b is None:
        return a or b
    return min(a[0], b[0]), min(a[1], b[1])


def _fmt(size: Size) -> str:
    return f"{size[0]}x{size[1]}"


def _guard_backend(exc: Exception) -> IsdnetError | None:
    """A one-line error for engine failures on one image (e.g. out of memory)."""
    module = type(exc).__module__ or ""
    if isinstance(exc, MemoryError) or module.startswith(("onnxruntime", "tensorrt")):
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        return IsdnetError(f"the inference engine failed on this image ({type(exc).__name__}: "
                           f"{first}); if it ran out of memory, tile with --max-size")
    return None


class Predictor:
    """A ``Segmenter`` that tiles images larger than its artifact accepts."""

    def __init__(self, segmenter: Segmenter, tiles: TileSettings | None = None) -> None:
        self.segmenter = segmenter
        self.tiles = tiles or TileSettings()
        self.contract = segmenter.contract
        self.fixed, largest = artifact_limits(segmenter)
        self.limit = _smaller(self.tiles.max_size, largest)
        self.last_tiles = 0
        self._calls = 0
        tile = self.tiles.tile
        if self.fixed is not None:
            if tile is not None and tile != self.fixed:
                raise IsdnetError(f"this artifact only accepts {_fmt(self.fixed)} inputs, so "
                                  f"its tiles are that size; drop --tile {_fmt(tile)} or give "
                                  f"--tile {_fmt(self.fixed)}")
            budget = self.tiles.max_size
            if budget is not None and (budget[0] < self.fixed[0] or budget[1] < self.fixed[1]):
                raise IsdnetError(f"--max-size {_fmt(budget)} is below this artifact's fixed "
                                  f"input size {_fmt(self.fixed)}; export a smaller static "
                                  "model or a dynamic one")
        elif tile is not None and largest is not None and (
                tile[0] > largest[0] or tile[1] > largest[1]):
            raise IsdnetError(f"--tile {_fmt(tile)} is larger than this artifact accepts "
                              f"(at most {_fmt(largest)}); use a smaller tile")

    @property
    def num_classes(self) -> int:
        return self.contract.num_classes

    def network_size(self, height: int, width: int) -> Size:
        """The size the artifact sees for an HxW image (the test scale applied)."""
        scale = self.contract.test_scale
        if self.segmenter.scale and scale != 1.0:
            return preprocess.scaled_size(height, width, scale)
        return height, width

    def plan(self, height: int, width: int) -> tuple[Size | None, bool]:
        """(tile size or None for whole-image inference, pad-to-tile) for a network-size
        image."""
        if self.fixed is not None:
            return (None, False) if (height, width) == self.fixed else (self.fixed, True)
        if self.tiles.tile is not None:
            return self.tiles.tile, False
        if self.limit is not None and (height > self.limit[0] or width > self.limit[1]):
            return self.limit, False
        return None, False

    def tile_scores(self, tile: np.ndarray) -> np.ndarray:
        """(C,h,w) float32 scores of one network-size tile: logits, or one-hot votes for
        labels-only artifacts."""
        self._calls += 1
        feeds = preprocess.prepare_feeds(np.ascontiguousarray(tile), self.contract)
        outputs = self.segmenter.run_feeds(feeds)
        if "logits" in outputs:
            logits = np.asarray(outputs["logits"])
            return (logits[0] if logits.ndim == 4 else logits).astype(np.float32, copy=False)
        labels = np.asarray(outputs["labels"])
        labels = labels.reshape(labels.shape[-2:])
        if labels.size and int(labels.max()) >= self.num_classes:
            raise IsdnetError(f"the artifact returned class id {int(labels.max())} but its "
                              f"contract lists {self.num_classes} classes; re-export it")
        return np.eye(self.num_classes, dtype=np.float32)[labels].transpose(2, 0, 1)

    def predict(self, image: np.ndarray) -> np.ndarray:
        """HxW class ids for an HxWx3 uint8 RGB image, tiled when needed."""
        try:
            return self._predict(image)
        except IsdnetError:
            raise
        except Exception as exc:
            error = _guard_backend(exc)
            if error is None:
                raise
            raise error from None

    def _predict(self, image: np.ndarray) -> np.ndarray:
        classify_image(image)
        height, width = image.shape[:2]
        net = self.network_size(height, width)
        tile, pad = self.plan(*net)
        if tile is None:
            self.last_tiles = 1
            return self.segmenter.predict(image)
        scaled = preprocess.resize_image(image, net)
        start = self._calls
        scores = tiled_logits(scaled, self.tile_scores, tile, self.tiles.overlap,
                              num_classes=self.num_classes, window=self.tiles.window,
                              min_tile=self.contract.min_size, pad_to_tile=pad)
        self.last_tiles = self._calls - start
        if self.contract.output_kind == "labels":
            return preprocess.resize_labels(scores.argmax(axis=0).astype(np.uint8),
                                            (height, width))
        return preprocess.logits_to_labels(scores[None], (height, width))


# --- batches -------------------------------------------------------------------------------


@dataclass
class Failure:
    item: str
    message: str


def timing_summary(seconds: Sequence[float]) -> dict[str, float | int]:
    """Count, mean/median/min/max in ms and the total in s of per-image times."""
    if not seconds:
        return {"count": 0, "mean_ms": 0.0, "median_ms": 0.0, "min_ms": 0.0, "max_ms": 0.0,
                "total_s": 0.0}
    return {"count": len(seconds), "mean_ms": 1000 * statistics.fmean(seconds),
            "median_ms": 1000 * statistics.median(seconds), "min_ms": 1000 * min(seconds),
            "max_ms": 1000 * max(seconds), "total_s": float(sum(seconds))}


@dataclass
class BatchReport:
    total: int = 0
    done: int = 0
    failures: list[Failure] = field(default_factory=list)
    # name -> per-image seconds of inference (pre/post-processing and tiling included,
    # reading and writing files excluded), for the images that succeeded
    timings: dict[str, list[float]] = field(default_factory=dict)
    tiled: int = 0
    wall_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def timing(self, name: str) -> dict[str, float | int]:
        return timing_summary(self.timings.get(name, []))

    def failure_lines(self) -> list[str]:
        return [f"  {f.item}: {f.message}" for f in self.failures]


def run_batch(items: Sequence[T], work: Callable[[T], Mapping[str, float]], *,
              label: Callable[[T], str] = str, progress: bool = True, desc: str = "images",
              report: BatchReport | None = None) -> BatchReport:
    """Call ``work`` on every item; ``work`` returns {name: inference seconds}.

    A user-fixable error (``IsdnetError``), an OS error (unreadable or unwritable file) or
    an engine failure is recorded against the item and the batch goes on.
    """
    from tqdm.auto import tqdm

    report = report or BatchReport()
    report.total += len(items)
    start = time.perf_counter()
    bar = tqdm(items, desc=desc, unit="image", disable=not progress, file=sys.stderr,
               dynamic_ncols=True)
    for item in bar:
        try:
            seconds = work(item)
        except IsdnetError as exc:
            report.failures.append(Failure(label(item), str(exc)))
        except OSError as exc:
            report.failures.append(Failure(label(item), f"{exc.strerror or exc} "
                                                        f"({exc.filename or 'file'})"))
        except Exception as exc:
            error = _guard_backend(exc)
            if error is None:
                raise
            report.failures.append(Failure(label(item), str(error)))
        else:
            report.done += 1
            for name, value in seconds.items():
                report.timings.setdefault(name, []).append(value)
        if report.failures:
            bar.set_postfix(failed=len(report.failures), refresh=False)
    report.wall_seconds += time.perf_counter() - start
    return report


# --- infer ---------------------------------------------------------------------------------


def is_geotiff(path: str | os.PathLike[str]) -> bool:
    """Whether a TIFF carries GeoTIFF georeferencing tags (checked without GDAL)."""
    path = Path(path)
    if path.suffix.lower() not in (".tif", ".tiff"):
        return False
    from PIL import Image

    try:
        with Image.open(path) as im:
            tags = getattr(im, "tag_v2", None)
            return tags is not None and any(t in tags for t in _GEOTIFF_TAGS)
    except (OSError, ValueError):
        return False


def has_rasterio() -> bool:
    try:
        import rasterio  # noqa: F401
    except ImportError:
        return False
    return True


def _is_own_output(path: Path) -> bool:
    return path.stem.endswith((LABELS_SUFFIX, OVERLAY_SUFFIX))


def collect_inputs(paths: Iterable[str | os.PathLike[str]], out_dir: str | os.PathLike[str]
                   ) -> tuple[list[Path], list[Failure]]:
    """Image files from files and folders (not recursive), plus the arguments that gave
    none. Outputs of an earlier run in the output folder are skipped, and a second input
    whose output name would overwrite the first's is refused."""
    out = Path(out_dir).resolve()
    found: list[Path] = []
    failures: list[Failure] = []
    for arg in paths:
        path = Path(arg)
        if path.is_dir():
            try:
                files = list_images(path)
            except IsdnetError as exc:
                failures.append(Failure(str(path), str(exc)))
                continue
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
    return unique, failures


def palette_of(segmenter: Segmenter) -> list[list[int]]:
    """The artifact's palette, or distinct generated colours when it names none."""
    palette = [list(c) for c in segmenter.contract.palette]
    n = segmenter.contract.num_classes
    if len(palette) >= n:
        return palette
    import colorsys

    for k in range(len(palette), n):
        r, g, b = colorsys.hsv_to_rgb((k * 0.618034) % 1.0, 0.75, 0.95)
        palette.append([round(255 * r), round(255 * g), round(255 * b)])
    return palette


def infer_files(predictor: Predictor, paths: Sequence[Path], out_dir: str | os.PathLike[str],
                *, overlay_images: bool = False, progress: bool = True,
                report: BatchReport | None = None) -> BatchReport:
    """Segment each file and write ``<stem>_labels.png`` (palette-indexed class ids), or
    ``<stem>_labels.tif`` with the input's georeference for a GeoTIFF when rasterio is
    installed; ``<stem>_overlay.jpg|png`` with ``overlay_images``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    palette = palette_of(predictor.segmenter)
    geo = has_rasterio()
    report = report or BatchReport()
    plain_geotiffs: list[str] = []

    def work(path: Path) -> dict[str, float]:
        georef = None
        georeferenced = is_geotiff(path)
        if georeferenced and geo:
            image, georef = read_geotiff(path)
        else:
            image = read_image(path)
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
    if plain_geotiffs:
        report.notes.append(
            f"{len(plain_geotiffs)} GeoTIFF input(s) got plain PNG label maps without "
            "georeference; install rasterio (pip install 'isdnet-deploy[geo]') to write "
            "georeferenced <stem>_labels.tif")
    return report


# --- evaluate ------------------------------------------------------------------------------


@dataclass
class ArtifactResult:
    name: str
    backend: str
    accumulator: ConfusionAccumulator
    agree_pixels: int = 0
    compared_pixels: int = 0

    def agreement(self) -> float:
        return self.agree_pixels / self.compared_pixels if self.compared_pixels else float("nan")


def evaluate_pairs(predictors: Sequence[tuple[str, Predictor]], pairs: Sequence[Pair],
                   profile: Profile, *, progress: bool = True
                   ) -> tuple[list[ArtifactResult], BatchReport]:
    """One confusion matrix per artifact over all pairs (ignore index 255).

    An image counts for every artifact or for none: a pair that fails to load, or that
    any artifact fails on, is recorded as a failure and left out of all matrices, so the
    artifacts are compared on the same pixels. Label agreement is measured against the
    first artifact (the reference) on non-ignored pixels.
    """
    for name, predictor in predictors:
        if predictor.num_classes != profile.num_classes:
            raise IsdnetError(f"{name} has {predictor.num_classes} classes but profile "
                              f"{profile.name} has {profile.num_classes}; pick the matching "
                              "--profile")
    results = [ArtifactResult(name, p.segmenter.backend.name,
                              ConfusionAccumulator(profile.num_classes, IGNORE_INDEX))
               for name, p in predictors]
    report = BatchReport()

    def work(pair: Pair) -> dict[str, float]:
        image, mask = load_pair(pair, profile)
        predictions, times = [], {}
        for name, predictor in predictors:
            start = time.perf_counter()
            try:
                predictions.append(predictor.predict(image))
            except IsdnetError as exc:
                raise IsdnetError(f"{name}: {exc}") from None
            times[name] = time.perf_counter() - start
        if any(p.last_tiles > 1 for _, p in predictors):
            report.tiled += 1
        keep = mask != IGNORE_INDEX
        own = []
        for pred in predictions:  # all checked before any matrix changes
            own.append(ConfusionAccumulator(profile.num_classes, IGNORE_INDEX))
            own[-1].update(pred, mask)
        for result, pred, matrix in zip(results, predictions, own, strict=True):
            result.accumulator.merge(matrix)
            result.agree_pixels += int(np.count_nonzero((pred == predictions[0]) & keep))
            result.compared_pixels += int(np.count_nonzero(keep))
        return times

    run_batch(pairs, work, label=lambda p: f"{p.image.name} / {p.label.name}",
              progress=progress, desc="evaluate", report=report)
    return results, report


def result_scores(result: ArtifactResult, profile: Profile) -> dict[str, Any]:
    return scores(result.accumulator.matrix, profile.classes, profile.miou_excludes)
