"""``isdnet-deploy compare``: how closely artifacts reproduce a reference (logits, labels),
optionally their accuracy on ground truth, through the one comparator."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np

from ..errors import IsdnetError
from ..metrics.comparator import Comparator, Outputs, Side, relative_tolerance
from ..profiles import Profile, get_profile
from ..runtime.torch_backend import TorchOptions
from ..tables import grid, percent, points, scientific
from .common import (
    DEVICE,
    PROFILE,
    REFERENCE,
    SIZE,
    check_json_path,
    check_torch_settings,
    consumers,
    is_torch_artifact,
    json_option,
    max_pixels_option,
    open_artifact,
    output_file,
    printable,
    progress_option,
    require_torch_artifact,
    show_progress,
    torch_options,
    torch_variant_option,
    verify_on_option,
    warn_random_weights,
    write_json,
)

# Decided pixels: reference top-2 margin above twice export verification's tolerance.
DECIDED_ATOL, DECIDED_RTOL = 1e-4, 1e-5


@dataclass
class _Input:
    name: str
    load_image: Callable[[], np.ndarray]
    load_mask: Callable[[], np.ndarray] | None = None


def _inputs(images: str | None, labels: str | None, random: int, hw: tuple[int, int],
            prof: Profile, max_pixels: int) -> tuple[list[_Input], str]:
    """The inputs to compare on, and a description of them; image files are checked
    against the pixel budget ``max_pixels`` before they are decoded."""
    from ..data.datasets import load_mask, pair_files
    from ..data.images import read_image
    from ..data.samples import photo_like

    if labels is not None:
        if images is None:
            raise IsdnetError("--labels needs --images (the images the masks belong to)")
        pairs, _, _ = pair_files(images, labels, prof)
        return ([_Input(p.image.name, lambda p=p: read_image(p.image, max_pixels=max_pixels),
                        lambda p=p: load_mask(p.label, prof, max_pixels)) for p in pairs],
                f"{len(pairs)} image/mask pairs from {images}")
    if images is not None:
        from ..data.datasets import list_images, split_masks

        files, _ = split_masks(list_images(images), prof)
        return ([_Input(f.name, lambda f=f: read_image(f, max_pixels=max_pixels))
                 for f in files],
                f"{len(files)} images from {images}")
    if random < 1:
        raise IsdnetError("--random must be 1 or more when no --images are given")
    return ([_Input(f"random seed {s}", lambda s=s: photo_like(*hw, s)) for s in range(random)],
            f"{random} seeded photo-like random images of {hw[0]}x{hw[1]}")


def segmenter_side(name: str, segmenter: Any) -> Side:
    """A side that runs an opened artifact the way ``predict`` does and keeps its raw
    logits (at the size the network saw) for the numerical comparison."""
    def run(item: tuple[np.ndarray, np.ndarray | None]) -> Outputs:
        feeds, size = segmenter.feeds(item[0])
        outputs = segmenter.run_feeds(feeds)
        return Outputs(labels=segmenter.finish(outputs, size), logits=outputs.get("logits"))
    return name, run


def _label(path: str, segmenter: Any) -> str:
    options = getattr(segmenter.backend, "options", None)
    if path == REFERENCE:
        return ("pytorch (random weights)" if options is None or options.is_reference
                else f"pytorch {options.label} (random weights)")
    what = options.label if options is not None else segmenter.contract.precision
    return f"{Path(path).name} ({segmenter.backend.name} {what})"


def _variant(reference: Any, options: TorchOptions, threads: int | None, scale: bool) -> Any:
    """The REFERENCE's own model under other torch settings, as a Segmenter."""
    from ..runtime import Segmenter
    from ..runtime.torch_backend import TorchBackend

    backend = reference.backend
    return Segmenter(TorchBackend(None, str(backend.device), model=backend.model,
                                  profile=reference.contract.profile, threads=threads,
                                  **options.as_kwargs()), scale=scale)


def _backends(path: str, verify_on: tuple[str, ...], candidate: bool) -> tuple[str, ...]:
    """How ``path`` is opened: an ONNX file on every consumer when it is a candidate, on the
    first when it is the reference; anything else by its extension."""
    from ..runtime import backend_for

    if path == REFERENCE or backend_for(path) != "onnxruntime":
        return ("auto",)
    return verify_on if candidate else verify_on[:1]


def _heatmap_path(base: Path, index: int, count: int, name: str) -> Path:
    if count == 1:
        return base
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(name).stem)
    return base.with_name(f"{base.stem}-{index + 1}-{stem}{base.suffix}")


@click.command("compare")
@click.argument("reference_path", metavar="REFERENCE")
@click.argument("candidates", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--random", "random_count", type=click.IntRange(min=0), default=3,
              show_default=True, help="Seeded random inputs when no --images are given.")
@click.option("--images", type=click.Path(file_okay=False), default=None,
              help="Folder of images to compare on (test scale applied, as in evaluation).")
