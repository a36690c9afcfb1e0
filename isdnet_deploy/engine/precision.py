"""Reduced precision written into the ONNX graph: FP16 casts and INT8 Q/DQ nodes.

TensorRT 11 dropped the FP16/INT8 builder flags and implicit INT8 calibration; a network's
precision must be in the graph itself (strong typing). Doing the transform here, on the ONNX,
serves TensorRT 10 and 11 alike and lets every result be checked on ONNX Runtime CPU against
the FP32 model before anyone builds an engine from it.

Both transforms copy the artifact contract with ``precision`` changed, verify argmax agreement
and mIoU against the FP32 model on calibration-like inputs, and only then move the output into
place (a failed or rejected transform leaves no file behind).

This module is the entry point and the part both transforms share: the report, the warnings,
verification against the FP32 source and the final write. The transforms are ``fp16.py``
(``convert_fp16``) and ``int8.py`` (``quantize_int8``), re-exported here; the graph analyses
they run are ``graph_passes.py`` over one ``graph_index.GraphIndex`` per model; their inputs
come from ``calibration.py``.
"""

from __future__ import annotations

import logging
import os
import statistics
import warnings
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

from .. import runtime
from ..contract import Contract, embed_in_onnx, load_onnx_proto, require_contract
from ..errors import IsdnetError, one_line
from ..runtime.registry import check_consumers, installed_consumers

if TYPE_CHECKING:
    from .calibration import ImageSource

log = logging.getLogger(__name__)

# Ops kept in FP32 by default. On the random-weight ISDNet the FP16 model keeps 99.5-99.7%
# argmax agreement with or without this list (its drift equals that of rounding only the
# input to FP16), so the list is a safeguard rather than a measured gain: Resize takes FP32
# scales in ONNX and resizes the final logits, ArgMax decides the labels, ReduceMean sums a
# whole feature map, Sigmoid/Softmax make the attention weights. All are cheap.
DEFAULT_KEEP_FP32: tuple[str, ...] = ("Resize", "ArgMax", "ReduceMean", "Sigmoid", "Softmax")
# Below this argmax agreement with FP32 a converted model is reported loudly; a caller who
# wants a hard gate passes ``min_agreement`` and gets no file below it.
WARN_AGREEMENT = 0.99


class CalibrationWarning(UserWarning):
    """INT8 ranges came from synthetic images, so real-data accuracy is unverified."""


class AgreementWarning(UserWarning):
    """The converted model's labels differ from FP32 on more than 1% of pixels."""


@dataclass
class PrecisionReport:
    precision: str
    source: str
    output: str
    source_bytes: int
    output_bytes: int
    size: list[int]  # [H, W] of the verification inputs
    num_verify: int
    agreement: float  # fraction of pixels whose label equals the FP32 model's
    miou_vs_fp32: float  # mIoU of the label maps, FP32 labels taken as ground truth
    max_abs_diff: float | None  # largest logit difference (None for label outputs)
    ms_fp32: float  # ONNX Runtime CPU median time per forward
    ms_converted: float
    kept_fp32: list[str] = field(default_factory=list)
    excluded_nodes: list[str] = field(default_factory=list)
    calibration: str = ""
    # consumer -> the figures above on it, each against the fp32 model on the same consumer;
    # the top-level figures are the first consumer's
    verified_on: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def rows(self) -> list[tuple[str, str]]:
        """Human-readable lines for the CLI."""
        mib = 1024 * 1024
        rows = [
            ("precision", self.precision),
            ("output", self.output),
            ("file size", f"{self.source_bytes / mib:.2f} MiB -> {self.output_bytes / mib:.2f} "
                          f"MiB ({self.output_bytes / max(self.source_bytes, 1):.0%})"),
            ("verified on", f"{self.num_verify} input(s) of {self.size[0]}x{self.size[1]}, "
                            f"{', '.join(self.verified_on or ['onnxruntime'])} (CPU), each "
                            "against fp32 on the same consumer"),
        ]
        for consumer, stats in (self.verified_on or {"onnxruntime": asdict(self)}).items():
            figures = (f"argmax agreement {stats['agreement']:.4%}, mIoU vs fp32 "
                       f"{stats['miou_vs_fp32']:.4f}")
            if stats["max_abs_diff"] is not None:
                figures += f", max |logit diff| {stats['max_abs_diff']:.4g}"
            rows.append((consumer, f"{figures}; ms/forward fp32 {stats['ms_fp32']:.1f}, "
                                   f"{self.precision} {stats['ms_converted']:.1f}"))
        if self.kept_fp32:
            rows.append(("kept in fp32", ", ".join(self.kept_fp32)))
        if self.calibration:
            rows.append(("calibration", self.calibration))
        return rows


