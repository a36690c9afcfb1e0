"""ONNX export of the reference model, verified against it before the file appears.

The file is written to a temporary name beside the target, checked with onnx.checker, run
on every ONNX consumer asked for (ONNX Runtime, and OpenVINO when it is installed: two
independent implementations of the op set) on a seeded input and compared with the PyTorch
reference on each; only an export within tolerance on all of them is renamed into place.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..contract import (
    DEFAULT_OPSET,
    EXPORTERS,
    INPUT_KINDS,
    OUTPUT_KINDS,
    OUTPUT_RESIZES,
    OUTPUT_SIZE_INPUT,
    PYRAMID_MODES,
    Contract,
    TensorSpec,
    embed_in_onnx,
    invalid_contract,
)
from ..errors import IsdnetError, missing, one_line
from ..fileio import atomic_output, check_output_path
from ..profiles import MAX_SIZE, MIN_SIZE, get_profile, profile_for_classes
from ..runtime.registry import check_consumers, installed_consumers
from .graph import DeployGraph
from .portability import ensure_int32_safe

log = logging.getLogger(__name__)

MIN_OPSET = 11
# Verifying a dynamic model at a size not divisible by 4 exercises the pyramid's odd-size
# fallback at both levels and a legacy-nearest size (1002 -> 250) where ONNX Resize and
# PyTorch round differently.
DEFAULT_VERIFY_SIZE = (1002, 762)
DEFAULT_RTOL = 1e-5
# DeployGraph.forward's parameters, in order; a variant's absent inputs are passed as None.
_FORWARD_INPUTS = ("image", "residual", OUTPUT_SIZE_INPUT)


@dataclass
class Parity:
    """How one consumer's run of the export compares with the PyTorch reference."""

    consumer: str
    size: tuple[int, int]
    max_abs_diff: float | None
    mean_abs_diff: float | None
    argmax_agreement: float
    decided_agreement: float
    tolerance: float
    atol: float
    rtol: float
    min_agreement: float
    passed: bool
    consumer_seconds: float
    torch_seconds: float


@dataclass
class ExportReport:
    path: str
    seconds: float
    file_bytes: int
    contract: Contract
    verification: dict[str, Parity] = field(default_factory=dict)  # consumer -> figures
    simplified: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def parity(self) -> Parity | None:
        """The first consumer's figures (ONNX Runtime's unless told otherwise); None when
        the export was not verified."""
        return next(iter(self.verification.values()), None)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["contract"] = asdict(self.contract)
        data["parity"] = None if self.parity is None else asdict(self.parity)
        return data


def default_output_resize(output_kind: str) -> str:
    """Labels are resized in the graph unless asked otherwise; logits never are."""
    return "graph" if output_kind == "labels" else "none"


