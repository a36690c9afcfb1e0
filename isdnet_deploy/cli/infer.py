"""``isdnet-deploy infer`` and ``evaluate``: real images through any artifact.

Both read files with ``data.images`` (8-bit RGB policy), apply the profile's test scale
(the ``Segmenter`` does), tile images larger than the artifact accepts, carry on past bad
files and list every failure at the end with a non-zero exit.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..apps.batch import BatchReport
from ..apps.evaluate import ArtifactResult, evaluate_pairs, result_scores
from ..apps.infer import collect_inputs, infer_files
from ..data.datasets import describe_skipped_masks
from ..errors import IsdnetError
from ..fileio import check_writable_dir
from ..profiles import DEFAULT_PROFILE, Profile, get_profile
from ..runtime.predictor import Predictor, TileSettings
from ..runtime.torch_backend import TorchOptions
from ..tables import grid, percent, points
from .common import (
    DEVICE,
    PROFILE,
    REFERENCE,
    SIZE,
    backend_options,
    check_json_path,
    check_openvino_precision,
    check_torch_settings,
    json_option,
    max_pixels_option,
    open_artifact,
    open_segmenter,
    printable,
    progress_option,
    require_torch_artifact,
    show_progress,
    torch_options,
    warn_random_weights,
    write_json,
)

_SHOW = 10  # unpaired files named on the console (all of them go to the JSON)


def tile_settings(tile: tuple[int, int] | None, max_size: tuple[int, int] | None,
                  overlap: float) -> TileSettings:
    if tile and max_size:
        raise click.UsageError("--tile always tiles at that size, --max-size tiles only larger "
                               "images: give one of them")
    return TileSettings(tile=tile, max_size=max_size, overlap=overlap)


def _runtime_options(command: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--profile", type=PROFILE, default=None,
                     help="The classes of 'reference' and .pth artifacts, and how masks are "
                          "read [default: the artifact's own, else deepglobe]."),
        click.option("--device", type=DEVICE, default=None,
                     help="[default: cuda for TensorRT engines, else cpu]."),
        click.option("--threads", type=click.IntRange(min=1), default=None,
                     help="CPU threads for ONNX Runtime / OpenVINO / PyTorch."),
        click.option("--no-scale", is_flag=True,
                     help="Feed images at their own size instead of the profile's test "
                          "scale (DeepGlobe: x0.8)."),
        click.option("--tile", type=SIZE, default=None,
                     help="Always tile with HxW tiles (network pixels, after the test scale)."),
        click.option("--max-size", type=SIZE, default=None,
                     help="Memory budget: tile images larger than HxW (network pixels) with "
                          "tiles of that size. Static models and TensorRT engines tile at "
                          "their own limits without it."),
        click.option("--overlap", type=click.FloatRange(min=0), default=0.25,
                     show_default=True,
                     help="Tile overlap: a fraction of the tile (< 1) or pixels (>= 1)."),
    ]
    for option in reversed(options):
        command = option(command)
    return backend_options(progress_option(max_pixels_option(command)))


def _ms(value: float) -> str:
    return f"{value:.1f}"


def _timing_line(summary: dict[str, Any]) -> str:
    return (f"{summary['count']} images, mean {_ms(summary['mean_ms'])} ms, median "
            f"{_ms(summary['median_ms'])} ms, min {_ms(summary['min_ms'])} ms, max "
            f"{_ms(summary['max_ms'])} ms, total {summary['total_s']:.2f} s")


def _report_failures(report: BatchReport, what: str) -> None:
    if not report.failures:
        return
    click.secho(f"failed: {len(report.failures)} of {report.total} {what}:", fg="red", err=True)
    for line in report.failure_lines():
        click.echo(printable(line), err=True)
    raise IsdnetError(f"{len(report.failures)} of {report.total} {what} failed (listed above);"
                      " the others were processed")


LOCAL_RAY = "local"  # the value of a bare --ray: start a Ray instance for this run


@click.command("infer")
@click.argument("artifact")
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False),
              help="Folder for <stem>_labels.png (and overlays); missing folders are created.")
@click.option("--overlay", "overlay_images", is_flag=True,
              help="Also write <stem>_overlay.jpg/png: class colours blended over the image.")
@click.option("--ray", "ray_address", default=None, is_flag=False, flag_value=LOCAL_RAY,
              metavar="[ADDRESS]",
              help="Run on Ray (isdnet-deploy[ray]): a bare --ray (before another option or "
                   "at the end) starts a local Ray; 'auto', HOST:PORT or ray://HOST:PORT joins "
                   "that cluster. ARTIFACT, INPUTS and OUTPUT must be paths every node sees.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="With --ray: actors, each holding the artifact open [default: 2].")
@click.option("--gpus-per-worker", type=click.FloatRange(min=0), default=None,
              help="With --ray: GPUs each actor reserves (>0 runs it on CUDA) [default: 0].")
@click.option("--resume/--no-resume", default=None,
              help="Skip images whose outputs are all present and whole; partial ones are "
                   "redone [default: on with --ray, off without].")
@_runtime_options
@torch_options
def infer_command(artifact: str, inputs: tuple[str, ...], output: str, overlay_images: bool,
                  ray_address: str | None, workers: int | None,
                  gpus_per_worker: float | None, resume: bool | None,
                  profile: str | None, device: str | None, threads: int | None,
                  no_scale: bool, tile: tuple[int, int] | None,
                  max_size: tuple[int, int] | None, overlap: float, backend: str,
                  openvino_precision: str, max_pixels: int, torch_options: TorchOptions,
                  no_progress: bool) -> None:
    """Segment JPEG/PNG/TIFF images (files or folders) with ARTIFACT.

    ARTIFACT is an .onnx, .engine or .pth file, or 'reference' (random weights). Each
    image gives OUTPUT/<stem>_labels.png, palette-indexed: pixel values are class ids,
    viewers show class colours. GeoTIFFs give a georeferenced <stem>_labels.tif when
    rasterio is installed (isdnet-deploy[geo]).

    Images larger than the artifact accepts (static size, TensorRT profile maximum,
    --max-size) are tiled with overlapping, blended tiles; labels-only artifacts blend
    one-hot votes, i.e. a centre-weighted majority vote. Images declaring more than
    --max-pixels are refused before decoding, except TIFF/GeoTIFFs, which are then read
    and labelled window by window into a tiled <stem>_labels.tif (with rasterio).

    The --torch-* options, --channels-last and --cuda-graphs apply to a .pth or
    'reference' ARTIFACT. Compiling happens at the first image of each new size (a second
    size compiles once more, with symbolic sizes); CUDA graphs are captured per size.

    With --ray the same work runs on a pool of Ray actors (--workers), each holding the
    artifact open; the files written are byte-identical.

    Example: isdnet-deploy infer model.onnx images/ -o out/ --overlay
    """
    tiles = tile_settings(tile, max_size, overlap)
    check_openvino_precision(openvino_precision, backend)
    if ray_address is None and (workers is not None or gpus_per_worker is not None):
        raise click.UsageError("--workers and --gpus-per-worker apply to --ray runs; add --ray")
    if resume is None:
        resume = ray_address is not None
    require_torch_artifact(torch_options, [artifact], backend)
    check_torch_settings([torch_options], device)
    check_writable_dir(output)
    paths, failures, masks = collect_inputs(inputs, output,
                                            get_profile(profile) if profile else None)
    if not paths:
        if masks and not failures:
            raise IsdnetError(f"no images to segment: {describe_skipped_masks(masks)}")
        if not failures:
            raise IsdnetError("no images to segment: the folders hold only the outputs of an "
                              "earlier run")
        if len(failures) == 1:
            raise IsdnetError(f"{failures[0].item}: {failures[0].message}")
        report = BatchReport(total=len(failures), failures=failures)
        _report_failures(report, "inputs")
    if ray_address is not None:
        _infer_on_ray(artifact, paths, failures, masks, output, overlay_images,
                      ray_address, workers or 2, gpus_per_worker or 0.0, resume,
                      {"profile": profile, "device": device, "threads": threads,
                       "scale": not no_scale, "torch_options": torch_options,
                       "backend": "auto" if artifact == REFERENCE else backend,
                       "openvino_precision": openvino_precision},
                      tiles, max_pixels, no_progress)
        return
    segmenter, name = open_artifact(artifact, profile=profile, device=device,
                                    threads=threads, scale=not no_scale,
                                    backend="auto" if artifact == REFERENCE else backend,
                                    torch_options=torch_options,
                                    openvino_precision=openvino_precision)
    with segmenter:
        predictor = Predictor(segmenter, tiles)
        report = BatchReport(total=len(failures), failures=list(failures))
        if masks:
            report.notes.append(describe_skipped_masks(masks))
        warn_random_weights([(name, segmenter.contract)])
        infer_files(predictor, paths, output, overlay_images=overlay_images,
                    progress=show_progress(no_progress), report=report, max_pixels=max_pixels,
                    resume=resume)
    _summary(report, f"{name} ({segmenter.backend.name})", output)
    if report.done:
        click.echo(f"wall time {report.wall_seconds:.2f} s (files included)")
    if report.tiled:
        click.echo(f"tiled: {report.tiled} of {report.done} images (overlap {overlap})")
    if torch_options.compiled or torch_options.cuda_graphs:
        report.notes.append(f"{torch_options.label}: the first image at each new size "
                            "includes compiling / capturing, so its time is not a forward's")
    for note in report.notes:
        click.echo(printable(f"note: {note}"))
    _report_failures(report, "inputs")


def _summary(report: BatchReport, who: str, output: str) -> None:
    """What plain and Ray runs both say first: counts, skipped outputs, time per image."""
    click.echo(printable(f"{who}: {report.done} of {report.total} inputs segmented into "
                         f"{output}"))
    _skipped_line(report)
    if report.done:
        click.echo("time per image (inference with pre/post-processing; reading and writing "
                   f"files excluded): {_timing_line(report.timing('inference'))}")


def _skipped_line(report: BatchReport) -> None:
    if report.skipped:
        click.echo(f"skipped: {report.skipped} of {report.total} inputs whose outputs were "
                   "already complete (--no-resume redoes them)")


def _infer_on_ray(artifact: str, paths: list[Path], failures: list[Any], masks: list[Path],
                  output: str, overlay_images: bool, address: str, workers: int,
                  gpus_per_worker: float, resume: bool, open_options: dict[str, Any],
                  tiles: TileSettings, max_pixels: int, no_progress: bool) -> None:
    import functools

    from ..apps.distributed import RayReport, connect, infer_on_ray, require_ray

    spec = artifact if artifact == REFERENCE else str(Path(artifact).resolve())
    if gpus_per_worker and open_options["device"] is None:
        open_options["device"] = "cuda"
    report = RayReport(total=len(failures), failures=list(failures))
    if masks:
        report.notes.append(describe_skipped_masks(masks))
    ray = require_ray()
    joined = connect(None if address == LOCAL_RAY else address,
                     num_cpus=None if address != LOCAL_RAY else max(1, workers))
    try:
        infer_on_ray(functools.partial(open_segmenter, spec, **open_options), paths, output,
                     address=None, workers=workers, gpus_per_worker=gpus_per_worker,
                     tiles=tiles, overlay_images=overlay_images, max_pixels=max_pixels,
                     resume=resume, report=report, progress=show_progress(no_progress))
    except IsdnetError as exc:
        # Said before Ray shuts down: a Ray Data thread that touches the driver's core
        # worker after ray.shutdown() makes Ray end the process at once (seen in a full-suite
        # run), which would swallow the one error line.
        click.echo(f"error: {printable(exc.for_cli())}", err=True)
        sys.stderr.flush()
        ray.shutdown()
        sys.exit(1)
    finally:
        if ray.is_initialized():
            ray.shutdown()
    report.address = joined
    _summary(report, f"{Path(artifact).name} on {report.address} ({workers} workers)", output)
    if report.done:
        click.echo(f"wall time {report.wall_seconds:.2f} s (files included, Ray start "
                   f"excluded): {report.images_per_second:.2f} images/s")
        for actor, load in sorted(report.workers.items(), key=lambda item: item[1].node):
            restarts = (f", restarted: {len(load.pids)} processes" if len(load.pids) > 1
                        else "")
            click.echo(f"  worker {actor[:8]} on node {load.node}: {load.images} images, "
                       f"{load.seconds:.2f} s inference{restarts}")
        nodes = report.nodes()
        click.echo(f"nodes: {len(nodes)} (" + ", ".join(
            f"{node}: {count} images" for node, count in sorted(nodes.items())) + ")")
    if report.tiled:
        click.echo(f"tiled: {report.tiled} of {report.done} images (overlap {tiles.overlap})")
    for note in report.notes:
        click.echo(printable(f"note: {note}"))
    _report_failures(report, "inputs")


# --- evaluate ------------------------------------------------------------------------------


def definitions_short(profile: Profile, images: int) -> str:
    excluded = ", ".join(profile.miou_excludes)
    over = (f"the {profile.num_classes - len(profile.miou_excludes)} classes other than "
            f"{excluded} ({profile.num_classes} in the matrix)" if excluded
            else f"all {profile.num_classes} classes")
    return (f"Metrics: one confusion matrix per artifact summed over all {images} images; "
            f"ground-truth pixels of 255 are ignored. IoU = TP/(TP+FP+FN), F1 = "
            f"2TP/(2TP+FP+FN); mIoU and mF1 average {over}, leaving out classes absent from "
            f"both prediction and ground truth; pixel accuracy = correct / all non-ignored "
            f"pixels. Agreement = pixels labelled as by the first artifact.")


def parity_table(rows: list[dict[str, Any]]) -> str:
    """Each artifact's metrics and its difference (percentage points) to the first."""
    ref = rows[0]["scores"]
    header = ["artifact", "backend", "mIoU", "dmIoU", "mF1", "dmF1", "aAcc", "daAcc",
              "agree%", "median ms"]
    table = []
    for row in rows:
        s = row["scores"]
        first = row is rows[0]
        table.append([row["artifact"], row["backend"],
                      percent(s["miou"]), "ref" if first else points(s["miou"], ref["miou"]),
                      percent(s["mean_f1"]), points(s["mean_f1"], ref["mean_f1"]),
                      percent(s["pixel_accuracy"]),
                      points(s["pixel_accuracy"], ref["pixel_accuracy"]),
                      percent(row["agreement"], 4), _ms(row["timing"]["median_ms"])])
    return (grid(header, table, ["<", "<"] + [">"] * (len(header) - 2))
            + "\n(d = difference to the first artifact in percentage points)")


