"""The README's results table: PyTorch eager vs optimised PyTorch (torch.compile, bf16,
channels-last: ``--torch-variant``) vs ONNX Runtime (FP32, and INT8 where the quantizer is
available) vs OpenVINO (f32, bf16 where the CPU has native BF16, and the same INT8 Q/DQ
file) with the paper's FPS protocol, measured side by side in one run.

    python benchmarks/run_benchmarks.py                      # paper counts (20 + 100), slow
    python benchmarks/run_benchmarks.py --warmup 3 --iters 10 --rounds 3

Per size: Algorithm 1 for every method (the reference re-warmed before each), then an
interleaved run (A B C A B C ...) whose median per-round ratio is the speed-up to trust on
a shared machine. Torch variants are compiled before timing (their compile time is a column
of its own) and checked against eager fp32 with the comparator on held-out synthetic
images; a variant that fails to compile is skipped with the cause. The other engines are
checked the same way against ONNX Runtime fp32; OpenVINO bf16 on a CPU without native BF16
is skipped with that reason (OpenVINO would quietly run f32). Also: prefetch Pipeline
vs sequential throughput for an external-pyramid artifact (JPEG decode + OpenCV pyramid
overlapped with inference).
Writes results.md, results.json and results.png into --output.
"""

from __future__ import annotations

import io
import logging
import os
import re
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click

from isdnet_deploy.benchmark import report
from isdnet_deploy.benchmark.machine import machine_info
from isdnet_deploy.benchmark.methods import (
    count_model_flops,
    measure_peak_gflops,
    segmenter_method,
    torch_backend_method,
    torch_name,
)
from isdnet_deploy.benchmark.protocol import (
    PAPER_ITERS,
    PAPER_WARMUP,
    MethodResult,
    run_interleaved,
    run_protocol,
)
from isdnet_deploy.data.images import atomic_write_bytes
from isdnet_deploy.data.samples import photo_like
from isdnet_deploy.errors import IsdnetError
from isdnet_deploy.profiles import get_profile, parse_size
from isdnet_deploy.runtime.backend import Device
from isdnet_deploy.runtime.torch_backend import TorchOptions

# eager fp32 (the baseline) is always timed; these by default beside it on the CPU
CPU_VARIANTS = ("compile=inductor", "compile=inductor,precision=bf16", "channels_last")

log = logging.getLogger("run_benchmarks")


def _quantizer() -> Any:
    try:
        from isdnet_deploy.engine.precision import quantize_int8
    except ImportError:
        return None
    return quantize_int8


def _model(checkpoint: str | None, num_classes: int) -> Any:
    from isdnet_deploy.model.checkpoint import build_model, load_model

    if checkpoint:
        return load_model(checkpoint)
    click.secho("WARNING: no --checkpoint: RANDOM weights (speed does not depend on them; "
                "accuracy columns would be meaningless, so there are none)", fg="yellow",
                err=True)
    return build_model(num_classes)


def _artifacts(model: Any, out: Path, profile: str, int8: str, calib: int,
               pipeline: bool) -> tuple[dict[str, Path], dict[str, Any] | None]:
    """The ONNX files to time, and the INT8 quantizer's own accuracy check (or None)."""
    import warnings

    from isdnet_deploy.export.onnx_export import export_onnx

    paths = {"fp32": out / "isdnet_fp32.onnx"}
    int8_check = None
    export_onnx(model, paths["fp32"], profile=profile)
    click.echo(f"exported {paths['fp32']}", err=True)
    if int8 != "none":
        quantize = _quantizer()
        if quantize is None:
            click.echo("INT8 skipped: isdnet_deploy.engine.precision.quantize_int8 is not "
                       "available", err=True)
        else:
            paths["int8"] = out / "isdnet_int8.onnx"
            start = time.perf_counter()
            images = _calibration_images(out / "calibration", profile, calib)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # its verdict goes into the table instead
                checked = quantize(paths["fp32"], paths["int8"], images, max_images=calib,
                                   target=int8, progress=False)
            int8_check = {"agreement_vs_fp32": checked.agreement,
                          "miou_vs_fp32": checked.miou_vs_fp32,
                          "verify_size": list(checked.size), "calibration": checked.calibration,
                          "target": int8}
            click.echo(f"quantized {paths['int8']} in {time.perf_counter() - start:.0f} s; "
                       f"agrees with FP32 on {checked.agreement:.2%} of pixels", err=True)
    if pipeline:
        paths["external"] = out / "isdnet_fp32_external_pyramid.onnx"
        export_onnx(model, paths["external"], pyramid="external", profile=profile)
    return paths, int8_check