def build_contract(model: torch.nn.Module, *, pyramid: str, input_kind: str, output_kind: str,
                   labels_dtype: str, dynamic: bool, size: tuple[int, int] | None,
                   opset: int, exporter: str, profile: str | None,
                   output_resize: str = "none") -> Contract:
    num_classes = int(model.num_classes)
    prof = get_profile(profile) if profile else profile_for_classes(num_classes)
    if prof is not None and prof.num_classes != num_classes:
        raise IsdnetError(f"profile {prof.name} has {prof.num_classes} classes but the model "
                          f"has {num_classes}; pick a matching --profile")
    test_scale = prof.test_scale if prof else 1.0
    if output_resize == "graph" and not 0.5 <= test_scale <= 1.0:
        raise IsdnetError(f"profile {prof.name}'s test scale {test_scale} is outside [0.5, 1], "
                          "where the graph's label resize works; export with "
                          "--output-resize none")
    h, w = ("height", "width") if dynamic else size
    if input_kind == "uint8":
        inputs = [TensorSpec("image", "uint8", "NHWC", [1, h, w, 3], "RGB bytes 0..255")]
    else:
        inputs = [TensorSpec("image", "float32", "NCHW", [1, 3, h, w],
                             "RGB, (x - mean) / std")]
    if pyramid == "external":
        inputs.append(TensorSpec("residual", "float32", "NCHW", [1, 6, h, w],
                                 "Laplacian residuals of the normalised image (level 0, "
                                 "level 1 bilinearly resized)"))
    if output_resize == "graph":
        inputs.append(TensorSpec(OUTPUT_SIZE_INPUT, "int32", "S", [2],
                                 "[height, width] of the labels: the image's size before the "
                                 "test scale, each from the input's size to twice it"))
        outputs = [TensorSpec("labels", labels_dtype, "HW", ["out_height", "out_width"],
                              "class id per pixel, after the logits are resized bilinearly "
                              "to output_size")]
    elif output_kind == "labels":
        outputs = [TensorSpec("labels", labels_dtype, "HW", [h, w], "class id per pixel")]
    else:
        outputs = [TensorSpec("logits", "float32", "NCHW", [1, num_classes, h, w],
                              "class scores at input resolution")]
    classes = list(prof.classes) if prof else [f"class_{i}" for i in range(num_classes)]
    palette = [list(c) for c in prof.palette] if prof else []
    return Contract(
        inputs=inputs, outputs=outputs, input_kind=input_kind, output_kind=output_kind,
        pyramid=pyramid, dynamic=dynamic, fixed_size=None if dynamic else list(size),
        min_size=MIN_SIZE, profile=prof.name if prof else None, classes=classes,
        palette=palette, test_scale=test_scale, output_resize=output_resize,
        checkpoint_sha256=getattr(model, "checkpoint_sha256", None), opset=opset,
        exporter=exporter, tool_version=__version__,
    )


def check_export_options(pyramid: str, input_kind: str, output_kind: str, labels_dtype: str,
                         dynamic: bool, size: tuple[int, int] | None, exporter: str,
                         opset: int, verify_size: tuple[int, int] | None = None,
                         output_resize: str | None = None) -> None:
    """Every option problem, found before a model is built (which takes seconds)."""
    for value, allowed, what in ((pyramid, PYRAMID_MODES, "pyramid"),
                                 (input_kind, INPUT_KINDS, "input"),
                                 (output_kind, OUTPUT_KINDS, "output"),
                                 (labels_dtype, ("uint8", "int32"), "labels dtype"),
                                 (exporter, EXPORTERS, "exporter"),
                                 (output_resize or "none", OUTPUT_RESIZES, "output resize")):
        if value not in allowed:
            raise IsdnetError(f"unknown {what} {value!r}; choose one of: {', '.join(allowed)}")
    if output_resize == "graph" and output_kind != "labels":
        raise IsdnetError("--output-resize graph resizes logits before the argmax of a labels "
                          "output; add --output-kind labels (logits are resized by the runtime)")
    if dynamic and size is not None:
        raise IsdnetError("--size fixes the input size and --dynamic makes it symbolic: "
                          "give one of them")
    if not dynamic and size is None:
        raise IsdnetError("a static export needs --size HxW")
    if size is not None and min(size) < MIN_SIZE:
        raise IsdnetError(f"size {size[0]}x{size[1]} is below the minimum {MIN_SIZE}x{MIN_SIZE}")
    if size is not None and max(size) > MAX_SIZE:
        raise IsdnetError(f"size {size[0]}x{size[1]} exceeds the largest supported side "
                          f"{MAX_SIZE}; export at most that and tile larger images")
    if not dynamic and verify_size is not None and tuple(verify_size) != tuple(size):
        raise IsdnetError(f"a static {size[0]}x{size[1]} model only runs at that size; drop "
                          f"--verify-size or make it equal to --size")
    if exporter == "dynamo":
        import importlib.util

        if importlib.util.find_spec("onnxscript") is None:
            raise missing("onnxscript", why="--exporter dynamo needs it")
    # Not public API, hence the fallback: then torch itself rejects an unsupported opset.
    highest = getattr(getattr(torch.onnx, "_constants", None), "ONNX_MAX_OPSET", None)
    if isinstance(highest, int) and opset > highest:
        raise IsdnetError(f"opset {opset} is newer than this torch {torch.__version__} can "
                          f"export (at most {highest}); pick a lower --opset")
    if opset < MIN_OPSET:
        raise IsdnetError(f"opset {opset} is older than the {MIN_OPSET} this exporter needs")