def _listing(paths: list[Path]) -> str:
    more = f" (+{len(paths) - _SHOW} more, all in --json)" if len(paths) > _SHOW else ""
    return ", ".join(p.name for p in paths[:_SHOW]) + more


def _resolve_profile(artifacts: tuple[str, ...], profile: str | None,
                     opened: dict[str, tuple[Any, str]]) -> Profile:
    if profile:
        return get_profile(profile)
    for spec in artifacts:
        if spec in opened and opened[spec][0].contract.profile:
            return get_profile(opened[spec][0].contract.profile)
    return get_profile(DEFAULT_PROFILE)


def _artifact_json(result: ArtifactResult, scores: dict[str, Any], report: BatchReport,
                   ref: dict[str, Any]) -> dict[str, Any]:
    from ..metrics.segmentation import jsonable

    delta = {key: scores[key] - ref[key] for key in ("miou", "mean_f1", "mean_accuracy",
                                                     "pixel_accuracy")}
    delta["class_iou"] = {c: scores["classes"][c]["iou"] - ref["classes"][c]["iou"]
                          for c in scores["classes"]}
    return jsonable({
        "artifact": result.name, "backend": result.backend, "scores": scores,
        "confusion_matrix": result.accumulator.matrix.tolist(),
        "delta_to_reference": delta, "agreement_with_reference": result.agreement(),
        "timing": report.timing(result.name),
    })