def _openvino_segmenters(paths: dict[str, Path], options: dict[str, Any]
                         ) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """OpenVINO f32 and bf16 on the fp32 file and f32 on the INT8 Q/DQ file (its precision
    is in the graph), as segmenters by method name; and the methods skipped, with why (bf16
    on a CPU without native BF16)."""
    from isdnet_deploy import runtime

    engines, skips = {}, []
    wanted = [("openvino f32", "fp32", "f32"), ("openvino bf16", "fp32", "bf16"),
              ("openvino int8", "int8", "f32")]
    for name, kind, precision in wanted:
        if kind not in paths:
            continue
        try:
            engines[name] = runtime.load(paths[kind], backend="openvino", scale=False,
                                         precision=precision, **options)
        except IsdnetError as exc:
            if precision != "bf16":
                raise
            click.echo(f"skipped {name}: {exc}", err=True)
            skips.append((name, str(exc)))
    return engines, skips


def _calibration_images(folder: Path, profile: str, count: int) -> list[Path]:
    """``count`` + 4 synthetic images of the profile's kind (data.samples): the quantizer
    calibrates on ``count`` and verifies on the 4 it holds out."""
    from isdnet_deploy.data.samples import generate_sample_set, sample_dirs

    generate_sample_set(folder, profile, count=count + 4, size=(1024, 1024), seed=1)
    images_dir, labels_dir = sample_dirs(folder, profile)
    written = sorted(p for p in images_dir.iterdir() if p.is_file())
    return [p for p in written if images_dir != labels_dir or "_mask" not in p.name]


def _int8_accuracy(segmenters: dict[str, Any], profile: str, size: tuple[int, int],
                   count: int) -> dict[str, Any]:
    """FP32 vs INT8 labels on held-out synthetic images at ``size`` (seeds the calibration
    never used), and each one's pixel accuracy against the images' exact masks."""
    import numpy as np

    from isdnet_deploy.data.samples import synthetic_pair

    agree, acc_fp32, acc_int8 = [], [], []
    for i in range(count):
        image, truth = synthetic_pair(profile, size[0], size[1], [2, i])
        fp32, int8 = segmenters["fp32"].predict(image), segmenters["int8"].predict(image)
        agree.append(float(np.mean(fp32 == int8)))
        acc_fp32.append(float(np.mean(fp32 == truth)))
        acc_int8.append(float(np.mean(int8 == truth)))
    return {"size": list(size), "images": count, "agreement_vs_fp32": float(np.mean(agree)),
            "min_agreement": float(np.min(agree)), "pixel_accuracy_fp32":
            float(np.mean(acc_fp32)), "pixel_accuracy_int8": float(np.mean(acc_int8))}