def sample_inputs(contract: Contract, size: tuple[int, int], seed: int = 0,
                  output_size: tuple[int, int] | None = None
                  ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Seeded feeds for the artifact plus the normalised float image the reference takes.

    The image is smooth noise (photo-like), not white noise, so the comparison happens on
    the kind of input the model is built for. Artifacts that resize labels in the graph get
    ``output_size`` (default: ``size``, no resize).
    """
    from ..data.samples import photo_like
    from ..pyramid.opencv_ops import shallow_input_nchw

    rgb = photo_like(*size, seed=seed)
    mean = np.asarray(contract.mean, np.float32)
    std = np.asarray(contract.std, np.float32)
    normalised = ((rgb.astype(np.float32) - mean) / std).transpose(2, 0, 1)[None]
    normalised = np.ascontiguousarray(normalised)
    feeds = {"image": rgb[None] if contract.input_kind == "uint8" else normalised}
    if contract.pyramid == "external":
        feeds["residual"] = shallow_input_nchw(normalised[0].transpose(1, 2, 0))
    if contract.output_resize == "graph":
        feeds[OUTPUT_SIZE_INPUT] = np.asarray(output_size or size, np.int32)
    return feeds, normalised


def enlarged(size: tuple[int, int]) -> tuple[int, int]:
    """The size a 0.8 test scale came from (x 1.25): where in-graph label resizes are
    verified."""
    return size[0] + size[0] // 4, size[1] + size[1] // 4


def verify_onnx(path: str | Path, model: torch.nn.Module, contract: Contract,
                size: tuple[int, int], *, atol: float = 1e-4, rtol: float = DEFAULT_RTOL,
                min_agreement: float = 1.0, seed: int = 0,
                backend: str = "onnxruntime") -> Parity:
    """Open the ONNX file through the runtime's ``backend`` (an ONNX consumer on the CPU:
    ONNX Runtime by default, or OpenVINO) and compare it with the PyTorch reference on one
    seeded input; ``verify_on_consumers`` with one consumer."""
    return verify_on_consumers(path, model, contract, size, (backend,), atol=atol, rtol=rtol,
                               min_agreement=min_agreement, seed=seed)[backend]


def verify_on_consumers(path: str | Path, model: torch.nn.Module, contract: Contract,
                        size: tuple[int, int], consumers: Sequence[str], *,
                        atol: float = 1e-4, rtol: float = DEFAULT_RTOL,
                        min_agreement: float = 1.0, seed: int = 0) -> dict[str, Parity]:
    """Run the ONNX file on each of ``consumers`` (runtime backends on the CPU) and compare
    each with the PyTorch reference on one seeded input, through one comparator (the
    reference runs once). A consumer that cannot open or run the graph raises an
    ``IsdnetError`` starting with its name and quoting its own message.

    The tolerance is ``atol + rtol * max|ref|``: float32 itself is that noisy at this depth
    (the same PyTorch model in float32 vs float64 differs by ~1e-5 of the largest logit), so
    a bare absolute bound would fail on correct exports of models with large logits. The
    argmax must agree on every *decided* pixel, one whose reference top-2 margin exceeds
    twice the tolerance; pixels tied within float noise may go either way (raw agreement
    is reported too). A labels-output model is judged on agreement alone; one that resizes
    in the graph is asked for labels at 1.25 x ``size`` and judged against the reference
    logits resized as the runtime resizes them.
    """
    from ..metrics.comparator import Comparator, Outputs, relative_tolerance
    from ..pyramid.opencv_ops import resize_bilinear
    from ..runtime import open_backend

    output_size = enlarged(size) if contract.output_resize == "graph" else None
    feeds, normalised = sample_inputs(contract, size, seed, output_size)
    tolerance_of = relative_tolerance(atol, rtol)

    def reference(_: object) -> Outputs:
        with torch.no_grad():
            logits = model(torch.from_numpy(normalised)).numpy()
        if output_size is not None:
            resized = resize_bilinear(np.ascontiguousarray(logits[0].transpose(1, 2, 0)),
                                      *output_size)
            logits = np.ascontiguousarray(resized.transpose(2, 0, 1)[None])
        return Outputs(labels=logits.argmax(axis=1)[0], logits=logits)

    def side(consumer: str, opened: Any) -> tuple[str, Callable[[object], Outputs]]:
        def candidate(_: object) -> Outputs:
            try:
                (result,) = opened.run(feeds).values()
            except Exception as exc:  # the consumer's own runtime error
                raise IsdnetError(f"{consumer} cannot run the graph: {one_line(exc)}") from exc
            if contract.output_kind == "labels":
                return Outputs(labels=result.reshape(result.shape[-2:]))
            return Outputs(labels=result.argmax(axis=1)[0], logits=result)
        return consumer, candidate

    with contextlib.ExitStack() as stack:
        sides = []
        for consumer in consumers:
            try:
                opened = open_backend(path, consumer, "cpu", contract=contract)
            except IsdnetError as exc:
                raise IsdnetError(f"{consumer} cannot open the graph: {exc}") from exc
            sides.append(side(consumer, stack.enter_context(opened)))
        comparator = Comparator(("pytorch", reference), sides, contract.num_classes,
                                tolerance=tolerance_of)
        tolerance = tolerance_of(comparator.add(None)["pytorch"])
    results = {}
    for consumer, stats in zip(consumers, comparator.stats, strict=True):
        close = stats.max_abs_diff is None or stats.max_abs_diff <= tolerance
        results[consumer] = Parity(
            consumer=consumer, size=tuple(size), max_abs_diff=stats.max_abs_diff,
            mean_abs_diff=stats.mean_abs_diff, argmax_agreement=stats.agreement,
            decided_agreement=stats.decided_agreement, tolerance=tolerance, atol=atol,
            rtol=rtol, min_agreement=min_agreement,
            passed=close and stats.decided_agreement >= min_agreement,
            consumer_seconds=stats.seconds[0], torch_seconds=comparator.reference_seconds[0])
    return results


def variant_name(contract: Contract, simplified: bool = False) -> str:
    """The export variant in a few words, e.g. 'graph pyramid, uint8 in, labels out,
    dynamic': what a verification failure names."""
    size = "dynamic" if contract.dynamic else "x".join(map(str, contract.fixed_size or []))
    return (f"{contract.pyramid} pyramid, {contract.input_kind} in, {contract.output_kind} "
            f"out, {size}{', simplified' if simplified else ''}")