@click.option("--labels", type=click.Path(file_okay=False), default=None,
              help="Ground-truth masks for --images: adds mIoU, per-class IoU, F1 and pixel "
                   "accuracy per backend (DeepGlobe: may be the --images folder).")
@click.option("--size", type=SIZE, default=None,
              help="HxW of the random inputs; default the profile's test size.")
@click.option("--profile", type=PROFILE, default="deepglobe", show_default=True,
              help="Profile for a random-weights reference and for reading masks.")
@click.option("--device", type=DEVICE, default="cpu", show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None)
@click.option("--heatmap", type=click.Path(dir_okay=False), default=None,
              help="PNG of where each candidate's labels differ from the reference's (on the "
                   "input where they differ most); one file per candidate when several.")
@verify_on_option("each .onnx CANDIDATE runs on, each judged against REFERENCE (an .onnx "
                  "REFERENCE runs on the first)")
@json_option("all figures")
@torch_variant_option("Also compare REFERENCE (a .pth or 'reference') under these settings "
                      "with itself as it is (eager fp32).")
@torch_options
@max_pixels_option
@progress_option
def compare_command(reference_path: str, candidates: tuple[str, ...], random_count: int,
                    images: str | None, labels: str | None, size: tuple[int, int] | None,
                    profile: str, device: str, threads: int | None, heatmap: str | None,
                    verify_on: tuple[str, ...] | None, json_path: str | None,
                    torch_variants: tuple[TorchOptions, ...],
                    torch_options: TorchOptions, max_pixels: int,
                    no_progress: bool) -> None:
    """How closely each CANDIDATE reproduces REFERENCE (a .pth checkpoint, the word
    'reference' for the random-weights model, or any artifact): max/mean |logit diff|,
    cosine similarity, argmax agreement and mIoU of its labels against the reference's,
    and agreement on decided pixels (those whose reference top-2 margin exceeds twice
    1e-4 + 1e-5 max|logit|, export verification's tolerance).

    The torch options apply to torch CANDIDATES; REFERENCE always runs eager fp32.

    Example: isdnet-deploy compare reference runs/demo/isdnet_deepglobe.onnx --random 3

    Example: isdnet-deploy compare reference --torch-variant compile=inductor
    --torch-variant compile=inductor,precision=bf16 --size 512x512
    """
    from tqdm.auto import tqdm

    from ..metrics.parity import disagreement_heatmap
    from ..metrics.segmentation import ConfusionAccumulator

    if not candidates and not torch_variants:
        raise click.UsageError("nothing to compare: give a CANDIDATE or a --torch-variant")
    if torch_variants and not is_torch_artifact(reference_path):
        raise click.UsageError("--torch-variant runs REFERENCE under other settings, so "
                               "REFERENCE must be a .pth checkpoint or 'reference'")
    require_torch_artifact(torch_options, candidates,
                           instead=" (REFERENCE always runs eager fp32); --torch-variant "
                                   "compares REFERENCE under such settings")
    check_torch_settings((torch_options, *torch_variants), device)
    prof = get_profile(profile)
    hw = size or prof.test_size
    json_file = check_json_path(json_path)
    heatmap_file = output_file(heatmap, ".png")
    if device != "cpu" and verify_on is not None and "openvino" in verify_on:
        raise click.UsageError("OpenVINO runs on the CPU: drop openvino from --verify-on or "
                               "use --device cpu")
    verify_on = consumers(("onnxruntime",) if device != "cpu" else verify_on)
    inputs, described = _inputs(images, labels, random_count, hw, prof, max_pixels)
    scale = images is not None

    with contextlib.ExitStack() as stack:
        opened = []  # (path, segmenter): an .onnx CANDIDATE once per consumer
        for index, path in enumerate((*candidates, reference_path)):  # files first: quick,
            candidate = index < len(candidates)                        # and they fail fast
            for backend in _backends(path, verify_on, candidate):
                segmenter, _ = open_artifact(
                    path, profile=prof.name if path == REFERENCE else None, device=device,
                    threads=threads, scale=scale, backend=backend,
                    torch_options=torch_options if candidate else None)
                opened.append((path, stack.enter_context(segmenter)))
        ref_path, ref = opened[-1]
        # (path, display name, segmenter, what names its heatmap file)
        others = [(path, _label(path, seg), seg,
                   f"{Path(path).stem}_{seg.backend.name}" if len(verify_on) > 1 else path)
                  for path, seg in opened[:-1]]
        for options in torch_variants:
            name = f"pytorch {options.label}"
            others.append((reference_path, name,
                           stack.enter_context(_variant(ref, options, threads, scale)),
                           name.replace(" ", "_")))
        num_classes = ref.contract.num_classes
        for path, _, segmenter, _ in others:
            if segmenter.contract.num_classes != num_classes:
                raise IsdnetError(f"{path} has {segmenter.contract.num_classes} classes, the "
                                  f"reference {num_classes}; compare artifacts of the same model")
        ref_name = _label(ref_path, ref)
        sides = [segmenter_side(name, seg) for _, name, seg, _ in others]
        tolerance = relative_tolerance(DECIDED_ATOL, DECIDED_RTOL)
        comparator = Comparator(segmenter_side(ref_name, ref), sides, num_classes,
                                tolerance=tolerance)
        accuracy = {name: ConfusionAccumulator(num_classes)
                    for name in [ref_name, *(name for name, _ in sides)]} if labels else {}
        worst: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

        warn_random_weights([(_label(path, seg), seg.contract) for path, seg in opened])
        click.echo(printable(f"comparing {len(sides)} candidate(s) with {ref_name} on "
                             f"{described}"), err=True)
        for item in tqdm(inputs, desc="compare", unit="input",
                         disable=not show_progress(no_progress)):
            image = item.load_image()
            mask = item.load_mask() if item.load_mask else None
            outputs = comparator.add((image, mask))
            for name, accumulator in accuracy.items():
                accumulator.update(outputs[name].labels, mask)
            for stats in comparator.stats:
                if stats.worst_index == comparator.count - 1:
                    worst[stats.name] = (image, outputs[ref_name].labels,
                                         outputs[stats.name].labels)

    summaries = []
    for (path, _, segmenter, _), stats in zip(others, comparator.stats, strict=True):
        summary = stats.to_dict()
        options = getattr(segmenter.backend, "options", None)
        summary.update(path=path, backend=segmenter.backend.name,
                       precision=segmenter.contract.precision,
                       torch_options=None if options is None else options.as_kwargs())
        summaries.append(summary)
    rows = [[s["name"], scientific(s["logits"]["max_abs_diff"]) if s["logits"] else "-",
             scientific(s["logits"]["mean_abs_diff"]) if s["logits"] else "-",
             f"{s['logits']['min_cosine_similarity']:.6f}" if s["logits"] else "-",
             percent(s["agreement"], 3, "%"), percent(s["decided_agreement"], 3, "%"),
             percent(s["miou_vs_reference"], 3, "%")]
            for s in summaries]
    click.echo(printable(f"reference: {ref_name}; inputs: {described}; .onnx candidates run "
                         f"on: {', '.join(verify_on)}"))
    click.echo(printable(grid(["candidate", "max |logit diff|", "mean |logit diff|",
                               "cosine (min)", "argmax agreement", "decided agreement",
                               "mIoU vs reference"], rows)))
    if any(s["logits"] is None for s in summaries):
        click.echo("note: '-' = labels-only artifact (or reference): agreement and mIoU only")
    click.echo(f"note: decided pixels: reference top-2 margin > 2 x ({DECIDED_ATOL:g} + "
               f"{DECIDED_RTOL:g} max|logit|), judged at the network's size; their count is "
               "'decided_pixels' in --json")

    result: dict[str, Any] = {"schema": "isdnet_deploy.compare/1", "reference": ref_name,
                              "inputs": described, "verified_on": list(verify_on),
                              "candidates": summaries,
                              "decided_tolerance": {"atol": DECIDED_ATOL,
                                                    "rtol": DECIDED_RTOL}}
    if accuracy:
        exclude = [c for c in prof.miou_excludes if c in ref.contract.classes]
        result["accuracy"] = _accuracy_report(accuracy, ref_name, ref.contract.classes, exclude)
    for i, stats in enumerate(comparator.stats):
        if heatmap_file is not None and stats.name in worst:
            image, ref_labels, cand_labels = worst[stats.name]
            written = disagreement_heatmap(ref_labels, cand_labels,
                                           _heatmap_path(heatmap_file, i, len(sides),
                                                         others[i][3]), image=image)
            click.echo(printable(f"wrote {written} ({stats.worst_disagree} disagreeing "
                                 "pixels)"))
    write_json(json_file, result)