def _torch_parity(reference: Any, variants: dict[str, Any], profile: str,
                  size: tuple[int, int], count: int,
                  reference_name: str = "pytorch eager") -> list[dict[str, Any]]:
    """Each variant (torch settings, or another engine) against the reference backend
    (eager fp32, or ONNX Runtime fp32) through the one comparator, on held-out synthetic
    images at ``size`` (seeds the INT8 calibration never used): max |logit diff|, argmax
    agreement, and agreement on decided pixels (reference top-2 margin above twice export
    verification's tolerance)."""
    from isdnet_deploy.cli.compare import DECIDED_ATOL, DECIDED_RTOL, segmenter_side
    from isdnet_deploy.data.samples import synthetic_pair
    from isdnet_deploy.metrics.comparator import compare, relative_tolerance
    from isdnet_deploy.runtime import Segmenter

    def side(name: str, backend: Any) -> Any:
        return segmenter_side(name, Segmenter(backend, scale=False))

    images = [(synthetic_pair(profile, size[0], size[1], [3, i])[0], None)
              for i in range(count)]
    result = compare(side(reference_name, reference),
                     [side(name, backend) for name, backend in variants.items()], images,
                     reference.contract.num_classes,
                     tolerance=relative_tolerance(DECIDED_ATOL, DECIDED_RTOL))
    return [{"size": list(size), "images": count, "method": stats.name,
             "max_abs_diff": stats.max_abs_diff, "reference_max_abs": stats.reference_max_abs,
             "agreement": stats.agreement, "decided_agreement": stats.decided_agreement,
             "decided_pixels": stats.decided_pixels, "pixels": stats.pixels}
            for stats in result.candidates]


_MEMORY_CHILD = """
import json, sys
from isdnet_deploy.benchmark.protocol import process_memory_kib
kind, path, threads = sys.argv[1], sys.argv[2], sys.argv[5]
h, w = int(sys.argv[3]), int(sys.argv[4])
def status_mib(field):
    return process_memory_kib(field)[field] / 1024.0
if kind == "torch":
    import torch
    from isdnet_deploy.benchmark.methods import random_input
    from isdnet_deploy.model.checkpoint import build_model, load_model
    if threads != "-":
        torch.set_num_threads(int(threads))
    model = load_model(path) if path != "-" else build_model()
    x = torch.from_numpy(random_input(h, w))
    loaded = status_mib("VmRSS")
    with torch.no_grad():
        for _ in range(2):
            model(x)
else:
    from isdnet_deploy import runtime
    from isdnet_deploy.benchmark.methods import protocol_feeds
    seg = runtime.load(path, scale=False, **({} if threads == "-" else {"threads": int(threads)}))
    feeds, _ = protocol_feeds(seg, (h, w))
    loaded = status_mib("VmRSS")
    for _ in range(2):
        seg.backend.run(feeds)
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across fork + exec.
print(json.dumps({"loaded_mib": loaded, "torch_imported": "torch" in sys.modules,
                  "peak_mib": status_mib("VmHWM")}))
"""


def _memory(checkpoint: str | None, paths: dict[str, Path], size: tuple[int, int],
            threads: int | None) -> list[dict[str, Any]]:
    """Peak RSS of a fresh process that loads one method and runs two forwards at ``size``
    (its VmHWM): what a deployment needs, free of whatever this process holds."""
    import json
    import subprocess

    click.echo(f"{size[0]}x{size[1]}: peak memory, one fresh process per method", err=True)
    jobs = [("pytorch eager", "torch", checkpoint or "-")]
    jobs += [(f"onnxruntime {kind}", "onnxruntime", str(paths[kind]))
             for kind in ("fp32", "int8") if kind in paths]
    rows = []
    for name, kind, path in jobs:
        done = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, kind, path, str(size[0]),
                               str(size[1]), str(threads or "-")],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise click.ClickException(f"memory run of {name} failed: "
                                       f"{done.stderr.strip().splitlines()[-1:]}")
        rows.append({"name": name, **json.loads(done.stdout.strip().splitlines()[-1])})
    return rows


