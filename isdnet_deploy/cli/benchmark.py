"""``isdnet-deploy benchmark`` (the paper's FPS protocol) and ``isdnet-deploy compare``
(numerical and label parity of artifacts against the reference, optionally accuracy)."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import click
import numpy as np

from ..benchmark import report
from ..benchmark.protocol import PAPER_ITERS, PAPER_WARMUP
from ..errors import IsdnetError, missing
from ..profiles import IGNORE_INDEX, Profile, get_profile, parse_size

RANDOM_WARNING = ("WARNING: no checkpoint given: the PyTorch reference has RANDOM weights; "
                  "predictions are meaningless, timings and parity are real.")
REFERENCE_WORD = "reference"


def warn_random() -> None:
    click.secho(RANDOM_WARNING, fg="yellow", bold=True, err=True)


def check_out_file(path: str | None, suffix: str) -> Path | None:
    """Fail before a long run, not after it, when an output can't be written."""
    if path is None:
        return None
    target = Path(path)
    if target.suffix.lower() != suffix:
        raise IsdnetError(f"output {target} should end with {suffix}")
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise IsdnetError(f"output directory {parent} does not exist; create it first")
    return target


def reference_backend(checkpoint: str | None, prof: Profile, device: str,
                      threads: int | None) -> Any:
    """The PyTorch reference as a runtime backend: the checkpoint, or random weights
    (warned loudly) with the profile's class count."""
    try:
        import torch  # noqa: F401
    except ImportError:
        raise missing("torch", why="the PyTorch reference needs it; pass --no-reference "
                      "to time artifacts only") from None
    from ..model.checkpoint import build_model, load_model
    from ..runtime.torch_backend import TorchBackend

    _check_torch_device(device)
    if checkpoint:
        model = load_model(checkpoint)
        # --profile names the classes only when the checkpoint has that many
        profile = prof.name if model.num_classes == prof.num_classes else None
        return TorchBackend(None, device, model=model, profile=profile, threads=threads)
    warn_random()
    previous = logging.getLogger("isdnet_deploy").level
    logging.getLogger("isdnet_deploy").setLevel(logging.ERROR)  # warned above already
    try:
        model = build_model(prof.num_classes)
    finally:
        logging.getLogger("isdnet_deploy").setLevel(previous)
    return TorchBackend(None, device, model=model, profile=prof.name, threads=threads)


def _check_torch_device(device: str) -> None:
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise IsdnetError("--device cuda asked for, but torch sees no CUDA GPU; use "
                          "--device cpu")


def open_artifact(path: str, backend: str, device: str, threads: int | None,
                  scale: bool) -> Any:
    from .. import runtime

    name = runtime.backend_for(path, backend)
    options = {"threads": threads} if threads and name in ("onnxruntime", "torch") else {}
    return runtime.load(path, backend, device, scale=scale, **options)


# --- benchmark ------------------------------------------------------------------------------

@click.command("benchmark")
@click.argument("artifacts", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None,
              help="Official ISDNet .pth for the PyTorch reference; without it, random weights "
                   "(loudly warned; timings are still real).")
@click.option("--profile", default="deepglobe", show_default=True,
              help="deepglobe, inria or cityscapes (classes and default size).")
@click.option("--size", default=None,
              help="Input HxW; default the profile's test size (DeepGlobe 1958x1958).")
@click.option("--warmup", type=click.IntRange(min=0), default=PAPER_WARMUP, show_default=True,
              help="Warm-up forwards per method (paper: 20).")
@click.option("--iters", type=click.IntRange(min=1), default=PAPER_ITERS, show_default=True,
              help="Timed forwards per method (paper: 100).")
@click.option("--interleave", is_flag=True,
              help="Also run A B A B ... rounds and report the median FPS ratio.")
@click.option("--rounds", type=click.IntRange(min=1), default=5, show_default=True,
              help="Rounds for --interleave.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--backend", default="auto", show_default=True,
              help="Backend for every ARTIFACT (auto: by extension; onnxruntime, tensorrt, "
                   "torch).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Intra-op threads for PyTorch and ONNX Runtime (default: the libraries').")
@click.option("--no-reference", is_flag=True,
              help="Leave out the PyTorch reference; the first ARTIFACT becomes the baseline.")