def load_fp32(path: Path) -> tuple[onnx.ModelProto, Contract]:
    """The FP32 model to convert, weights loaded, and its contract."""
    model = load_onnx_proto(os.fspath(path), load_weights=True)
    contract = require_contract(model, os.fspath(path))
    if contract.precision != "fp32":
        raise IsdnetError(f"{path} is already {contract.precision}; convert from the fp32 model")
    return model, contract


# --- verification -----------------------------------------------------------------------------

def _open_converted(path: Path, backend: str) -> runtime.Backend:
    """Open a just-converted model; if the consumer cannot load it, raise the consumer's
    own error. The backend's wording ("truncated, corrupt or not ONNX") is meant for a
    user's file; for a graph written moments ago the reason (a type error, an unsupported
    op) is what the user needs to see."""
    try:
        return runtime.open_backend(path, backend, "cpu")
    except IsdnetError as exc:
        raise (exc.__context__ or exc) from None


def _labels(output: np.ndarray, contract: Contract) -> np.ndarray:
    """(H, W) labels of the first output: argmax over classes for logits."""
    if contract.output_kind == "labels":
        return output.reshape(output.shape[-2:])
    spec = contract.outputs[0]
    axis = spec.layout.index("C") if "C" in spec.layout else 1
    return np.argmax(output, axis=axis).reshape(output.shape[-2:] if axis == 1 else
                                                output.shape[1:3])


def verify_against(reference: Path, candidate: Path, contract: Contract, source: ImageSource,
                   num_verify: int, progress: bool = True,
                   backend: str = "onnxruntime") -> dict[str, Any]:
    """Argmax agreement, mIoU, logit difference and CPU time of ``candidate`` vs FP32, by the
    project's one comparator.

    Both models are opened through the runtime's ``backend`` (an ONNX consumer, on the CPU),
    as a deployment opens them. The consumer's errors about ``candidate`` propagate as
    raised.
    """
    from tqdm.auto import tqdm

    from ..metrics.comparator import Comparator, Outputs

    def side(backend: runtime.Backend) -> Any:
        def run(feeds: dict[str, np.ndarray]) -> Outputs:
            output = backend.run(feeds)[backend.output_names[0]]
            logits = output if contract.output_kind == "logits" else None
            return Outputs(labels=_labels(output, contract), logits=logits)
        return run

    with ExitStack() as opened:
        ref = opened.enter_context(runtime.open_backend(reference, backend, "cpu"))
        cand = opened.enter_context(_open_converted(candidate, backend))
        warm = source.feeds(0)
        ref_warm = ref.run(warm)[ref.output_names[0]]  # first runs allocate: not timed
        cand.run(warm)
        num_classes = contract.num_classes or int(ref_warm.shape[1])
        comparator = Comparator(("fp32", side(ref)), [("converted", side(cand))], num_classes)
        n = min(num_verify, source.count) if source.images else num_verify
        for i in tqdm(range(n), desc=f"verifying on {backend}", unit="input",
                      disable=not progress):
            comparator.add(warm if i == 0 else source.feeds(i))
            if comparator.stats[0].nonfinite:
                raise IsdnetError(f"the converted model produced {comparator.stats[0].nonfinite}"
                                  " NaN/Inf logits (FP16 overflow?); keep more ops in fp32")
    stats = comparator.stats[0]
    return {
        "num_verify": n,
        "agreement": stats.agreement,
        "miou_vs_fp32": float(stats.miou_vs_reference()),
        "max_abs_diff": stats.max_abs_diff,
        "ms_fp32": 1000.0 * statistics.median(comparator.reference_seconds),
        "ms_converted": 1000.0 * statistics.median(stats.seconds),
    }


