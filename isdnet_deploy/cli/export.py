"""``isdnet-deploy export`` and ``isdnet-deploy inspect``: checkpoint to verified ONNX, and
what an ONNX file promises.

torch is imported inside ``export`` only, so ``inspect`` and ``--help`` start quickly.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from ..contract import (
    DEFAULT_OPSET,
    EXPORTERS,
    INPUT_KINDS,
    MAX_CLASSES,
    MAX_WIDE_CLASSES,
    METADATA_KEY,
    OUTPUT_KINDS,
    OUTPUT_RESIZES,
    PYRAMID_MODES,
    Contract,
)
from ..errors import IsdnetError
from ..profiles import DEFAULT_PROFILE, get_profile
from .common import (
    PROFILE,
    SIZE,
    check_json_path,
    consumers,
    json_option,
    printable,
    progress_option,
    show_progress,
    verify_on_option,
    write_json,
)

CONSUMER_NAMES = {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO"}

MIB = 1024 * 1024


@contextlib.contextmanager
def _step(message: str, shown: bool) -> Iterator[None]:
    """A transient status line on an interactive stderr, erased afterwards so that an error
    (or the report) is all that stays; nothing at all when stderr is a pipe or a file."""
    if shown:
        click.echo(f"{printable(message)}…", err=True, nl=False)
    try:
        yield
    finally:
        if shown:
            click.echo("\r\033[K", err=True, nl=False)


def _deprecated(old: str, new: str) -> None:
    click.secho(f"deprecated: {old} is now {new}; the old spelling still works for now",
                fg="yellow", err=True)


def _resolve_output(values: tuple[str, ...], legacy_out: str | None,
                    output_kind: str | None) -> tuple[str, str]:
    """(file, output kind) from -o/--output, the old --out and the old --output KIND."""
    files = [v for v in values if v not in OUTPUT_KINDS]
    kinds = [v for v in values if v in OUTPUT_KINDS]
    if legacy_out is not None:
        _deprecated("--out FILE", "-o/--output FILE")
        files.append(legacy_out)
    if kinds:
        _deprecated(f"--output {kinds[-1]}", f"--output-kind {kinds[-1]}")
        output_kind = output_kind or kinds[-1]
    if len(files) != 1:
        raise click.UsageError("give the ONNX file to write once: -o/--output FILE.onnx")
    return files[0], output_kind or "logits"


def _fast_pyramid_available() -> bool:
    return importlib.util.find_spec("isdnet_deploy.export.fast_pyramid") is not None


@click.command("export")
@click.argument("checkpoint", required=False)
@click.option("-o", "--output", "outputs", multiple=True, metavar="FILE.onnx",
              help="Where to write the ONNX file (missing folders are created).")
@click.option("--out", "legacy_out", default=None, hidden=True)
@click.option("--pyramid", type=click.Choice(PYRAMID_MODES), default="graph", show_default=True,
              help="Laplacian pyramid inside the graph, or computed by the caller and fed as "
                   "a second input 'residual'.")
@click.option("--input", "input_kind", type=click.Choice(INPUT_KINDS), default="float",
              show_default=True,
              help="float: normalised 1x3xHxW; uint8: RGB bytes 1xHxWx3, normalised in-graph.")
@click.option("--output-kind", "output_kind", type=click.Choice(OUTPUT_KINDS), default=None,
              help="logits 1xCxHxW, or the argmax class map HxW.  [default: logits]")
@click.option("--output-resize", type=click.Choice(OUTPUT_RESIZES), default=None,
              help="Labels output: 'graph' resizes the logits bilinearly to an 'output_size' "
                   "input (the image's size before the test scale) before the argmax, as the "
                   "official pipeline; 'none' returns labels at the network's input size for "
                   "the runtime to resize (nearest neighbour).  [default: graph for labels]")
@click.option("--labels-dtype", type=click.Choice(["uint8", "int32"]), default="uint8",
              show_default=True, help="dtype of the labels output.")
@click.option("--dynamic", is_flag=True,
              help="Symbolic height and width (the default when no --size is given).")
@click.option("--size", type=SIZE, default=None,
              help="Fix the input size (static model); excludes --dynamic.")
@click.option("--opset", type=click.IntRange(min=11), default=None,
              help=f"ONNX opset.  [default: {DEFAULT_OPSET}]")
@click.option("--exporter", type=click.Choice(EXPORTERS), default="torchscript",
              show_default=True, help="torch.onnx exporter.")
@click.option("--simplify", is_flag=True,
              help="Simplify with onnxslim (parity is checked on the simplified file).")
@click.option("--profile", "profile_name", type=PROFILE, default=None,
              help="deepglobe, inria or cityscapes; default: inferred from the class count "
                   "(deepglobe for random weights).")
@click.option("--no-verify", is_flag=True,
              help="Skip the parity check against PyTorch (not recommended).")
@verify_on_option("that must each reproduce the PyTorch reference before the file is written")
@click.option("--verify-size", type=SIZE, default=None,
              help="Size of the parity check.  [default: --size, else 1002x762]")
@click.option("--atol", type=click.FloatRange(min=0), default=None,
              help="Absolute logit tolerance.  [default: 1e-4]")
@click.option("--rtol", type=click.FloatRange(min=0), default=None,
              help="Tolerance relative to the largest reference logit.  [default: 1e-5]")
@click.option("--fast-pyramid/--no-fast-pyramid", default=True, show_default=True,
              help="Trace the cheaper, equal pyramid, or the official form.")
@json_option("the export report")
@progress_option
def export_command(checkpoint: str | None, outputs: tuple[str, ...], legacy_out: str | None,
                   pyramid: str, input_kind: str, output_kind: str | None,
                   output_resize: str | None, labels_dtype: str,
                   dynamic: bool, size: tuple[int, int] | None, opset: int | None,
                   exporter: str, simplify: bool, profile_name: str | None, no_verify: bool,
                   verify_size: tuple[int, int] | None, atol: float | None,
                   rtol: float | None, fast_pyramid: bool, verify_on: tuple[str, ...] | None,
                   json_path: str | None, no_progress: bool) -> None:
    """Export CHECKPOINT (official ISDNet .pth) to ONNX and check it against PyTorch.

    Without CHECKPOINT the model has random weights (warned): fine for timing, useless for
    predictions. The file only appears once every ONNX consumer of --verify-on (ONNX
    Runtime, and OpenVINO when installed) agrees with the PyTorch reference; otherwise the
    command exits 1 and writes nothing.

    Example: isdnet-deploy export isdnet_deepglobe.pth -o isdnet.onnx --input uint8
    """
    from ..export.onnx_export import check_export_options, default_output_resize
    from ..fileio import check_output_path

    # Every cheap check comes before the model is loaded or built (that takes seconds).
    out, output_kind = _resolve_output(outputs, legacy_out, output_kind)
    output_resize = output_resize or default_output_resize(output_kind)
    shown = show_progress(no_progress)
    try:
        check_export_options(pyramid, input_kind, output_kind, labels_dtype,
                             dynamic or size is None, size, exporter, opset or DEFAULT_OPSET,
                             None if no_verify else verify_size, output_resize)
    except IsdnetError as exc:  # a combination of options that cannot work
        raise click.UsageError(str(exc)) from None
    if no_verify and verify_on is not None:
        raise click.UsageError("--verify-on names where to verify, --no-verify skips "
                               "verifying: give one of them")
    verify_on = () if no_verify else consumers(verify_on)
    profile = get_profile(profile_name) if profile_name else None
    out_path = check_output_path(out, ".onnx")
    json_file = check_json_path(json_path)

    started = time.perf_counter()
    if checkpoint:
        from ..model.checkpoint import load_model

        wide = output_kind == "labels" and labels_dtype == "int32"  # the palette rule
        with _step(f"loading {checkpoint}", shown):
            model = load_model(checkpoint, max_classes=MAX_WIDE_CLASSES if wide else MAX_CLASSES)
        source = f"checkpoint {checkpoint}"
    else:
        from ..model.checkpoint import build_model

        click.secho("WARNING: no CHECKPOINT given: exporting RANDOM weights; predictions are "
                    "meaningless, timings are real.", fg="yellow", bold=True, err=True)
        with _step("building a random-weight model", shown):
            model = build_model((profile or get_profile(DEFAULT_PROFILE)).num_classes)
        source = "random weights"
    load_seconds = time.perf_counter() - started

    from ..export.onnx_export import export_onnx

    options: dict[str, Any] = {k: v for k, v in (("opset", opset), ("atol", atol),
                                                 ("rtol", rtol)) if v is not None}
    message = "exporting" if no_verify else f"exporting and verifying on {', '.join(verify_on)}"
    with _step(message, shown):
        report = export_onnx(model, out_path, pyramid=pyramid, input=input_kind,
                             output=output_kind, output_resize=output_resize,
                             labels_dtype=labels_dtype,
                             dynamic=size is None, size=size, exporter=exporter,
                             simplify=simplify, verify=not no_verify, verify_size=verify_size,
                             profile=profile.name if profile else None,
                             fast_pyramid=fast_pyramid, verify_on=verify_on, **options)
    fast_used = fast_pyramid and pyramid == "graph" and _fast_pyramid_available()

    if json_path is not None:
        data = report.as_dict()
        data.update(source=source, load_seconds=load_seconds, fast_pyramid=fast_used)
        write_json(json_file, data)
        if json_file == "-":
            return
    for line in _export_lines(report, source, load_seconds, fast_used):
        click.echo(printable(line))


def _export_lines(report: Any, source: str, load_seconds: float, fast_used: bool) -> list[str]:
    c: Contract = report.contract
    size = "dynamic HxW" if c.dynamic else "static " + "x".join(map(str, c.fixed_size or []))
    if c.pyramid == "graph":
        form = "fast" if fast_used else "official"
        pyramid = f"pyramid in graph ({form} form)"
    else:
        pyramid = "pyramid external (input 'residual')"
    output = c.output_kind if c.output_kind == "logits" else f"labels {c.outputs[0].dtype}"
    if c.output_resize == "graph":
        output += " (logits resized in the graph to input 'output_size')"
    lines = [
        f"wrote {report.path} ({report.file_bytes / MIB:.1f} MiB) from {source} "
        f"(loaded in {load_seconds:.1f} s)",
        f"  variant: {pyramid}, input {c.input_kind}, output {output}, {size}, "
        f"opset {c.opset}, {c.exporter}{', simplified' if report.simplified else ''}",
        f"  export{'' if report.parity is None else ' + verification'}: "
        f"{report.seconds:.1f} s",
    ]
    if not report.verification:
        lines.append("  parity: NOT verified (--no-verify)")
        return lines
    lines.append(f"  verified on: {', '.join(report.verification)} (each against PyTorch)")
    for consumer, p in report.verification.items():
        h, w = p.size
        if p.max_abs_diff is None:
            lines.append(f"  parity at {h}x{w} on {consumer}: labels output, judged on argmax "
                         f"agreement (tolerance {p.tolerance:.2e} sets the decided margin)")
        else:
            lines.append(f"  parity at {h}x{w} on {consumer}: max |logit diff| "
                         f"{p.max_abs_diff:.2e}, mean {p.mean_abs_diff:.2e}, tolerance "
                         f"{p.tolerance:.2e} (atol {p.atol:g} + rtol {p.rtol:g} x max|ref|)")
        lines.append(f"    argmax agreement {p.argmax_agreement:.4%} of pixels, "
                     f"{p.decided_agreement:.4%} of decided pixels: "
                     f"{'PASSED' if p.passed else 'FAILED'}")
    first = report.parity
    runs = ", ".join(f"{CONSUMER_NAMES.get(c, c)} CPU {p.consumer_seconds * 1000:.0f} ms"
                     for c, p in report.verification.items())
    lines.append(f"  one run at {first.size[0]}x{first.size[1]}: {runs}, PyTorch "
                 f"{first.torch_seconds * 1000:.0f} ms (single cold runs, not a benchmark)")
    return lines


def _text(value: str | bytes) -> str:
    """A string field of the file: protobuf hands back bytes where they are not UTF-8."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _value_info(value: Any) -> dict[str, Any]:
    """Name, dtype and shape (ints, symbolic names, or '?') of a graph input or output."""
    import onnx

    kind = value.type.WhichOneof("value")
    name = _text(value.name)
    if kind != "tensor_type":
        return {"name": name, "dtype": kind or "unknown", "shape": None}
    elem = value.type.tensor_type.elem_type
    try:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(elem).name
    except (KeyError, TypeError, ValueError):
        dtype = onnx.TensorProto.DataType.Name(elem).lower()
    shape = None
    if value.type.tensor_type.HasField("shape"):
        shape = [d.dim_value if d.HasField("dim_value") else (_text(d.dim_param) or "?")
                 for d in value.type.tensor_type.shape.dim]
    return {"name": name, "dtype": dtype, "shape": shape}