def _verify(path: str, model: torch.nn.Module, contract: Contract, variant: str,
            size: tuple[int, int], consumers: Sequence[str], atol: float,
            rtol: float) -> dict[str, Parity]:
    """``verify_on_consumers``, every refusal or disagreement one error naming the consumer
    and the variant (the caller then writes nothing)."""
    try:
        verification = verify_on_consumers(path, model, contract, size, consumers, atol=atol,
                                           rtol=rtol)
    except IsdnetError as exc:
        raise IsdnetError(f"the export ({variant}) fails: {exc}; nothing written") from exc
    failed = [p for p in verification.values() if not p.passed]
    if not failed:
        return verification
    from ..model.checkpoint import describe_nonfinite, nonfinite_weights

    bad = nonfinite_weights(model.state_dict())
    if bad:
        raise IsdnetError(
            f"the exported model cannot match the PyTorch reference: the model has "
            f"{describe_nonfinite(bad)}, so its logits are not finite (max |diff| "
            f"{failed[0].max_abs_diff}); use a checkpoint from before training "
            "diverged; nothing written")
    shown = "; ".join(
        f"on {p.consumer} max |diff| {p.max_abs_diff} (allowed {p.tolerance:.2e} = atol {atol} "
        f"+ rtol {rtol} x max|ref|), agreement on decided pixels {p.decided_agreement:.4%} "
        f"(needed >= {p.min_agreement:.2%})" for p in failed)
    raise IsdnetError(f"exported model ({variant}) disagrees with the PyTorch reference at "
                      f"{failed[0].size[0]}x{failed[0].size[1]}: {shown}; nothing written")


