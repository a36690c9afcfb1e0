"""``isdnet-deploy build``: a TensorRT engine and its sidecar from an exported ONNX model."""

from __future__ import annotations

from pathlib import Path

import click

from ..profiles import parse_size
from ..runtime.tensorrt_support import LOG_LEVELS


@click.command("build")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Engine file [default: MODEL with .engine]; the sidecar is OUTPUT.json.")
@click.option("--min", "min_size", default=None,
              help="Smallest HxW the engine accepts [default: half of --opt].")
@click.option("--opt", "opt_size", default=None,
              help="HxW TensorRT tunes for [default: the profile's test size, e.g. 1958x1958].")
@click.option("--max", "max_size", default=None,
              help="Largest HxW [default: the larger of --opt and the dataset image size].")
@click.option("--workspace", default=4096, show_default=True, type=click.IntRange(min=1),
              help="Builder workspace limit in MiB.")
@click.option("--timing-cache", type=click.Path(dir_okay=False), default=None,
              help="Timing cache file: read if present, written after the build.")
@click.option("--opt-level", default=3, show_default=True, type=click.IntRange(0, 5),
              help="TensorRT builder optimization level (higher: longer build, maybe faster).")
@click.option("--fp16", is_flag=True,
              help="FP16 for an FP32 ONNX (flag on TensorRT 10, graph conversion on 11). "
                   "FP16/INT8 ONNX from 'isdnet-deploy quantize' need no flag.")
@click.option("--device", default="cuda", show_default=True,
              help="GPU to build on (cuda or cuda:N); the engine runs on GPUs of that model.")
@click.option("--log-level", type=click.Choice(list(LOG_LEVELS)), default="warning",
              show_default=True, help="TensorRT messages shown.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def build_command(model: str, output: str | None, min_size: str | None, opt_size: str | None,
                  max_size: str | None, workspace: int, timing_cache: str | None,
                  opt_level: int, fp16: bool, device: str, log_level: str,
                  no_progress: bool) -> None:
    """Build a TensorRT engine (needs the [tensorrt] extra and an NVIDIA GPU).

    Example: isdnet-deploy build model.onnx -o model.engine --opt 1958x1958
    """
    from ..engine.build import build_engine

    src = Path(model)
    engine = Path(output) if output else src.with_suffix(".engine")
    report = build_engine(
        src, engine, min_shape=parse_size(min_size) if min_size else None,
        opt_shape=parse_size(opt_size) if opt_size else None,
        max_shape=parse_size(max_size) if max_size else None, workspace_mib=workspace,
        timing_cache=timing_cache, opt_level=opt_level, fp16=fp16, device=device,
        log_level=log_level, progress=not no_progress)
    precision = report.precision + (" (strongly typed)" if report.strongly_typed else "")
    if report.fp16_ignored:
        precision += ", --fp16 ignored"
    profile = report.profile.to_dict()
    rows = [
        ("engine", f"{report.engine} ({report.engine_bytes / 2**20:.1f} MiB)"),
        ("sidecar", report.sidecar),
        ("precision", precision),
        ("profile HxW", " / ".join(f"{k} {v[0]}x{v[1]}" for k, v in profile.items())),
        ("TensorRT", report.tensorrt_version),
        ("GPU", f"cuda:{report.gpu.index} {report.gpu.name} (compute "
                f"{report.gpu.compute_capability})"),
        ("build time", f"{report.build_seconds:.1f} s"),
    ]
    for key, value in rows:
        click.echo(f"{key:>12}: {value}")