def _accuracy_report(accuracy: dict, ref_name: str, class_names: list[str],
                     exclude: list[str]) -> dict[str, Any]:
    """The paper's metrics per backend and their change from the reference, printed."""
    scored = {name: acc.scores(class_names, exclude) for name, acc in accuracy.items()}
    base = scored[ref_name]
    rows = [[name, percent(s["miou"], 3, "%"),
             "-" if name == ref_name else points(s["miou"], base["miou"]),
             percent(s["mean_f1"], 3, "%"), percent(s["pixel_accuracy"], 3, "%")]
            for name, s in scored.items()]
    click.echo(f"accuracy against the ground truth (mIoU over {', '.join(base['evaluated'])}):")
    click.echo(printable(grid(["backend", "mIoU", "ΔmIoU (points)", "mF1", "pixel acc"], rows)))
    names = list(scored)
    per_class = [[c, *(percent(scored[n]["classes"][c]["iou"], 3, "%") for n in names)]
                 for c in class_names]
    click.echo(grid(["class IoU", *(f"[{i}]" for i in range(len(names)))], per_class))
    click.echo(printable("  " + "; ".join(f"[{i}] {n}" for i, n in enumerate(names))))
    return {"backends": scored,
            "delta_vs_reference": {n: {k: s[k] - base[k] for k in
                                       ("miou", "mean_f1", "pixel_accuracy")}
                                   for n, s in scored.items() if n != ref_name}}