@click.option("--include-pyramid", is_flag=True,
              help="For external-pyramid artifacts, add a row that also computes the OpenCV "
                   "pyramid in every forward.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Write every measurement and the machine description here.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="Write an FPS bar chart with speed-ups (PNG).")
@click.option("--flops/--no-flops", default=True, show_default=True,
              help="Count the network's FLOPs (needs torch) for the GFLOP/s column.")
@click.option("--peak/--no-peak", default=True, show_default=True,
              help="Measure the machine's float32 matmul GFLOP/s for the '% of peak' column.")
@click.option("--ort-profile", is_flag=True,
              help="After timing, profile each ONNX Runtime artifact (separate session) and "
                   "print its top op types, stages and nodes.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the input.")
def benchmark_command(artifacts: tuple[str, ...], checkpoint: str | None, profile: str,
                      size: str | None, warmup: int, iters: int, interleave: bool, rounds: int,
                      device: str, backend: str, threads: int | None, no_reference: bool,
                      include_pyramid: bool, json_path: str | None, plot_path: str | None,
                      flops: bool, peak: bool, ort_profile: bool, seed: int) -> None:
    """Time the PyTorch reference and ARTIFACTs (.onnx, .engine, .pth) with the paper's
    FPS protocol: 20 warm-up + 100 timed forwards on a random 1x3xHxW input, FPS = 100 /
    total, the reference re-warmed before each later method.

    Each method times its engine forward only, on inputs prepared once.

    Example: isdnet-deploy benchmark runs/demo/isdnet_deepglobe.onnx --size 1024x1024
    """
    from ..benchmark.machine import machine_info
    from ..benchmark.methods import (
        format_ort_profile,
        measure_peak_gflops,
        profile_onnxruntime,
        segmenter_method,
        torch_method,
        unique_names,
    )
    from ..benchmark.protocol import run_interleaved, run_protocol

    prof = get_profile(profile)
    hw = parse_size(size) if size else prof.test_size
    json_file = check_out_file(json_path, ".json")
    plot_file = check_out_file(plot_path, ".png")
    if no_reference and not artifacts:
        raise IsdnetError("nothing to benchmark: --no-reference with no ARTIFACT; pass an "
                          ".onnx/.engine file or drop --no-reference")

    segmenters = [open_artifact(p, backend, device, threads, scale=False) for p in artifacts]
    reference = None if no_reference else reference_backend(checkpoint, prof, device, threads)
    flop_count = _flops(reference, checkpoint, prof, hw) if flops else None

    methods = []
    labels: list[str] = []
    if reference is not None:
        methods.append(torch_method(reference.model, hw, device=device, seed=seed,
                                    flops=flop_count))
        labels.append(Path(checkpoint).name if checkpoint else "random weights")
    notes = []
    for path, seg in zip(artifacts, segmenters, strict=True):
        methods.append(segmenter_method(seg, hw, seed=seed, flops=flop_count))
        labels.append(Path(path).name)
        if seg.contract.pyramid == "external":
            notes.append(f"{Path(path).name}: external-pyramid artifact, its row times the "
                         "engine only; the OpenCV pyramid runs outside"
                         + (" (see its '+OpenCV pyramid' row)" if include_pyramid else
                            " (add --include-pyramid for a row with it)"))
            if include_pyramid:
                methods.append(segmenter_method(seg, hw, seed=seed, flops=flop_count,
                                                include_pyramid=True))
                labels.append(Path(path).name)
    for method, name in zip(methods, unique_names([m.name for m in methods], labels),
                            strict=True):
        method.name = name

    peak_gflops = measure_peak_gflops(device) if peak else None
    thread_info = {"torch": threads, "onnxruntime_intra_op": threads} if threads else None
    machine = machine_info(thread_info)
    if peak_gflops:
        machine["matmul_gflops"] = peak_gflops
    click.echo(f"benchmark at {hw[0]}x{hw[1]} on {device}: {warmup} warm-up + {iters} timed "
               f"forwards per method" + ("" if (warmup, iters) == (PAPER_WARMUP, PAPER_ITERS)
                                         else " (the paper uses 20 + 100)"), err=True)
    results = run_protocol(methods, warmup, iters, peak_gflops=peak_gflops)
    inter = run_interleaved(methods, rounds, iters, warmup) if interleave else None

    click.echo(report.format_table(results, machine))
    if inter is not None:
        click.echo(report.format_interleave(inter))
    if flop_count:
        notes.append(f"GFLOP/s: {flop_count / 1e9:.1f} GFLOP per forward at {hw[0]}x{hw[1]} "
                     "(the reference network's count, 2 per multiply-add) x FPS")
    for note in notes:
        click.echo(f"note: {note}")

    profiles = {}
    if ort_profile:
        for path, seg in zip(artifacts, segmenters, strict=True):
            if seg.backend.name != "onnxruntime":
                continue
            summary = profile_onnxruntime(path, hw, threads=threads, device=device, seed=seed)
            profiles[Path(path).name] = summary
            click.echo(format_ort_profile(summary, f"ONNX Runtime profile of {Path(path).name}"))

    settings = {"size": list(hw), "profile": prof.name, "warmup": warmup, "iters": iters,
                "device": device, "threads": threads, "seed": seed,
                "reference": None if reference is None else (checkpoint or "random weights"),
                "artifacts": list(artifacts), "flops_per_forward": flop_count,
                "rounds": rounds if interleave else None, "notes": notes,
                "ort_profile": profiles or None}
    if json_file is not None:
        report.write_json(json_file, report.to_json(results, inter, machine, settings))
        click.echo(f"wrote {json_file}")
    if plot_file is not None:
        report.plot_fps(results, plot_file, title=f"ISDNet {hw[0]}x{hw[1]}, {device}")
        click.echo(f"wrote {plot_file}")
    for seg in segmenters:
        seg.close()


def _flops(reference: Any, checkpoint: str | None, prof: Profile,
           hw: tuple[int, int]) -> float | None:
    from ..benchmark.methods import count_model_flops

    if reference is not None:
        return count_model_flops(reference.model, hw)
    try:
        from ..model.isdnet import ISDNet
    except ImportError:
        return None
    # FLOPs do not depend on the weights: an untrained network of the right shape will do.
    return count_model_flops(ISDNet(num_classes=prof.num_classes), hw)


# --- compare --------------------------------------------------------------------------------

def _label(path: str | None, seg: Any) -> str:
    if path is None:
        return "pytorch (random weights)"
    return f"{Path(path).name} ({seg.backend.name} {seg.contract.precision})"


class _Candidate:
    """Running parity figures of one candidate against the reference."""

    def __init__(self, name: str, path: str, seg: Any, num_classes: int) -> None:
        self.name, self.path, self.seg = name, path, seg
        self.conf = np.zeros((num_classes, num_classes), np.int64)
        self.max_diff = 0.0
        self.sum_diff = 0.0
        self.values = 0
        self.cosine = math.inf
        self.nonfinite = 0
        self.ref_max = 0.0
        self.logits = seg.contract.output_kind == "logits"
        self.worst: tuple[int, Any, np.ndarray, np.ndarray] | None = None

    def add(self, ref_out: dict, out: dict, ref_labels: np.ndarray, labels: np.ndarray,
            image: np.ndarray) -> None:
        from ..metrics.parity import logit_parity
        from ..metrics.segmentation import confusion_matrix

        if self.logits and "logits" in ref_out:
            if ref_out["logits"].shape != out["logits"].shape:
                raise IsdnetError(f"{self.name} gives logits of shape {out['logits'].shape}, the "
                                  f"reference {ref_out['logits'].shape}; they must share the "
                                  "profile's test scale")
            parity = logit_parity(ref_out["logits"], out["logits"])
            n = out["logits"].size
            self.max_diff = max(self.max_diff, parity["max_abs_diff"])
            self.sum_diff += parity["mean_abs_diff"] * n
            self.values += n
            self.cosine = min(self.cosine, parity["cosine_similarity"])
            self.nonfinite += parity["nonfinite"]
            self.ref_max = max(self.ref_max, parity["ref_max_abs"])
        conf = confusion_matrix(labels, ref_labels, len(self.conf), ignore_index=IGNORE_INDEX)
        self.conf += conf
        disagree = int(conf.sum() - np.trace(conf))
        if self.worst is None or disagree > self.worst[0]:
            self.worst = (disagree, image, ref_labels, labels)

    def summary(self) -> dict[str, Any]:
        from ..metrics.segmentation import scores

        result = scores(self.conf, [str(k) for k in range(len(self.conf))])
        total = int(self.conf.sum())
        logits = None
        if self.values:
            logits = {"max_abs_diff": self.max_diff, "mean_abs_diff": self.sum_diff / self.values,
                      "min_cosine_similarity": self.cosine, "nonfinite": self.nonfinite,
                      "reference_max_abs": self.ref_max}
        return {"name": self.name, "path": self.path, "backend": self.seg.backend.name,
                "precision": self.seg.contract.precision, "logits": logits,
                "agreement": float(np.trace(self.conf)) / total if total else math.nan,
                "disagree_pixels": total - int(np.trace(self.conf)), "pixels": total,
                "miou_vs_reference": result["miou"],
                "class_iou_vs_reference": [result["classes"][str(k)]["iou"]
                                           for k in range(len(self.conf))]}


def _inputs(images: str | None, labels: str | None, random: int, hw: tuple[int, int],
            prof: Profile) -> tuple[list[tuple[str, Any, Any]], str]:
    """(name, image loader, mask loader or None) per input, and a description."""
    from ..data.datasets import load_mask, naming_for, pair_files
    from ..data.images import read_image
    from ..data.samples import photo_like

    if labels is not None:
        if images is None:
            raise IsdnetError("--labels needs --images (the images the masks belong to)")
        pairs, _, _ = pair_files(images, labels, prof)
        return ([(p.image.name, lambda p=p: read_image(p.image),
                  lambda p=p: load_mask(p.label, prof)) for p in pairs],
                f"{len(pairs)} image/mask pairs from {images}")
    if images is not None:
        from ..data.datasets import list_images

        suffix = naming_for(prof).label_suffix
        files = [f for f in list_images(images) if not (suffix and f.stem.endswith(suffix))]
        return ([(f.name, lambda f=f: read_image(f), None) for f in files],
                f"{len(files)} images from {images}")
    if random < 1:
        raise IsdnetError("--random must be 1 or more when no --images are given")
    return ([(f"random seed {s}", lambda s=s: photo_like(*hw, s), None) for s in range(random)],
            f"{random} seeded photo-like random images of {hw[0]}x{hw[1]}")


def _heatmap_path(base: Path, index: int, count: int, name: str) -> Path:
    if count == 1:
        return base
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(name).stem)
    return base.with_name(f"{base.stem}-{index + 1}-{stem}{base.suffix}")