def _pipeline_throughput(path: Path, size: tuple[int, int], frames: int,
                         threads: int | None) -> dict[str, Any]:
    """Frames/s of decoding JPEGs + pyramid + inference, sequential vs overlapped."""
    import cv2

    from isdnet_deploy import runtime
    from isdnet_deploy.data.images import read_image

    options = {"threads": threads} if threads else {}
    segmenter = runtime.load(path, scale=False, **options)
    pipe = runtime.Pipeline(segmenter, loader=read_image)
    with tempfile.TemporaryDirectory(prefix="isdnet-pipeline-") as work:
        files = []
        for i in range(frames):
            files.append(Path(work, f"{i}.jpg"))
            cv2.imwrite(str(files[-1]), photo_like(*size, seed=i)[:, :, ::-1])
        list(pipe.sequential(files[:1]))  # warm-up
        timings = {}
        for mode, run in (("sequential", pipe.sequential), ("pipeline", pipe),
                          ("sequential_again", pipe.sequential), ("pipeline_again", pipe)):
            start = time.perf_counter()
            list(run(files))
            timings[mode] = frames / (time.perf_counter() - start)
    segmenter.close()
    sequential = (timings["sequential"] + timings["sequential_again"]) / 2
    overlapped = (timings["pipeline"] + timings["pipeline_again"]) / 2
    return {"size": list(size), "frames": frames, "runs_each": 2, "sequential_fps": sequential,
            "pipeline_fps": overlapped, "ratio": overlapped / sequential, "raw": timings}


def _rows(size: tuple[int, int], results: list[MethodResult], medians: dict[str, float],
          ) -> list[list[str]]:
    def num(x: float | None, digits: int = 2) -> str:
        return "-" if x is None else f"{x:.{digits}f}"

    return [[f"{size[0]}x{size[1]}", r.name, num(r.fps, 3), f"{r.speedup:.2f}x",
             f"{medians[r.name]:.2f}x", num(r.median_ms, 0), num(r.p90_ms, 0),
             num(r.peak_host_mib, 0), num(r.gflops_per_s, 1), num(r.percent_of_peak, 1),
             num(r.compile_s, 0)]
            for r in results]


def _parity_lines(parity: list[dict[str, Any]], weights: str,
                  title: str = "Torch variants against eager fp32") -> list[str]:
    if not parity:
        return []
    lines = ["", f"{title} (the comparator, held-out synthetic images; model: {weights}"
             + ("; RANDOM weights: a random ISDNet flips labels under any rounding, so only "
                "the fp32 rows' decided-pixel agreement means anything" if
                weights == "random weights" else "") + "):", "",
             "| size | method | images | max abs logit diff | argmax agreement | decided "
             "agreement (decided pixels) |", "|---|---|---:|---:|---:|---:|"]
    lines += [f"| {p['size'][0]}x{p['size'][1]} | {p['method']} | {p['images']} | "
              f"{p['max_abs_diff']:.2e} | {p['agreement']:.4%} | {p['decided_agreement']:.4%} "
              f"({p['decided_pixels'] / max(p['pixels'], 1):.1%}) |" for p in parity]
    return lines