@click.command("evaluate")
@click.argument("artifacts", nargs=-1, required=True)
@click.option("--images", required=True, type=click.Path(file_okay=False),
              help="Folder of images.")
@click.option("--labels", default=None, type=click.Path(file_okay=False),
              help="Folder of masks [default: --images; DeepGlobe keeps both in one folder].")
@json_option("all metrics, confusion matrices and failures")
@_runtime_options
def evaluate_command(artifacts: tuple[str, ...], images: str, labels: str | None,
                     json_path: str | None, profile: str | None, device: str | None,
                     threads: int | None, no_scale: bool, tile: tuple[int, int] | None,
                     max_size: tuple[int, int] | None, overlap: float, backend: str,
                     openvino_precision: str, max_pixels: int, no_progress: bool) -> None:
    """Accuracy of one or more ARTIFACTS on images with ground-truth masks.

    Per-class IoU, F1, precision and recall, mIoU and pixel accuracy (the paper's metrics)
    from one confusion matrix per artifact over the whole set. With several artifacts the
    first is the reference (normally the .pth or 'reference') and a parity table gives each
    one's difference to it and its label agreement.

    Example: isdnet-deploy evaluate model.pth model.onnx --images data/val --json eval.json
    """
    from ..data.datasets import pair_files
    from ..metrics.segmentation import DEFINITIONS, format_scores

    tiles = tile_settings(tile, max_size, overlap)
    check_openvino_precision(openvino_precision, backend)
    json_file = check_json_path(json_path)
    opened: dict[str, tuple[Any, str]] = {}
    try:
        for spec in artifacts:  # files first: they are quick to open and name the profile
            if spec != REFERENCE and spec not in opened:
                opened[spec] = open_artifact(spec, profile=profile, device=device,
                                             threads=threads, scale=not no_scale,
                                             backend=backend,
                                             openvino_precision=openvino_precision)
        prof = _resolve_profile(artifacts, profile, opened)
        pairs, unpaired_images, unpaired_masks = pair_files(images, labels, prof)
        if unpaired_images:
            click.secho(printable(f"unpaired images (no mask, not evaluated): "
                                  f"{len(unpaired_images)}: {_listing(unpaired_images)}"),
                        fg="yellow", err=True)
        if unpaired_masks:
            click.secho(printable(f"unpaired masks (no image): {len(unpaired_masks)}: "
                                  f"{_listing(unpaired_masks)}"), fg="yellow", err=True)
        if REFERENCE in artifacts:
            opened[REFERENCE] = open_artifact(REFERENCE, profile=prof.name, device=device,
                                              threads=threads, scale=not no_scale)
        predictors, names = [], set()
        for spec in artifacts:
            segmenter, name = opened[spec]
            while name in names:
                name += "'"
            names.add(name)
            predictors.append((name, Predictor(segmenter, tiles)))
        warn_random_weights([(name, p.contract) for name, p in predictors])
        results, report = evaluate_pairs(predictors, pairs, prof,
                                         progress=show_progress(no_progress),
                                         max_pixels=max_pixels)
    finally:
        for segmenter, _ in opened.values():
            segmenter.close()

    click.echo(definitions_short(prof, report.done))
    rows = []
    for result in results:
        scores = result_scores(result, prof)
        rows.append({"artifact": result.name, "backend": result.backend, "scores": scores,
                     "agreement": result.agreement(), "timing": report.timing(result.name),
                     "result": result})
        click.echo(printable(f"\n== {result.name} ({result.backend}) on {report.done} "
                             "images =="))
        click.echo(format_scores(scores))
        click.echo(f"time per image: {_timing_line(report.timing(result.name))}")
    if len(rows) > 1:
        click.echo("\nAccuracy parity (first artifact = reference)")
        click.echo(printable(parity_table(rows)))
    if report.tiled:
        click.echo(f"tiled: {report.tiled} of {report.done} images (overlap {overlap})")
    if json_file is not None:
        ref = rows[0]["scores"]
        document = {
            "definitions": DEFINITIONS,
            "summary": definitions_short(prof, report.done),
            "profile": prof.name, "classes": list(prof.classes),
            "miou_excludes": list(prof.miou_excludes), "ignore_index": 255,
            "images_evaluated": report.done, "pairs": len(pairs),
            "test_scale": None if no_scale else prof.test_scale,
            "tiling": {"tile": tiles.tile, "max_size": tiles.max_size,
                       "overlap": tiles.overlap, "tiled_images": report.tiled},
            "unpaired_images": [str(p) for p in unpaired_images],
            "unpaired_masks": [str(p) for p in unpaired_masks],
            "failures": [{"file": f.item, "error": f.message} for f in report.failures],
            "artifacts": [_artifact_json(r["result"], r["scores"], report, ref)
                          for r in rows],
        }
        write_json(json_file, document)
    _report_failures(report, "image/mask pairs")