def _trace_to_onnx(graph: DeployGraph, path: str, contract: Contract, example: tuple,
                   exporter: str, opset: int) -> None:
    input_names = [s.name for s in contract.inputs]
    output_names = [s.name for s in contract.outputs]
    dynamic_axes = None
    if contract.dynamic:
        dynamic_axes = {}
        for spec in [*contract.inputs, *contract.outputs]:
            dynamic_axes[spec.name] = {i: d for i, d in enumerate(spec.shape)
                                       if isinstance(d, str)}
    with (warnings.catch_warnings(), open(os.devnull, "w") as devnull,
          contextlib.redirect_stdout(devnull)):
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            torch.onnx.export(graph, example, path, input_names=input_names,
                              output_names=output_names, dynamic_axes=dynamic_axes,
                              opset_version=opset, do_constant_folding=True, dynamo=False)
        else:
            dynamic_shapes = None
            if contract.dynamic:
                dims = {"height": torch.export.Dim("height", min=MIN_SIZE, max=MAX_SIZE),
                        "width": torch.export.Dim("width", min=MIN_SIZE, max=MAX_SIZE)}
                specs = {spec.name: spec for spec in contract.inputs}
                dynamic_shapes = tuple(
                    {i: dims[d] for i, d in enumerate(specs[name].shape) if isinstance(d, str)}
                    or None if name in specs else None
                    for name in _FORWARD_INPUTS[:len(example)])
            program = torch.onnx.export(graph, example, input_names=input_names,
                                        output_names=output_names, opset_version=opset,
                                        dynamic_shapes=dynamic_shapes, dynamo=True,
                                        external_data=False)
            program.save(path, external_data=False)


def _name_output_dims(proto: Any, contract: Contract) -> None:
    """Declare output dims as the contract states them (the tracer names them after
    internal nodes, e.g. 'Resizelogits_dim_0')."""
    for output, spec in zip(proto.graph.output, contract.outputs, strict=True):
        dims = output.type.tensor_type.shape.dim
        if len(dims) != len(spec.shape):
            continue
        for dim, value in zip(dims, spec.shape, strict=True):
            if isinstance(value, int):
                dim.dim_value = value
            else:
                dim.dim_param = value


def _finalise_proto(path: str, contract: Contract, simplify: bool) -> None:
    import onnx

    proto = onnx.load(path)
    if simplify:
        import onnxslim

        proto = onnxslim.slim(proto)
    # Portable by construction: every integer tensor provably fits int32 (OpenVINO's CPU
    # plugin and TensorRT narrow int64); raises for a graph that may overflow.
    ensure_int32_safe(proto)
    _name_output_dims(proto, contract)
    embed_in_onnx(proto, contract)
    proto.producer_name = "isdnet-deploy"
    proto.producer_version = __version__
    proto.doc_string = (f"ISDNet ({contract.profile or 'custom'}, {contract.num_classes} "
                        f"classes); I/O contract in metadata key 'isdnet_deploy'")
    onnx.save(proto, path)
    onnx.checker.check_model(path, full_check=True)


