"""``isdnet-deploy benchmark``: the paper's FPS protocol over the reference and artifacts."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import click

from ..benchmark import report
from ..benchmark.protocol import PAPER_ITERS, PAPER_WARMUP
from ..errors import IsdnetError
from ..profiles import Profile, get_profile
from ..runtime.torch_backend import TorchOptions
from .common import (
    DEVICE,
    PROFILE,
    SIZE,
    backend_options,
    check_json_path,
    check_openvino_precision,
    check_torch_settings,
    is_torch_artifact,
    json_option,
    open_artifact,
    output_file,
    progress_option,
    reference_backend,
    require_torch_artifact,
    show_progress,
    torch_options,
    torch_variant_option,
    warn_random_weights,
    write_json,
)

# --- benchmark ------------------------------------------------------------------------------

@click.command("benchmark")
@click.argument("artifacts", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None,
              help="Official ISDNet .pth for the PyTorch reference; without it, random weights "
                   "(loudly warned; timings are still real).")
@click.option("--profile", type=PROFILE, default="deepglobe", show_default=True,
              help="Classes and default size.")
@click.option("--size", type=SIZE, default=None,
              help="Input HxW; default the profile's test size (DeepGlobe 1958x1958).")
@click.option("--warmup", type=click.IntRange(min=0), default=PAPER_WARMUP, show_default=True,
              help="Warm-up forwards per method (paper: 20).")
@click.option("--iters", type=click.IntRange(min=1), default=PAPER_ITERS, show_default=True,
              help="Timed forwards per method (paper: 100).")
@click.option("--interleave", is_flag=True,
              help="Also run A B A B ... rounds and report the median FPS ratio.")
@click.option("--rounds", type=click.IntRange(min=1), default=5, show_default=True,
              help="Rounds for --interleave.")
@click.option("--device", type=DEVICE, default="cpu", show_default=True)
@backend_options
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Intra-op threads for PyTorch, ONNX Runtime and OpenVINO (default: the "
                   "libraries').")
@click.option("--no-reference", is_flag=True,
              help="Leave out the PyTorch reference; the first ARTIFACT becomes the baseline.")
@click.option("--include-pyramid", is_flag=True,
              help="For external-pyramid artifacts, add a row that also computes the OpenCV "
                   "pyramid in every forward.")
@json_option("every measurement and the machine description")
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
@torch_variant_option("Also time the PyTorch reference under these settings, each a method "
                      "of its own (e.g. 'pytorch compiled bf16'); eager fp32 stays the "
                      "baseline.")
@torch_options
@progress_option
def benchmark_command(artifacts: tuple[str, ...], checkpoint: str | None, profile: str,
                      size: tuple[int, int] | None, warmup: int, iters: int, interleave: bool,
                      rounds: int, device: str, backend: str, openvino_precision: str,
                      threads: int | None,
                      no_reference: bool, include_pyramid: bool, json_path: str | None,
                      plot_path: str | None, flops: bool, peak: bool, ort_profile: bool,
                      seed: int, torch_variants: tuple[TorchOptions, ...],
                      torch_options: TorchOptions, no_progress: bool) -> None:
    """Time the PyTorch reference and ARTIFACTs (.onnx, .engine, .pth) with the paper's
    FPS protocol: 20 warm-up + 100 timed forwards on a random 1x3xHxW input, FPS = 100 /
    total, the reference re-warmed before each later method.

    Each method times its engine forward only, on inputs prepared once. Torch methods that
    compile or capture CUDA graphs do so before the protocol, until a forward compiles
    nothing new; that time is reported apart ('compile s'). A method whose compilation
    fails is skipped with the cause.

    Example: isdnet-deploy benchmark runs/demo/isdnet_deepglobe.onnx --size 1024x1024

    Example: isdnet-deploy benchmark --size 1024x1024 --interleave
    --torch-variant compile=inductor --torch-variant compile=inductor,precision=bf16
    """
    from ..benchmark.machine import machine_info
    from ..benchmark.methods import (
        format_ort_profile,
        measure_peak_gflops,
        profile_onnxruntime,
        segmenter_method,
        unique_names,
    )
    from ..benchmark.protocol import run_interleaved, run_protocol

    _check_torch_variants(torch_variants, no_reference)
    check_openvino_precision(openvino_precision, backend)
    require_torch_artifact(torch_options, artifacts, backend,
                           "; --torch-variant times the reference under such settings")
    check_torch_settings((torch_options, *torch_variants), device)
    prof = get_profile(profile)
    hw = size or prof.test_size
    progress = show_progress(no_progress)
    json_file = check_json_path(json_path)
    plot_file = output_file(plot_path, ".png")
    if no_reference and not artifacts:
        raise IsdnetError("nothing to benchmark: --no-reference with no ARTIFACT; pass an "
                          ".onnx/.engine file or drop --no-reference")
    with contextlib.ExitStack() as stack:
        segmenters = [stack.enter_context(open_artifact(
            p, backend=backend, device=device, threads=threads, scale=False,
            torch_options=torch_options, openvino_precision=openvino_precision)[0])
                      for p in artifacts]
        reference = None
        if not no_reference:
            reference = stack.enter_context(reference_backend(checkpoint, prof, device,
                                                              threads))
        flop_count = _flops(reference, checkpoint, prof, hw) if flops else None

        methods = []
        labels: list[str] = []
        skipped: list[dict[str, str]] = []
        if reference is not None:
            label = Path(checkpoint).name if checkpoint else "random weights"
            for options in (TorchOptions(), *torch_variants):
                method = _torch_variant(stack, reference, options, hw, seed, flop_count,
                                        threads, skipped)
                if method is not None:
                    methods.append(method)
                    labels.append(label)
        notes = []
        for path, seg in zip(artifacts, segmenters, strict=True):
            if is_torch_artifact(path, backend):
                method = _prepared(lambda seg=seg: segmenter_method(seg, hw, seed=seed,
                                                                    flops=flop_count),
                                   Path(path).name, skipped)
                if method is not None:
                    methods.append(method)
                    labels.append(Path(path).name)
                continue
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
        warn_random_weights(
            ([] if reference is None else [("the PyTorch reference", reference.contract)])
            + [(Path(path).name, seg.contract) for path, seg in zip(artifacts, segmenters,
                                                                   strict=True)])
        if not methods:
            raise IsdnetError(f"nothing left to benchmark: every method was skipped "
                              f"({'; '.join(s['reason'] for s in skipped)})")
        results = run_protocol(methods, warmup, iters, peak_gflops=peak_gflops,
                               progress=progress)
        inter = (run_interleaved(methods, rounds, iters, warmup, progress=progress)
                 if interleave else None)

        click.echo(report.format_table(results, machine))
        if inter is not None:
            click.echo(report.format_interleave(inter))
        if flop_count:
            notes.append(f"GFLOP/s: {flop_count / 1e9:.1f} GFLOP per forward at {hw[0]}x{hw[1]} "
                         "(the reference network's count, 2 per multiply-add) x FPS")
        for note in notes:
            click.echo(f"note: {note}")
        for item in skipped:
            click.echo(f"skipped: {item['method']}: {item['reason']}")

        profiles = {}
        if ort_profile:
            for path, seg in zip(artifacts, segmenters, strict=True):
                if seg.backend.name != "onnxruntime":
                    continue
                name = Path(path).name
                profiles[name] = profile_onnxruntime(path, hw, threads=threads, device=device,
                                                     seed=seed)
                click.echo(format_ort_profile(profiles[name], f"ONNX Runtime profile of {name}"))

        settings = {"size": list(hw), "profile": prof.name, "warmup": warmup, "iters": iters,
                    "device": device, "threads": threads, "seed": seed,
                    "reference": None if reference is None else (checkpoint or "random weights"),
                    "artifacts": list(artifacts), "flops_per_forward": flop_count,
                    "rounds": rounds if interleave else None, "notes": notes,
                    "ort_profile": profiles or None,
                    "torch_variants": [o.as_kwargs() for o in torch_variants],
                    "torch_options": torch_options.as_kwargs(), "skipped": skipped}
        write_json(json_file, report.to_json(results, inter, machine, settings))
        if plot_file is not None:
            report.plot_fps(results, plot_file, title=f"ISDNet {hw[0]}x{hw[1]}, {device}")
            click.echo(f"wrote {plot_file}")


def _check_torch_variants(variants: tuple[TorchOptions, ...], no_reference: bool) -> None:
    if not variants:
        return
    if no_reference:
        raise click.UsageError("--torch-variant times the PyTorch reference under other "
                               "settings; drop --no-reference")
    labels = [v.label for v in variants]
    if "eager fp32" in labels:
        raise click.UsageError("--torch-variant eager fp32 is the baseline, always timed; "
                               "drop it")
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise click.UsageError(f"--torch-variant {repeated[0]} given twice; give each once")


def _prepared(build: Any, name: str, skipped: list[dict[str, str]]) -> Any:
    """A torch method (compiled / captured before timing), or None with the reason in
    ``skipped`` when that fails, e.g. no C++ compiler for inductor."""
    try:
        return build()
    except IsdnetError as exc:
        click.echo(f"skipped: {name}: {exc.for_cli()}", err=True)
        skipped.append({"method": name, "reason": exc.for_cli()})
        return None


def _torch_variant(stack: contextlib.ExitStack, reference: Any, options: TorchOptions,
                   hw: tuple[int, int], seed: int, flops: float | None, threads: int | None,
                   skipped: list[dict[str, str]]) -> Any:
    """The reference's model under ``options`` as a method (the reference itself for eager
    fp32), compiled before it is timed."""
    from ..benchmark.methods import torch_backend_method, torch_name
    from ..runtime.torch_backend import TorchBackend

    name = torch_name(options)
    if options.compiled or options.cuda_graphs:
        click.echo(f"compiling / capturing {name} at {hw[0]}x{hw[1]} (not timed)", err=True)

    def build() -> Any:
        backend = reference if options.is_reference else stack.enter_context(TorchBackend(
            None, str(reference.device), model=reference.model,
            profile=reference.contract.profile, threads=threads, **options.as_kwargs()))
        return torch_backend_method(backend, hw, name=name, seed=seed, flops=flops)
    return _prepared(build, name, skipped)


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