def _markdown(rows: list[list[str]], machine: dict, settings: dict,
              pipeline: dict | None) -> str:
    header = ["size", "method", "FPS", "speed-up (protocol)", "speed-up (interleaved median)",
              "latency median ms", "p90 ms", "peak host MiB", "GFLOP/s", "% of peak",
              "compile s"]
    packages = machine["packages"]
    lines = [
        f"Measured {settings['date']} on {machine['cpu_model']} "
        f"({machine['physical_cores']} cores), {settings['threads_text']}; float32 matmul peak "
        f"{machine.get('matmul_gflops', 0):.0f} GFLOP/s; torch "
        f"{packages.get('torch')}, onnxruntime {packages.get('onnxruntime')}, openvino "
        f"{packages.get('openvino')}.",
        f"Protocol: {settings['warmup']} warm-up + {settings['iters']} timed forwards per method "
        f"on a random 1x3xHxW input, re-warm rule; interleaved: {settings['rounds']} rounds of "
        "the same. Engine forward only (inputs prepared once). Load average during the run: "
        f"{settings['load_start']:.1f} at start, {settings['load_end']:.1f} at the end.",
        "GFLOP/s = the network's FLOPs at that size (2 per multiply-add) x FPS; % of peak is "
        "of the float32 matmul peak, so INT8 (integer kernels) can exceed 100%. compile s: "
        "torch.compile's forwards before timing (until one compiled nothing new), not timed.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if i < 2 else "---:" for i in range(len(header))) + "|",
        *("| " + " | ".join(r) + " |" for r in rows),
    ]
    lines += _parity_lines(settings.get("torch_parity") or [], settings["reference"])
    lines += _parity_lines(settings.get("engine_parity") or [], settings["reference"],
                           "Engines against ONNX Runtime fp32")
    lines += [f"Skipped {item['method']} at {item['size']}: {item['reason']}"
              for item in settings.get("skipped") or []]
    check = settings.get("int8_check")
    if check:
        lines += ["", f"INT8 accuracy, the quantizer's own check at {check['verify_size'][0]}x"
                  f"{check['verify_size'][1]} (calibration: {check['calibration']}): labels "
                  f"agree with FP32 on {check['agreement_vs_fp32']:.2%} of pixels, mIoU vs FP32 "
                  f"{check['miou_vs_fp32']:.3f}"
                  + (" -- below 99%: its speed is NOT a deployable result." if
                     check["agreement_vs_fp32"] < 0.99 else ".")]
    accuracy = settings.get("int8_accuracy")
    if accuracy:
        weights = settings["reference"]
        lines += ["", f"INT8 vs FP32 on held-out synthetic {settings['profile']}-like images "
                  f"(model: {weights}; pixel accuracy is against the images' exact masks"
                  + ("; RANDOM weights make these numbers meaningless" if
                     weights == "random weights" else "") + "):", "",
                  "| size | images | INT8 = FP32 labels (mean) | worst image | FP32 pixel acc "
                  "| INT8 pixel acc |", "|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {a['size'][0]}x{a['size'][1]} | {a['images']} | "
                  f"{a['agreement_vs_fp32']:.2%} | {a['min_agreement']:.2%} | "
                  f"{a['pixel_accuracy_fp32']:.2%} | {a['pixel_accuracy_int8']:.2%} |"
                  for a in accuracy]
    memory = settings.get("memory")
    if memory:
        lines += ["", f"Peak memory at {settings['memory_size']}, one fresh process per method "
                  "(load, then two forwards; VmHWM): "
                  + ", ".join(f"{m['name']} {m['peak_mib']:.0f} MiB (after loading "
                              f"{m['loaded_mib']:.0f} MiB, "
                              f"{'torch imported' if m['torch_imported'] else 'no torch'})"
                              for m in memory) + "."]
    if pipeline:
        lines += ["", f"Prefetch pipeline (external-pyramid artifact, {pipeline['frames']} JPEG "
                  f"frames of {pipeline['size'][0]}x{pipeline['size'][1]}: decode + OpenCV "
                  f"pyramid overlapped with inference): {pipeline['pipeline_fps']:.3f} FPS vs "
                  f"{pipeline['sequential_fps']:.3f} FPS sequential "
                  f"({pipeline['ratio']:.2f}x)."]
    return _without_folders("\n".join(lines) + "\n")


def _without_folders(text: str) -> str:
    """results.md is committed and read elsewhere: absolute paths of this machine's scratch
    folders (checkpoint, calibration images) would mean nothing there, so they keep only
    their last component (results.json keeps the full paths)."""
    return re.sub(r"(?<![\w.])/(?:[^\s/;:()]+/)+([^\s/;:()]+)", r"\1", text)