def export_onnx(model: torch.nn.Module, path: str | Path, *, pyramid: str = "graph",
                input: str = "float", output: str = "logits", labels_dtype: str = "uint8",
                dynamic: bool = True, size: tuple[int, int] | None = None,
                output_resize: str | None = None,
                opset: int = DEFAULT_OPSET, exporter: str = "torchscript",
                simplify: bool = False, verify: bool = True,
                verify_size: tuple[int, int] | None = None, atol: float = 1e-4,
                rtol: float = DEFAULT_RTOL, profile: str | None = None,
                fast_pyramid: bool = True, verify_on: Sequence[str] | None = None,
                progress: Callable[[str], None] = lambda step: None) -> ExportReport:
    """Export ``model`` to a self-describing ONNX file at ``path``; see the module doc.

    ``verify_on`` names the ONNX consumers to verify on (``runtime.registry.ONNX_CONSUMERS``;
    default: every one installed). A consumer that cannot open the graph or disagrees with
    the reference stops the export with its own message: nothing is written.

    ``output_resize`` (labels outputs; default "graph"): "graph" resizes the logits to an
    ``output_size`` input inside the graph before the argmax, as the official pipeline
    does; "none" leaves labels at the network's input size for the runtime to resize
    (nearest neighbour).
    """
    output_resize = output_resize or default_output_resize(output)
    check_export_options(pyramid, input, output, labels_dtype, dynamic, size, exporter, opset,
                         verify_size, output_resize)
    consumers = (check_consumers(installed_consumers() if verify_on is None else verify_on)
                 if verify else ())
    path = check_output_path(path, ".onnx")
    contract = build_contract(model, pyramid=pyramid, input_kind=input, output_kind=output,
                              labels_dtype=labels_dtype, dynamic=dynamic, size=size,
                              opset=opset, exporter=exporter, profile=profile,
                              output_resize=output_resize)
    # Never write a file every runtime would refuse (e.g. more classes than uint8 labels hold).
    if contract.problems():
        raise invalid_contract("the model", contract.problems())
    variant = variant_name(contract, simplify)
    graph = DeployGraph(_for_export(model, fast_pyramid), pyramid=pyramid, input_kind=input,
                        output_kind=output, labels_dtype=labels_dtype,
                        output_resize=output_resize,
                        mean=tuple(contract.mean), std=tuple(contract.std)).eval()
    trace_size = size or (96, 128)
    feeds, _ = sample_inputs(contract, trace_size)
    example = tuple(torch.from_numpy(feeds[name]) if name in feeds else None
                    for name in _FORWARD_INPUTS)
    while example[-1] is None:
        example = example[:-1]

    start = time.perf_counter()
    with atomic_output(path, make_parents=False) as tmp_path:
        tmp = str(tmp_path)
        progress("exporting")
        with torch.no_grad():
            _trace_to_onnx(graph, tmp, contract, example, exporter, opset)
        if simplify:
            progress("simplifying")
        _finalise_proto(tmp, contract, simplify)
        verification = {}
        if consumers:
            progress(f"verifying on {', '.join(consumers)}")
            verification = _verify(tmp, model, contract, variant,
                                   verify_size or size or DEFAULT_VERIFY_SIZE, consumers, atol,
                                   rtol)
    seconds = time.perf_counter() - start
    return ExportReport(path=str(path), seconds=seconds, file_bytes=path.stat().st_size,
                        contract=contract, verification=verification, simplified=simplify)


def _for_export(model: torch.nn.Module, fast_pyramid: bool) -> torch.nn.Module:
    """The model as traced: the reference itself, or a shallow copy with the cheaper but
    equal pyramid (the reference object is never modified)."""
    if not fast_pyramid:
        return model
    try:
        from .fast_pyramid import FastLaplacianPyramid
    except ImportError:
        return model
    import copy

    # A shallow copy shares its _modules dict with the original, so each level gets its
    # own dict before anything is replaced.
    traced = copy.copy(model)
    traced._modules = dict(model._modules)
    head = copy.copy(model.refine_head)
    head._modules = dict(model.refine_head._modules)
    head.lap_pyramid = FastLaplacianPyramid()
    traced.refine_head = head
    return traced