def _graph_io(proto: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    # Models with IR < 4 also list their weights as inputs; those are not inputs to feed.
    weights = {t.name for t in proto.graph.initializer}
    inputs = [_value_info(v) for v in proto.graph.input if v.name not in weights]
    return inputs, [_value_info(v) for v in proto.graph.output]


@click.command("inspect")
@click.argument("model_path", metavar="MODEL.onnx")
@json_option("everything shown")
def inspect_command(model_path: str, json_path: str | None) -> None:
    """Show an ONNX file's isdnet-deploy contract and its graph's actual inputs/outputs.

    Exit status: 0 for a file exported by isdnet-deploy; 1 when the file cannot be read as
    ONNX, or when the runtime would refuse it: no isdnet-deploy contract, an invalid or
    duplicated one, or a graph that disagrees with it (its inputs and outputs are still
    shown, every disagreement is listed, and the reason goes to stderr).

    Example: isdnet-deploy inspect isdnet.onnx
    """
    from ..contract import graph_mismatches, load_onnx_proto, missing_contract, read_onnx_contract

    json_file = check_json_path(json_path)
    proto = load_onnx_proto(model_path)
    refusal: IsdnetError | None = None
    try:
        contract = read_onnx_contract(proto, model_path)
    except IsdnetError as exc:  # shown after the graph's own inputs and outputs
        contract, refusal = None, exc
    inputs, outputs = _graph_io(proto)
    external = sorted({e.value for t in proto.graph.initializer for e in t.external_data
                       if e.key == "location"})
    info = {
        "path": model_path,
        "file_bytes": Path(model_path).stat().st_size,
        "producer": f"{proto.producer_name} {proto.producer_version}".strip(),
        "ir_version": proto.ir_version,
        "opsets": {o.domain or "ai.onnx": o.version for o in proto.opset_import},
        "nodes": len(proto.graph.node),
        "external_data": external,
        "contract": None if contract is None else json.loads(contract.to_json()),
        "inputs": inputs,
        "outputs": outputs,
    }
    problems = graph_mismatches(contract, inputs, outputs) if contract is not None else []
    info["disagreements"] = problems

    write_json(json_file, info)
    if json_file != "-":
        _print_inspection(info, contract)
    for problem in problems:
        click.secho(f"disagreement: {printable(problem)}", fg="yellow", err=True)
    if refusal is None and contract is None:
        refusal = missing_contract(model_path)
    if refusal is None and problems:
        refusal = IsdnetError(f"the graph disagrees with its contract in {len(problems)} "
                              "way(s) (listed above), so the runtime refuses this file; it was "
                              "edited after export: re-export it with isdnet-deploy")
    if refusal is not None:
        click.echo(f"error: {printable(refusal.for_cli())}", err=True)
        sys.exit(1)


def _print_inspection(info: dict[str, Any], contract: Contract | None) -> None:
    """Every line escaped: names, producer and paths come from the file."""
    def echo(line: str) -> None:
        click.echo(printable(line))

    opsets = ", ".join(f"{d} {v}" for d, v in info["opsets"].items())
    weights = f"external ({', '.join(info['external_data'])})" if info["external_data"] \
        else "embedded"
    echo(f"{info['path']}: {info['file_bytes'] / MIB:.1f} MiB, producer "
         f"{info['producer'] or 'unknown'}, IR {info['ir_version']}, opset {opsets}, "
         f"{info['nodes']} nodes, weights {weights}")
    if contract is not None:
        echo(f"contract (metadata key {METADATA_KEY!r}):")
        rows = contract.summary()
        width = max(len(key) for key, _ in rows)
        for key, value in rows:
            echo(f"  {key:<{width}}  {value}")
    for title, values in (("graph inputs", info["inputs"]), ("graph outputs", info["outputs"])):
        echo(f"{title}:")
        width = max((len(v["name"]) for v in values), default=0)
        for v in values:
            shape = "unknown shape" if v["shape"] is None else \
                "[" + ", ".join(str(d) for d in v["shape"]) + "]"
            echo(f"  {v['name']:<{width}}  {v['dtype']:<8} {shape}")