def _pct(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.3f}%"


def _sci(x: float | None) -> str:
    return "-" if x is None else f"{x:.3e}"


def _grid(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(c) for c in col) for col in zip(header, *rows, strict=True)]
    lines = ["  ".join(f"{c:<{w}}" if i == 0 else f"{c:>{w}}"
                       for i, (c, w) in enumerate(zip(r, widths, strict=True)))
             for r in [header, ["-" * w for w in widths], *rows]]
    return "\n".join(lines)


@click.command("compare")
@click.argument("reference_path", metavar="REFERENCE")
@click.argument("candidates", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--random", "random_count", type=click.IntRange(min=0), default=3,
              show_default=True, help="Seeded random inputs when no --images are given.")
@click.option("--images", type=click.Path(file_okay=False), default=None,
              help="Folder of images to compare on (test scale applied, as in evaluation).")
@click.option("--labels", type=click.Path(file_okay=False), default=None,
              help="Ground-truth masks for --images: adds mIoU, per-class IoU, F1 and pixel "
                   "accuracy per backend (DeepGlobe: may be the --images folder).")
@click.option("--size", default=None,
              help="HxW of the random inputs; default the profile's test size.")
@click.option("--profile", default="deepglobe", show_default=True,
              help="Profile for a random-weights reference and for reading masks.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None)
@click.option("--heatmap", type=click.Path(dir_okay=False), default=None,
              help="PNG of where each candidate's labels differ from the reference's (on the "
                   "input where they differ most); one file per candidate when several.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Write all figures as JSON.")
def compare_command(reference_path: str, candidates: tuple[str, ...], random_count: int,
                    images: str | None, labels: str | None, size: str | None, profile: str,
                    device: str, threads: int | None, heatmap: str | None,
                    json_path: str | None) -> None:
    """How closely each CANDIDATE reproduces REFERENCE (a .pth checkpoint, the word
    'reference' for the random-weights model, or any artifact): max/mean |logit diff|,
    cosine similarity, argmax agreement and mIoU of its labels against the reference's.

    Example: isdnet-deploy compare reference runs/demo/isdnet_deepglobe.onnx --random 3
    """
    from ..metrics.parity import disagreement_heatmap
    from ..metrics.segmentation import ConfusionAccumulator, jsonable

    prof = get_profile(profile)
    hw = parse_size(size) if size else prof.test_size
    json_file = check_out_file(json_path, ".json")
    heatmap_file = check_out_file(heatmap, ".png")
    inputs, described = _inputs(images, labels, random_count, hw, prof)
    scale = images is not None

    opened = [(path, open_artifact(path, "auto", device, threads, scale))
              for path in candidates]
    if reference_path == REFERENCE_WORD:
        from ..runtime.segmenter import Segmenter

        ref = Segmenter(reference_backend(None, prof, device, threads), scale=scale)
        ref_name = _label(None, ref)
    else:
        ref = open_artifact(reference_path, "auto", device, threads, scale)
        ref_name = _label(reference_path, ref)
    num_classes = ref.contract.num_classes
    cands = []
    for path, seg in opened:
        if seg.contract.num_classes != num_classes:
            raise IsdnetError(f"{path} has {seg.contract.num_classes} classes, the reference "
                              f"{num_classes}; compare artifacts of the same model")
        cands.append(_Candidate(_label(path, seg), path, seg, num_classes))
    class_names = ref.contract.classes
    exclude = [c for c in prof.miou_excludes if c in class_names]
    accuracy = {name: ConfusionAccumulator(num_classes)
                for name in [ref_name, *(c.name for c in cands)]} if labels else {}

    click.echo(f"comparing {len(cands)} candidate(s) with {ref_name} on {described}",
               err=True)
    for name, load_image, load_label in inputs:
        image = load_image()
        mask = load_label() if load_label else None
        ref_feeds, out_size = ref.feeds(image)
        ref_out = ref.run_feeds(ref_feeds)
        ref_labels = ref.finish(ref_out, out_size)
        if mask is not None:
            accuracy[ref_name].update(ref_labels, mask)
        for cand in cands:
            feeds, _ = cand.seg.feeds(image)
            out = cand.seg.run_feeds(feeds)
            cand_labels = cand.seg.finish(out, out_size)
            cand.add(ref_out, out, ref_labels, cand_labels, image)
            if mask is not None:
                accuracy[cand.name].update(cand_labels, mask)
        click.echo(f"  {name} done", err=True)

    summaries = [c.summary() for c in cands]
    rows = [[s["name"], _sci(s["logits"]["max_abs_diff"]) if s["logits"] else "-",
             _sci(s["logits"]["mean_abs_diff"]) if s["logits"] else "-",
             f"{s['logits']['min_cosine_similarity']:.6f}" if s["logits"] else "-",
             _pct(s["agreement"]), _pct(s["miou_vs_reference"])] for s in summaries]
    click.echo(f"reference: {ref_name}; inputs: {described}")
    click.echo(_grid(["candidate", "max |logit diff|", "mean |logit diff|", "cosine (min)",
                      "argmax agreement", "mIoU vs reference"], rows))
    if any(s["logits"] is None for s in summaries):
        click.echo("note: '-' = labels-only artifact (or reference): agreement and mIoU only")

    result: dict[str, Any] = {"schema": "isdnet_deploy.compare/1", "reference": ref_name,
                              "inputs": described, "candidates": summaries}
    if accuracy:
        result["accuracy"] = _accuracy_report(accuracy, ref_name, class_names, exclude)
    for i, cand in enumerate(cands):
        if heatmap_file is not None and cand.worst is not None:
            _, image, ref_labels, cand_labels = cand.worst
            written = disagreement_heatmap(ref_labels, cand_labels,
                                           _heatmap_path(heatmap_file, i, len(cands), cand.path),
                                           image=image)
            click.echo(f"wrote {written} ({cand.worst[0]} disagreeing pixels)")
    if json_file is not None:
        report.write_json(json_file, jsonable(result))
        click.echo(f"wrote {json_file}")
    for seg in [ref, *(c.seg for c in cands)]:
        seg.close()


def _accuracy_report(accuracy: dict, ref_name: str, class_names: list[str],
                     exclude: list[str]) -> dict[str, Any]:
    """The paper's metrics per backend and their change from the reference, printed."""
    scored = {name: acc.scores(class_names, exclude) for name, acc in accuracy.items()}
    base = scored[ref_name]
    rows = []
    for name, s in scored.items():
        delta = None if name == ref_name else s["miou"] - base["miou"]
        rows.append([name, _pct(s["miou"]), "-" if delta is None else f"{100 * delta:+.3f}",
                     _pct(s["mean_f1"]), _pct(s["pixel_accuracy"])])
    click.echo(f"accuracy against the ground truth (mIoU over {', '.join(base['evaluated'])}):")
    click.echo(_grid(["backend", "mIoU", "ΔmIoU (points)", "mF1", "pixel acc"], rows))
    names = list(scored)
    per_class = [[c, *(_pct(scored[n]["classes"][c]["iou"]) for n in names)]
                 for c in class_names]
    click.echo(_grid(["class IoU", *(f"[{i}]" for i in range(len(names)))], per_class))
    click.echo("  " + "; ".join(f"[{i}] {n}" for i, n in enumerate(names)))
    return {"backends": scored,
            "delta_vs_reference": {n: {k: s[k] - base[k] for k in
                                       ("miou", "mean_f1", "pixel_accuracy")}
                                   for n, s in scored.items() if n != ref_name}}