def _plot(per_size: dict[str, tuple[list[MethodResult], dict[str, float]]], path: Path) -> None:
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    sizes = list(per_size)
    names = [r.name for r in next(iter(per_size.values()))[0]]
    fig = Figure(figsize=(2.2 + 2.4 * len(sizes), 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    width = 0.8 / len(names)
    colours = ["#7f7f7f", "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2"]
    for i, name in enumerate(names):
        # a variant skipped at one size (compile failure) has no bar there
        fps = [next((r.fps for r in per_size[s][0] if r.name == name), 0.0) for s in sizes]
        ratios = [per_size[s][1].get(name, 0.0) for s in sizes]
        bars = ax.bar(np.arange(len(sizes)) + (i - (len(names) - 1) / 2) * width, fps, width,
                      label=name, color=colours[i % len(colours)])
        ax.bar_label(bars, labels=[f"{r:.2f}x" for r in ratios], padding=2, fontsize=8)
    ax.set_xticks(np.arange(len(sizes)), sizes)
    ax.set_ylabel("throughput (FPS)")
    ax.set_title("ISDNet on the CPU (label: interleaved median speed-up vs PyTorch)")
    ax.legend()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    atomic_write_bytes(path, buffer.getvalue())


@click.command()
@click.option("--sizes", default="1024x1024,1958x1958", show_default=True,
              help="Comma-separated HxW sizes.")
@click.option("--warmup", type=click.IntRange(min=0), default=PAPER_WARMUP, show_default=True)
@click.option("--iters", type=click.IntRange(min=1), default=PAPER_ITERS, show_default=True)
@click.option("--rounds", type=click.IntRange(min=1), default=5, show_default=True,
              help="Interleaved rounds per size.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Intra-op threads for torch and ONNX Runtime (default: the libraries').")
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None)
@click.option("--profile", default="deepglobe", show_default=True)
@click.option("--int8", type=click.Choice(["cpu", "tensorrt", "none"]), default="cpu",
              show_default=True,
              help="Include ONNX Runtime INT8 in this Q/DQ form (cpu: u8 activations that "
                   "ONNX Runtime's x86 kernels fuse; tensorrt: the symmetric form for TensorRT).")
@click.option("--calib", type=click.IntRange(min=1), default=16, show_default=True,
              help="Synthetic calibration images (the profile's kind) for INT8.")
@click.option("--accuracy-images", type=click.IntRange(min=0), default=3, show_default=True,
              help="Held-out synthetic images per size for INT8 vs FP32 agreement (0: none); "
                   "meaningful with a --checkpoint trained on that task "
                   "(benchmarks/train_synthetic.py).")
@click.option("--memory-size", default="4000x4000", show_default=True,
              help="Size for a one-forward peak-memory comparison ('none' to skip); default "
                   "the Inria test size.")
@click.option("--pipeline/--no-pipeline", default=True, show_default=True,
              help="Measure Pipeline vs sequential for an external-pyramid artifact.")
@click.option("--pipeline-frames", type=click.IntRange(min=2), default=6, show_default=True)
@click.option("-o", "--output", type=click.Path(file_okay=False), default="benchmarks/results",
              show_default=True)
@click.option("--artifacts", type=click.Path(file_okay=False), default=None,
              help="Keep the exported ONNX files here (default: a temporary folder).")
@click.option("--torch-variant", "torch_variants", multiple=True, default=CPU_VARIANTS,
              show_default=True,
              help="PyTorch settings timed beside eager fp32 (repeat; 'none' for no variant): "
                   "compile=none|inductor[:MODE], precision=fp32|bf16, channels_last.")
@click.option("--parity-images", type=click.IntRange(min=0), default=2, show_default=True,
              help="Held-out synthetic images per size for the torch variants' parity with "
                   "eager fp32 and the engines' with ONNX Runtime fp32 (0: none).")
@click.option("--openvino/--no-openvino", default=None,
              help="Time OpenVINO f32 / bf16 / int8 beside ONNX Runtime  [default: when "
                   "openvino is installed].")
def main(sizes: str, warmup: int, iters: int, rounds: int, threads: int | None,
         checkpoint: str | None, profile: str, int8: str, calib: int, accuracy_images: int,
         memory_size: str, pipeline: bool, pipeline_frames: int, output: str,
         artifacts: str | None, torch_variants: tuple[str, ...], parity_images: int,
         openvino: bool | None) -> None:
    """Produce the README's results table (markdown + JSON + PNG)."""
    try:
        variants = tuple(TorchOptions.parse(v) for v in torch_variants if v != "none")
        for variant in variants:
            variant.check_device(Device())
    except IsdnetError as exc:
        raise click.UsageError(str(exc)) from None
    import importlib.util

    if openvino is None:
        openvino = importlib.util.find_spec("openvino") is not None
    elif openvino and importlib.util.find_spec("openvino") is None:
        raise click.ClickException("openvino is not installed; install it with: pip install "
                                   "'isdnet-deploy[openvino]' (or pass --no-openvino)")
    args = (sizes, warmup, iters, rounds, threads, checkpoint, profile, int8, calib,
            accuracy_images, memory_size, pipeline, pipeline_frames, variants, parity_images,
            openvino, Path(output))
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        _run(*args, Path(artifacts))
        return
    with tempfile.TemporaryDirectory(prefix="isdnet-bench-") as work:
        _run(*args, Path(work))


def _run(sizes: str, warmup: int, iters: int, rounds: int, threads: int | None,
         checkpoint: str | None, profile: str, int8: str, calib: int, accuracy_images: int,
         memory_size: str, pipeline: bool, pipeline_frames: int,
         variants: tuple[TorchOptions, ...], parity_images: int, openvino: bool,
         out: Path, work: Path) -> None:
    import torch

    from isdnet_deploy import runtime
    from isdnet_deploy.runtime.torch_backend import TorchBackend

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    size_list = [parse_size(s) for s in sizes.split(",") if s.strip()]
    prof = get_profile(profile)
    out.mkdir(parents=True, exist_ok=True)
    load_start = os.getloadavg()[0]
    if threads:
        torch.set_num_threads(threads)
    model = _model(checkpoint, prof.num_classes)
    paths, int8_check = _artifacts(model, work, prof.name, int8, calib, pipeline)
    options = {"threads": threads} if threads else {}
    segmenters = {k: runtime.load(paths[k], scale=False, **options)
                  for k in ("fp32", "int8") if k in paths}
    engines, engine_skips = _openvino_segmenters(paths, options) if openvino else ({}, [])
    eager = TorchBackend(None, "cpu", model=model, profile=prof.name)
    torch_backends = {torch_name(v): TorchBackend(None, "cpu", model=model, profile=prof.name,
                                                  **v.as_kwargs()) for v in variants}
    peak = measure_peak_gflops("cpu")
    machine = machine_info({"torch": threads, "onnxruntime_intra_op": threads}
                           if threads else None)
    machine["matmul_gflops"] = peak

    rows: list[list[str]] = []
    per_size: dict[str, tuple[list[MethodResult], dict[str, float]]] = {}
    runs: dict[str, Any] = {}
    accuracy: list[dict[str, Any]] = []
    parity: list[dict[str, Any]] = []
    engine_parity: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    for size in size_list:
        label = f"{size[0]}x{size[1]}"
        flops = count_model_flops(model, size)
        methods = [torch_backend_method(eager, size, flops=flops)]
        for name, backend in torch_backends.items():
            click.echo(f"{label}: compiling / preparing {name} (not timed)", err=True)
            try:
                methods.append(torch_backend_method(backend, size, flops=flops))
            except IsdnetError as exc:
                click.echo(f"{label}: skipped {name}: {exc}", err=True)
                skipped.append({"method": name, "size": label, "reason": str(exc)})
        methods += [segmenter_method(seg, size, name=f"onnxruntime {kind}", flops=flops)
                    for kind, seg in segmenters.items()]
        methods += [segmenter_method(seg, size, name=name, flops=flops)
                    for name, seg in engines.items()]
        skipped += [{"method": name, "size": label, "reason": reason}
                    for name, reason in engine_skips]
        click.echo(f"{label}: protocol", err=True)
        results = run_protocol(methods, warmup, iters, peak_gflops=peak)
        click.echo(f"{label}: interleaved, {rounds} rounds", err=True)
        inter = run_interleaved(methods, rounds, iters, warmup)
        click.echo(report.format_table(results, machine))
        click.echo(report.format_interleave(inter))
        rows += _rows(size, results, inter.median_ratio)
        per_size[label] = (results, inter.median_ratio)
        runs[label] = report.to_json(results, inter, None, {"size": list(size), "flops": flops})
        timed = {m.name for m in methods}
        compiled = {n: b for n, b in torch_backends.items() if n in timed}
        if compiled and parity_images:
            parity += _torch_parity(eager, compiled, prof.name, size, parity_images)
            click.echo(f"{label}: parity " + ", ".join(
                f"{p['method']} {p['agreement']:.4%} (decided {p['decided_agreement']:.4%})"
                for p in parity[-len(compiled):]), err=True)
        others = {name: seg.backend for name, seg in engines.items()}
        if "int8" in segmenters:
            others = {"onnxruntime int8": segmenters["int8"].backend, **others}
        if others and parity_images:
            engine_parity += _torch_parity(segmenters["fp32"].backend, others, prof.name, size,
                                           parity_images, "onnxruntime fp32")
            click.echo(f"{label}: vs onnxruntime fp32 " + ", ".join(
                f"{p['method']} {p['agreement']:.4%} (decided {p['decided_agreement']:.4%})"
                for p in engine_parity[-len(others):]), err=True)
        if "int8" in segmenters and accuracy_images:
            accuracy.append(_int8_accuracy(segmenters, prof.name, size, accuracy_images))
            click.echo(f"{label}: INT8 vs FP32 agreement {accuracy[-1]['agreement_vs_fp32']:.4%}",
                       err=True)
    memory = None
    if memory_size.lower() != "none":
        memory = _memory(checkpoint, paths, parse_size(memory_size), threads)
    pipe = None
    if pipeline:
        size = size_list[-1]
        click.echo(f"pipeline vs sequential at {size[0]}x{size[1]}", err=True)
        pipe = _pipeline_throughput(paths["external"], size, pipeline_frames, threads)
    for closing in (*segmenters.values(), *engines.values(), eager, *torch_backends.values()):
        closing.close()

    settings = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                "warmup": warmup, "iters": iters, "rounds": rounds, "threads": threads,
                "threads_text": f"{threads} threads" if threads else
                f"library-default threads ({os.cpu_count()} cores)",
                "reference": checkpoint or "random weights", "profile": prof.name,
                "int8": "int8" in paths, "calibration_images": calib if "int8" in paths else None,
                "int8_check": int8_check, "int8_accuracy": accuracy,
                "memory_size": memory_size, "memory": memory,
                "torch_variants": [v.as_kwargs() for v in variants], "torch_parity": parity,
                "engine_parity": engine_parity,
                "skipped": skipped,
                "load_start": load_start, "load_end": os.getloadavg()[0],
                "command": " ".join(sys.argv)}
    markdown = _markdown(rows, machine, settings, pipe)
    atomic_write_bytes(out / "results.md", markdown.encode())
    report.write_json(out / "results.json", {"schema": "isdnet_deploy.benchmark_suite/1",
                                             "settings": settings, "machine": machine,
                                             "sizes": runs, "pipeline": pipe})
    _plot(per_size, out / "results.png")
    click.echo("")
    click.echo(markdown)
    click.echo(f"wrote {out / 'results.md'}, {out / 'results.json'}, {out / 'results.png'}")


if __name__ == "__main__":
    main()
