"""``isdnet-deploy demo``: the README's main job, on a machine with nothing but the install.

Reference model -> verified ONNX export -> ONNX Runtime against PyTorch with the paper's
FPS protocol, all on the CPU. The default size and counts are reduced so the whole run
takes a couple of minutes on a small machine; ``--paper`` runs the protocol as published.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from ..benchmark.protocol import PAPER_ITERS, PAPER_WARMUP
from ..fileio import check_writable_dir
from ..profiles import get_profile, parse_size
from .common import PROFILE, SIZE, progress_option, show_progress

DEMO_SIZE = "1024x1024"
DEMO_WARMUP = 5
DEMO_ITERS = 20


@click.command("demo")
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None,
              help="Official ISDNet .pth; without it, random weights (loudly warned).")
@click.option("--profile", type=PROFILE, default="deepglobe", show_default=True)
@click.option("--size", type=SIZE, default=None,
              help=f"HxW of the benchmark input [default: {DEMO_SIZE}; with --paper the "
                   "profile's test size].")
@click.option("-o", "--output", type=click.Path(file_okay=False), default="runs/demo",
              show_default=True, help="Folder for the ONNX file and the results.")
@click.option("--paper", is_flag=True,
              help="The full protocol at the paper's size: 20 warm-up + 100 timed forwards "
                   "at the profile's test size (DeepGlobe 1958x1958); takes much longer.")
@click.option("--warmup", type=click.IntRange(min=0), default=None, hidden=True)
@click.option("--iters", type=click.IntRange(min=1), default=None, hidden=True)
@click.option("--peak/--no-peak", default=True, hidden=True)
@progress_option
def demo_command(checkpoint: str | None, profile: str, size: tuple[int, int] | None,
                 output: str, paper: bool, warmup: int | None, iters: int | None, peak: bool,
                 no_progress: bool) -> None:
    """Export the reference model to ONNX (verified) and time ONNX Runtime against
    PyTorch on the CPU, writing the ONNX file, benchmark.json and fps.png.

    Example: isdnet-deploy demo            (about a minute on 2 idle CPU cores)
    """
    from .. import runtime
    from ..benchmark import report
    from ..benchmark.machine import machine_info
    from ..benchmark.methods import (
        count_model_flops,
        measure_peak_gflops,
        segmenter_method,
        torch_method,
    )
    from ..benchmark.protocol import run_protocol
    from ..export.onnx_export import export_onnx
    from .common import reference_backend, warn_random_weights

    started = time.perf_counter()
    prof = get_profile(profile)
    hw = size or (prof.test_size if paper else parse_size(DEMO_SIZE))
    warmup = warmup if warmup is not None else (PAPER_WARMUP if paper else DEMO_WARMUP)
    iters = iters if iters is not None else (PAPER_ITERS if paper else DEMO_ITERS)
    out = check_writable_dir(output)

    reference = reference_backend(checkpoint, prof, "cpu", None)
    warn_random_weights([("the PyTorch reference", reference.contract)])
    model = reference.model
    source = Path(checkpoint).name if checkpoint else "random weights"
    click.echo(f"[1/3] reference ISDNet ({model.num_classes} classes, {prof.name}) from "
               f"{source}")

    onnx_path = out / f"isdnet_{prof.name}.onnx"
    export = export_onnx(model, onnx_path, profile=prof.name)
    checks = export.verification.values()
    h, w = export.parity.size
    click.echo(f"[2/3] exported {onnx_path} ({export.file_bytes / 2**20:.1f} MiB, pyramid in "
               f"the graph, dynamic size) in {export.seconds:.1f} s; verified against "
               f"PyTorch on {', '.join(export.verification)} at {h}x{w}: max |logit diff| "
               f"{max(p.max_abs_diff for p in checks):.1e}, argmax agreement "
               f"{min(p.argmax_agreement for p in checks):.4%} (the worst of them)")

    counts = "paper protocol" if (warmup, iters) == (PAPER_WARMUP, PAPER_ITERS) else \
        "reduced from the paper's 20 + 100; --paper for the full protocol at 1958x1958"
    click.echo(f"[3/3] benchmark at {hw[0]}x{hw[1]}: {warmup} warm-up + {iters} timed "
               f"forwards per method ({counts})")
    flops = count_model_flops(model, hw)
    peak_gflops = measure_peak_gflops("cpu") if peak else None
    with runtime.load(onnx_path, scale=False) as segmenter:
        methods = [torch_method(model, hw, flops=flops),
                   segmenter_method(segmenter, hw, name="onnxruntime fp32", flops=flops)]
        results = run_protocol(methods, warmup, iters, peak_gflops=peak_gflops,
                               progress=show_progress(no_progress))
    machine = machine_info()
    if peak_gflops:
        machine["matmul_gflops"] = peak_gflops
    settings = {"size": list(hw), "profile": prof.name, "warmup": warmup, "iters": iters,
                "device": "cpu", "reference": checkpoint or "random weights",
                "artifacts": [str(onnx_path)], "flops_per_forward": flops,
                "export": export.as_dict()}
    report.write_json(out / "benchmark.json", report.to_json(results, None, machine, settings))
    report.plot_fps(results, out / "fps.png",
                    title=f"ISDNet {hw[0]}x{hw[1]}, CPU, {warmup} + {iters} forwards, {source}",
                    subtitle=f"{machine.get('cpu_model', 'unknown CPU')}, "
                             f"{machine.get('logical_cores', '?')} logical cores")

    click.echo("")
    click.echo(report.format_table(results, machine))
    torch_result, ort_result = results
    click.echo("")
    caveat = ""
    if report.unsteady(results):
        caveat = (" (unreliable: PyTorch's FPS did not come back to its first measurement "
                  "before ONNX Runtime was timed, see above; run again or use 'isdnet-deploy "
                  "benchmark --interleave')")
    click.echo(f"ONNX Runtime: {ort_result.fps:.2f} FPS ({ort_result.median_ms:.0f} ms median) vs "
               f"PyTorch eager {torch_result.fps:.2f} FPS ({torch_result.median_ms:.0f} ms): "
               f"{ort_result.speedup:.2f}x at {hw[0]}x{hw[1]}{caveat}")
    click.echo(f"results: {out / 'benchmark.json'}, {out / 'fps.png'}, {onnx_path} "
               f"(total {time.perf_counter() - started:.0f} s)")
