"""``isdnet-deploy quantize``: FP16 or INT8 written into the ONNX graph, verified on CPU."""

from __future__ import annotations

import warnings
from pathlib import Path

import click

from ..fileio import check_output_path
from .common import (
    SIZE,
    check_json_path,
    consumers,
    json_option,
    max_pixels_option,
    printable,
    progress_option,
    show_progress,
    verify_on_option,
    write_json,
)


def _show(message: Warning | str, category: type[Warning], *args: object,
          **kwargs: object) -> None:
    click.secho(f"WARNING: {message}", fg="yellow", err=True)


@click.command("quantize")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--precision", type=click.Choice(["fp16", "int8"]), required=True,
              help="fp16: FP16 casts (FP32 I/O kept); int8: Q/DQ nodes for TensorRT.")
@click.option("--calib", type=click.Path(), default=None,
              help="Folder of calibration images (int8) or verification images (fp16). "
                   "Without it int8 calibrates on seeded synthetic images, loudly warned.")
@click.option("--max-calib", default=32, show_default=True,
              help="Use at most this many images from --calib (seeded pick).")
@click.option("--num-synthetic", default=16, show_default=True,
              help="Synthetic calibration images when --calib is not given.")
@click.option("--size", type=SIZE, default=None,
              help="HxW of calibration/verification inputs for dynamic models "
                   "[default: 512x512].")
@click.option("--keep-fp32", default=None,
              help="fp16: comma-separated op types kept in FP32 "
                   "[default: Resize,ArgMax,ReduceMean,Sigmoid,Softmax].")
@click.option("--verify", "num_verify", default=4, show_default=True,
              help="Inputs compared against the FP32 model on each --verify-on consumer.")
@verify_on_option("on which the converted model is compared with the FP32 model (each on "
                  "the same consumer)")
@click.option("--min-agreement", type=click.FloatRange(0, 1), default=None,
              help="Write nothing when argmax agreement with FP32 is lower (e.g. 0.99); "
                   "without it a low agreement is only warned about.")
@click.option("--seed", default=0, show_default=True, help="Seed for picks and synthetic images.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Output ONNX [default: MODEL with .fp16.onnx / .int8.onnx].")
@json_option("the verification report")
@click.option("--report", "report_path", default=None, hidden=True)
@click.option("--target", type=click.Choice(["tensorrt", "cpu"]), default="tensorrt",
              show_default=True,
              help="int8 only: tensorrt = symmetric s8 activations (explicit quantization); "
                   "cpu = u8 activations that ONNX Runtime's x86 kernels fuse.")
@max_pixels_option
@progress_option
def quantize_command(model: str, precision: str, calib: str | None, max_calib: int,
                     num_synthetic: int, size: tuple[int, int] | None, keep_fp32: str | None,
                     num_verify: int, min_agreement: float | None, seed: int,
                     verify_on: tuple[str, ...] | None, output: str | None,
                     json_path: str | None, report_path: str | None, target: str,
                     max_pixels: int, no_progress: bool) -> None:
    """Convert an exported FP32 ONNX model to FP16 or INT8 for TensorRT 10 and 11.

    Example: isdnet-deploy quantize model.onnx --precision int8 --calib images/ -o model.int8.onnx
    """
    from ..engine import precision as prec

    src = Path(model)
    dst = check_output_path(output or src.with_name(f"{src.stem}.{precision}.onnx"), ".onnx")
    if report_path is not None:
        click.secho("deprecated: --report FILE is now --json FILE; the old spelling still "
                    "works for now", fg="yellow", err=True)
        json_path = json_path or report_path
    json_file = check_json_path(json_path)
    verify_on = consumers(verify_on)
    common = {"verify_on": verify_on, "num_verify": num_verify, "size": size,
              "min_agreement": min_agreement, "seed": seed,
              "progress": show_progress(no_progress), "max_pixels": max_pixels}
    with warnings.catch_warnings():
        # Shown as they happen (the synthetic-calibration warning before calibrating).
        warnings.simplefilter("always", prec.CalibrationWarning)
        warnings.simplefilter("always", prec.AgreementWarning)
        warnings.showwarning = _show
        if precision == "fp16":
            keep = (tuple(op.strip() for op in keep_fp32.split(",") if op.strip())
                    if keep_fp32 is not None else prec.DEFAULT_KEEP_FP32)
            report = prec.convert_fp16(src, dst, keep, verify_images=calib, **common)
        else:
            report = prec.quantize_int8(src, dst, calib, num_synthetic=num_synthetic,
                                        max_images=max_calib, target=target, **common)
    if json_file != "-":
        for key, value in report.rows():
            click.echo(printable(f"{key:>18}: {value}"))
    write_json(json_file, report.to_dict())