def finish_conversion(tmp: Path, src: Path, dst: Path, model: onnx.ModelProto,
                      contract: Contract, precision: str, source: ImageSource, num_verify: int,
                      min_agreement: float | None, progress: bool,
                      verify_on: Sequence[str] | None = None,
                      **report_fields: Any) -> PrecisionReport:
    """The last step of both transforms: embed the contract with ``precision``, save to
    ``tmp``, verify against ``src`` on every consumer of ``verify_on`` (default: every
    installed one), refuse below ``min_agreement`` on any of them and warn below
    ``WARN_AGREEMENT``. The caller moves ``tmp`` to ``dst`` when this returns."""
    consumers = check_consumers(installed_consumers() if verify_on is None else verify_on)
    new_contract = replace(contract, precision=precision,
                           opset=max((o.version for o in model.opset_import
                                      if o.domain in ("", "ai.onnx")), default=contract.opset))
    embed_in_onnx(model, new_contract)
    onnx.save_model(model, os.fspath(tmp))
    verified_on = {}
    for consumer in consumers:
        try:
            verified_on[consumer] = verify_against(src, tmp, contract, source, num_verify,
                                                   progress, consumer)
        except IsdnetError as exc:
            raise IsdnetError(f"on {consumer}: {exc}") from exc
        except Exception as exc:  # the consumer's Fail/InvalidGraph/RuntimeError…
            raise IsdnetError(f"the {precision} model does not run on {consumer} "
                              f"({one_line(exc)}); nothing was written") from None
    first = verified_on[consumers[0]]
    report = PrecisionReport(precision=precision, source=os.fspath(src), output=os.fspath(dst),
                             source_bytes=src.stat().st_size, output_bytes=tmp.stat().st_size,
                             size=list(source.size), **first, verified_on=verified_on,
                             **report_fields)
    worst_consumer, worst = min(verified_on.items(), key=lambda item: item[1]["agreement"])
    if min_agreement is not None and worst["agreement"] < min_agreement:
        raise IsdnetError(
            f"the {precision} model agrees with fp32 on only {worst['agreement']:.2%} of pixels "
            f"on {worst_consumer} (required {min_agreement:.2%}); nothing was written. "
            + ("Calibrate on real images (--calib DIR)" if precision == "int8"
               else "Keep more ops in fp32 (--keep-fp32)")
            + " or lower --min-agreement")
    if worst["agreement"] < WARN_AGREEMENT:
        message = (f"the {precision} model agrees with fp32 on only {worst['agreement']:.2%} "
                   f"of pixels on {worst_consumer} (mIoU vs fp32 {worst['miou_vs_fp32']:.3f}); "
                   "check its accuracy before deploying it")
        warnings.warn(message, AgreementWarning, stacklevel=3)
    log.info("%s model verified: %.4f%% argmax agreement", precision, 100 * report.agreement)
    return report


# --- the transforms ---------------------------------------------------------------------------

def __getattr__(name: str) -> Any:
    """``convert_fp16`` and ``quantize_int8``, imported on first use: their modules build on
    this one, so importing them here at load time would be circular."""
    if name == "convert_fp16":
        from .fp16 import convert_fp16

        return convert_fp16
    if name == "quantize_int8":
        from .int8 import quantize_int8

        return quantize_int8
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
