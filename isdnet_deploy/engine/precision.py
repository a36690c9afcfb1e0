"""Reduced precision written into the ONNX graph: FP16 casts and INT8 Q/DQ nodes.

TensorRT 11 dropped the FP16/INT8 builder flags and implicit INT8 calibration; a network's
precision must be in the graph itself (strong typing). Doing the transform here, on the ONNX,
serves TensorRT 10 and 11 alike and lets every result be checked on ONNX Runtime CPU against
the FP32 model before anyone builds an engine from it.

Both transforms copy the artifact contract with ``precision`` changed, verify argmax agreement
and mIoU against the FP32 model on calibration-like inputs, and only then move the output into
place (a failed or rejected transform leaves no file behind).
"""

from __future__ import annotations

import logging
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnx
from onnx import helper

from ..contract import (
    METADATA_KEY,
    Contract,
    embed_in_onnx,
    load_onnx_proto,
    read_onnx_contract,
)
from ..data.images import read_image
from ..errors import IsdnetError
from ..fileio import atomic_output
from ..metrics.parity import logit_parity
from ..metrics.segmentation import ConfusionAccumulator, scores
from ..runtime.preprocess import prepare_feeds, resize_image, scaled_size

log = logging.getLogger(__name__)

# Ops kept in FP32 by default. On the random-weight ISDNet the FP16 model keeps 99.5-99.7%
# argmax agreement with or without this list (its drift equals that of rounding only the
# input to FP16), so the list is a safeguard rather than a measured gain: Resize takes FP32
# scales in ONNX and resizes the final logits, ArgMax decides the labels, ReduceMean sums a
# whole feature map, Sigmoid/Softmax make the attention weights. All are cheap.
DEFAULT_KEEP_FP32: tuple[str, ...] = ("Resize", "ArgMax", "ReduceMean", "Sigmoid", "Softmax")
# Ops whose inputs get Q/DQ pairs: the ones TensorRT runs as INT8 kernels (convolutions and
# matrix products) plus the joins and pools that let it keep INT8 between them.
INT8_OP_TYPES: tuple[str, ...] = ("Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Concat",
                                  "MaxPool", "AveragePool")
# ONNX Runtime's QDQ quantizer folds a Relu that follows a quantized node into that node's
# asymmetric UINT8 output range when Relu is on its list. Left off, every Conv+ReLU of the
# shallow net goes through Q -> DQ -> float Relu -> Q at full resolution: measured at
# 1958x1958, folding took ONNX Runtime from 658 to 551 ms per forward (random weights) and
# agreement with FP32 from 99.80% to 99.84% (trained weights): ReLU outputs get all 256
# levels instead of the positive half.
CPU_INT8_OP_TYPES: tuple[str, ...] = (*INT8_OP_TYPES, "Relu")
# Held-out verification images of synthetic calibration: seeds far from the calibration ones.
VERIFY_SEED_OFFSET = 10_000
# Calibration and verification size for dynamic models: activation ranges are statistics of
# image content, nearly independent of the crop size, and a forward pass at the paper's
# 1958x1958 takes seconds on a CPU.
DEFAULT_CALIB_SIZE = (512, 512)
# Below this argmax agreement with FP32 a converted model is reported loudly; a caller who
# wants a hard gate passes ``min_agreement`` and gets no file below it.
WARN_AGREEMENT = 0.99
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")


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
                            "ONNX Runtime CPU"),
            ("argmax agreement", f"{self.agreement:.4%}"),
            ("mIoU vs fp32", f"{self.miou_vs_fp32:.4f}"),
            ("CPU ms/forward", f"fp32 {self.ms_fp32:.1f}, {self.precision} "
                               f"{self.ms_converted:.1f}"),
        ]
        if self.max_abs_diff is not None:
            rows.append(("max |logit diff|", f"{self.max_abs_diff:.4g}"))
        if self.kept_fp32:
            rows.append(("kept in fp32", ", ".join(self.kept_fp32)))
        if self.calibration:
            rows.append(("calibration", self.calibration))
        return rows


# --- contract ---------------------------------------------------------------------------

def load_contract(model: onnx.ModelProto, where: str = "model") -> Contract:
    """The contract in ONNX metadata; an ONNX without one was not exported by this toolkit."""
    contract = read_onnx_contract(model)
    if contract is None:
        raise IsdnetError(f"{where} has no isdnet-deploy contract in its metadata (key "
                          f"{METADATA_KEY!r}); export it with: isdnet-deploy export")
    return contract


def _load(path: str | os.PathLike) -> tuple[onnx.ModelProto, Contract]:
    model = load_onnx_proto(os.fspath(path), load_weights=True)
    contract = load_contract(model, os.fspath(path))
    if contract.precision != "fp32":
        raise IsdnetError(f"{path} is already {contract.precision}; convert from the fp32 model")
    return model, contract


# --- inputs --------------------------------------------------------------------------------

def list_calibration_images(folder: str | os.PathLike) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise IsdnetError(f"calibration folder {folder} does not exist or is not a folder")
    images = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise IsdnetError(f"calibration folder {folder} holds no images "
                          f"({', '.join(IMAGE_SUFFIXES)}); point --calib at the images to "
                          "calibrate on, or leave it out to use synthetic images")
    return images


def synthetic_image(size: tuple[int, int], seed: int) -> np.ndarray:
    """A seeded RGB image with smooth structure at several scales (not white noise, whose
    activation ranges look nothing like a photograph's)."""
    h, w = size
    rng = np.random.default_rng(seed)
    acc = np.zeros((h, w, 3), np.float32)
    for cells, weight in ((3, 0.45), (12, 0.3), (48, 0.15)):
        coarse = rng.random((cells, cells, 3), dtype=np.float32)
        acc += weight * cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    acc += 0.1 * rng.random((h, w, 3), dtype=np.float32)
    return np.clip(acc * 255.0, 0, 255).astype(np.uint8)


def _as_network_input(image: np.ndarray, contract: Contract,
                      size: tuple[int, int]) -> np.ndarray:
    """Scale like inference does (the profile's test scale), then centre-crop to ``size``."""
    h, w = size
    if not contract.dynamic:
        return resize_image(image, (h, w))
    image = resize_image(image, scaled_size(*image.shape[:2], contract.test_scale))
    ih, iw = image.shape[:2]
    if ih < h or iw < w:
        scale = max(h / ih, w / iw)
        image = resize_image(image, (max(h, round(ih * scale)), max(w, round(iw * scale))))
        ih, iw = image.shape[:2]
    top, left = (ih - h) // 2, (iw - w) // 2
    return np.ascontiguousarray(image[top:top + h, left:left + w])


def _input_size(contract: Contract, size: tuple[int, int] | None) -> tuple[int, int]:
    if not contract.dynamic and contract.fixed_size:
        fixed = (int(contract.fixed_size[0]), int(contract.fixed_size[1]))
        if size is not None and tuple(size) != fixed:
            raise IsdnetError(f"this model has a fixed input size {fixed[0]}x{fixed[1]}; "
                              f"it cannot be calibrated or verified at {size[0]}x{size[1]}")
        return fixed
    size = tuple(size or DEFAULT_CALIB_SIZE)
    if min(size) < contract.min_size:
        raise IsdnetError(f"size {size[0]}x{size[1]} is below the model's minimum "
                          f"{contract.min_size}x{contract.min_size}")
    return int(size[0]), int(size[1])


class _ImageSource:
    """Calibration-like network inputs: real images when given, else seeded synthetic ones."""

    def __init__(self, contract: Contract, size: tuple[int, int],
                 images: Sequence[Path] | None, count: int, seed: int) -> None:
        self.contract, self.size, self.images = contract, size, list(images or [])
        self.count = len(self.images) if self.images else count
        self.seed = seed

    def feeds(self, index: int) -> dict[str, np.ndarray]:
        if self.images:
            image = _as_network_input(read_image(self.images[index]), self.contract, self.size)
        else:
            image = synthetic_image(self.size, self.seed + index)
        return prepare_feeds(image, self.contract)

    def describe(self) -> str:
        if self.images:
            return f"{self.count} image(s) from {self.images[0].parent}"
        return f"{self.count} seeded synthetic image(s) (seed {self.seed})"


def _select_images(calib_images: Sequence[str | os.PathLike] | str | os.PathLike | None,
                   max_images: int, seed: int) -> list[Path] | None:
    if calib_images is None:
        return None
    if isinstance(calib_images, (str, os.PathLike)):
        images = list_calibration_images(calib_images)
    else:
        images = [Path(p) for p in calib_images]
        if not images:
            raise IsdnetError("the list of calibration images is empty; pass images, or None "
                              "to calibrate on synthetic images")
        absent = [p for p in images if not p.is_file()]
        if absent:
            raise IsdnetError(f"calibration image {absent[0]} does not exist")
    if len(images) > max_images:
        picks = np.random.default_rng(seed).choice(len(images), max_images, replace=False)
        images = [images[i] for i in sorted(picks)]
    return images


# --- verification -----------------------------------------------------------------------------

def _session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])


def _labels(output: np.ndarray, contract: Contract) -> np.ndarray:
    """(H, W) labels of the first output: argmax over classes for logits."""
    if contract.output_kind == "labels":
        return output.reshape(output.shape[-2:])
    spec = contract.outputs[0]
    axis = spec.layout.index("C") if "C" in spec.layout else 1
    return np.argmax(output, axis=axis).reshape(output.shape[-2:] if axis == 1 else
                                                output.shape[1:3])


def _timed(session: Any, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    output = session.run([session.get_outputs()[0].name], feeds)[0]
    return output, (time.perf_counter() - start) * 1000.0


def verify_against(reference: str | os.PathLike, candidate: str | os.PathLike,
                   contract: Contract, source: _ImageSource, num_verify: int,
                   progress: bool = True) -> dict[str, Any]:
    """Argmax agreement, mIoU, logit difference and CPU time of ``candidate`` vs FP32."""
    from tqdm.auto import tqdm

    ref_session, cand_session = _session(Path(reference)), _session(Path(candidate))
    warm = source.feeds(0)
    ref_session.run(None, warm)
    cand_session.run(None, warm)
    num_classes = contract.num_classes or int(ref_session.get_outputs()[0].shape[1])
    confusion = ConfusionAccumulator(num_classes, ignore_index=None)
    max_diff = 0.0
    ms_ref: list[float] = []
    ms_cand: list[float] = []
    n = min(num_verify, source.count) if source.images else num_verify
    for i in tqdm(range(n), desc="verifying", unit="input", disable=not progress):
        feeds = warm if i == 0 else source.feeds(i)
        ref_out, t_ref = _timed(ref_session, feeds)
        cand_out, t_cand = _timed(cand_session, feeds)
        ms_ref.append(t_ref)
        ms_cand.append(t_cand)
        confusion.update(_labels(cand_out, contract), _labels(ref_out, contract))
        if contract.output_kind == "logits":
            parity = logit_parity(ref_out, cand_out)
            if parity["nonfinite"]:
                raise IsdnetError(f"the converted model produced {parity['nonfinite']} "
                                  "NaN/Inf logits (FP16 overflow?); keep more ops in fp32")
            max_diff = max(max_diff, parity["max_abs_diff"])
    matrix = confusion.matrix
    miou = scores(matrix, [str(k) for k in range(num_classes)])["miou"]
    return {
        "num_verify": n,
        "agreement": float(np.trace(matrix)) / max(int(matrix.sum()), 1),
        "miou_vs_fp32": float(miou),
        "max_abs_diff": max_diff if contract.output_kind == "logits" else None,
        "ms_fp32": statistics.median(ms_ref),
        "ms_converted": statistics.median(ms_cand),
    }


def _finish(tmp: Path, src: Path, dst: Path, model: onnx.ModelProto, contract: Contract,
            precision: str, source: _ImageSource, num_verify: int,
            min_agreement: float | None,
            progress: bool, **report_fields: Any) -> PrecisionReport:
    new_contract = replace(contract, precision=precision,
                           opset=max((o.version for o in model.opset_import
                                      if o.domain in ("", "ai.onnx")), default=contract.opset))
    embed_in_onnx(model, new_contract)
    onnx.save_model(model, os.fspath(tmp))
    try:
        stats = verify_against(src, tmp, contract, source, num_verify, progress)
    except IsdnetError:
        raise
    except Exception as exc:  # ONNX Runtime's Fail/InvalidGraph/RuntimeException…
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else repr(exc)
        raise IsdnetError(f"the {precision} model does not run on ONNX Runtime ({first}); "
                          "nothing was written") from None
    report = PrecisionReport(precision=precision, source=os.fspath(src), output=os.fspath(dst),
                             source_bytes=src.stat().st_size, output_bytes=tmp.stat().st_size,
                             size=list(source.size), **stats, **report_fields)
    if min_agreement is not None and report.agreement < min_agreement:
        raise IsdnetError(
            f"the {precision} model agrees with fp32 on only {report.agreement:.2%} of pixels "
            f"(required {min_agreement:.2%}); nothing was written. "
            + ("Calibrate on real images (--calib DIR)" if precision == "int8"
               else "Keep more ops in fp32 (--keep-fp32)")
            + " or lower --min-agreement")
    if report.agreement < WARN_AGREEMENT:
        message = (f"the {precision} model agrees with fp32 on only {report.agreement:.2%} of "
                   f"pixels (mIoU vs fp32 {report.miou_vs_fp32:.3f}); check its accuracy "
                   "before deploying it")
        warnings.warn(message, AgreementWarning, stacklevel=3)
    log.info("%s model verified: %.4f%% argmax agreement", precision, 100 * report.agreement)
    return report


# --- FP16 ----------------------------------------------------------------------------------

def shape_nodes(model: onnx.ModelProto) -> list[str]:
    """Nodes computing on tensor shapes (sizes, resize targets, index ranges).

    They must stay FP32: FP16 holds integers exactly only up to 2048, so a 2448-pixel side
    would round, and the converter mistypes Casts feeding such nodes.
    """
    constants = {i.name for i in model.graph.initializer}
    derived: set[str] = set()
    names: list[str] = []
    for node in model.graph.node:
        inputs = [i for i in node.input if i]
        if node.op_type == "Constant":
            constants.update(node.output)
        elif node.op_type in ("Shape", "Size"):
            derived.update(node.output)
        elif inputs and any(i in derived for i in inputs) and all(
                i in derived or i in constants for i in inputs):
            derived.update(node.output)
            names.append(node.name)
    return names


_FLOATS = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE,
           onnx.TensorProto.BFLOAT16}
# Where a walk back from an index computation stops: these carry the image data path.
_DATA_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul"}


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    graph = onnx.shape_inference.infer_shapes(model).graph
    types = {v.name: v.type.tensor_type.elem_type
             for v in [*graph.input, *graph.value_info, *graph.output]}
    types.update({i.name: i.data_type for i in graph.initializer})
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].t.ByteSize():
            types[node.output[0]] = node.attribute[0].t.data_type
    return types


def index_nodes(model: onnx.ModelProto) -> list[str]:
    """Nodes that compute integers from floats: index and size arithmetic ending in a Cast to
    an integer type or a comparison (the exported pyramid's legacy-nearest picks, say).

    FP16 would clamp their constants (2**23 becomes 65504) and round their values, so they
    and the Constants they read stay FP32. Found by walking back over float tensors from
    each float->integer/bool node, stopping at convolutions and matrix products.
    """
    types = _elem_types(model)
    producers = {out: node for node in model.graph.node for out in node.output}
    stack = [node for node in model.graph.node
             if any(types.get(i) in _FLOATS for i in node.input if i)
             and all(types.get(o, 0) not in _FLOATS | {0} for o in node.output)]
    marked = dict.fromkeys(node.name for node in stack)
    while stack:
        node = stack.pop()
        for name in node.input:
            producer = producers.get(name)
            if (producer is None or producer.name in marked or types.get(name) not in _FLOATS
                    or producer.op_type in _DATA_OPS):
                continue
            marked[producer.name] = None
            stack.append(producer)
    return list(marked)


def integer_casts(model: onnx.ModelProto) -> list[str]:
    """Casts from integer or bool tensors (e.g. uint8 pixels) to float.

    They are where float data starts; the converter retypes them to FP16 but not the types
    it inferred for their outputs, leaving an invalid graph. Kept FP32, a Cast to FP16
    follows them instead.
    """
    types = _elem_types(model)
    return [node.name for node in model.graph.node
            if node.op_type == "Cast" and types.get(node.input[0], 0) not in _FLOATS | {0}]


def _split_shared_constants(model: onnx.ModelProto, blocked: set[str],
                            blocked_ops: set[str]) -> None:
    """Give kept-FP32 nodes their own copy of constants they share with converted nodes.

    The converter leaves a float initializer (or Constant) FP32 when any kept node reads it,
    and then a converted reader mixes FP16 and FP32 inputs (an invalid graph); exporters and
    onnxslim share equal constants freely, so this happens.
    """
    def is_blocked(node: onnx.NodeProto) -> bool:
        return node.name in blocked or node.op_type in blocked_ops

    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    constants = {n.output[0]: n for n in model.graph.node
                 if n.op_type == "Constant" and n.attribute
                 and n.attribute[0].t.data_type == onnx.TensorProto.FLOAT}
    initializers = {i.name: i for i in model.graph.initializer
                    if i.data_type == onnx.TensorProto.FLOAT}
    for name in [*initializers, *constants]:
        users = readers.get(name, [])
        kept = [n for n in users if is_blocked(n)]
        if not kept or len(kept) == len(users):
            continue
        copy = f"{name}_fp32"
        if name in initializers:
            tensor = onnx.TensorProto()
            tensor.CopyFrom(initializers[name])
            tensor.name = copy
            model.graph.initializer.append(tensor)
        else:
            source = constants[name]
            node = helper.make_node("Constant", [], [copy], name=f"{source.name}_fp32")
            node.attribute.extend(source.attribute)
            model.graph.node.insert(list(model.graph.node).index(source) + 1, node)
            blocked.add(node.name)
        for user in kept:
            for i, inp in enumerate(user.input):
                if inp == name:
                    user.input[i] = copy


def _drop_fp16_round_trips(model: onnx.ModelProto) -> int:
    """Let kept-FP32 nodes feed each other directly.

    The converter casts every output of a kept node to FP16 and back to FP32 before the next
    kept node, and leaves some of those pairs in place (when the FP16 tensor has several
    readers). That round trip clamps index arithmetic (2**24 becomes inf) and defeats
    keeping the node in FP32, so each FP32<-FP16<-FP32 chain becomes an Identity.
    """
    types = _elem_types(model)
    producers = {out: node for node in model.graph.node for out in node.output}

    def cast_to(node: onnx.NodeProto) -> int | None:
        if node.op_type != "Cast":
            return None
        return next((a.i for a in node.attribute if a.name == "to"), None)

    dropped = 0
    for node in model.graph.node:
        if cast_to(node) != onnx.TensorProto.FLOAT:
            continue
        inner = producers.get(node.input[0])
        if (inner is not None and cast_to(inner) == onnx.TensorProto.FLOAT16
                and types.get(inner.input[0]) == onnx.TensorProto.FLOAT):
            node.op_type = "Identity"
            node.input[0] = inner.input[0]
            del node.attribute[:]
            dropped += 1
    used = {name for node in model.graph.node for name in node.input}
    used.update(o.name for o in model.graph.output)
    dead = [n for n in model.graph.node
            if cast_to(n) == onnx.TensorProto.FLOAT16 and n.output[0] not in used]
    for node in dead:
        model.graph.node.remove(node)
    return dropped


def _restore_output_types(model: onnx.ModelProto, types: dict[str, int]) -> None:
    """Give graph outputs their original types back.

    The converter casts the output of a kept-FP32 node (the final Resize) to FP16 even with
    ``keep_io_types``; that Cast is retargeted, or a Cast appended, so outputs keep their
    type and the logits are not rounded on the way out.
    """
    producers = {out: node for node in model.graph.node for out in node.output}
    for output in model.graph.output:
        original = types.get(output.name)
        tensor_type = output.type.tensor_type
        if original is None or tensor_type.elem_type == original:
            continue
        node = producers[output.name]
        if node.op_type == "Cast":
            for attr in node.attribute:
                if attr.name == "to":
                    attr.i = original
        else:
            inner = f"{output.name}_converted"
            node.output[list(node.output).index(output.name)] = inner
            model.graph.node.append(helper.make_node("Cast", [inner], [output.name],
                                                     name=f"{output.name}_restore_type",
                                                     to=original))
        tensor_type.elem_type = original


def convert_fp16(src: str | os.PathLike, dst: str | os.PathLike,
                 keep_fp32: Sequence[str] = DEFAULT_KEEP_FP32, *,
                 verify_images: Sequence[str | os.PathLike] | str | os.PathLike | None = None,
                 num_verify: int = 4, size: tuple[int, int] | None = None,
                 min_agreement: float | None = None, seed: int = 0,
                 progress: bool = True) -> PrecisionReport:
    """FP16 weights and activations with FP32 I/O; ``keep_fp32`` op types stay FP32."""
    from onnxconverter_common import float16

    src, dst = Path(src), Path(dst)
    model, contract = _load(src)
    size = _input_size(contract, size)
    images = _select_images(verify_images, num_verify, seed)
    source = _ImageSource(contract, size, images, num_verify, seed)
    _name_nodes(model)
    io_types = {v.name: v.type.tensor_type.elem_type for v in model.graph.output}
    # Stale or duplicated value_info (onnxslim writes some twice) misleads the converter's
    # retyping; it re-infers every shape anyway.
    del model.graph.value_info[:]
    blocked = set(shape_nodes(model) + index_nodes(model) + integer_casts(model))
    _split_shared_constants(model, blocked, set(keep_fp32))
    try:
        with warnings.catch_warnings():  # one warning per weight clamped to FP16's range
            warnings.filterwarnings("ignore", category=UserWarning,
                                    module="onnxconverter_common")
            converted = float16.convert_float_to_float16(
                model, keep_io_types=True, op_block_list=sorted(set(keep_fp32)),
                node_block_list=sorted(blocked))
    except Exception as exc:  # the converter raises bare ValueError/KeyError on odd graphs
        raise IsdnetError(f"FP16 conversion of {src} failed ({exc}); re-export the model "
                          "or keep the offending op in fp32 with --keep-fp32") from None
    _restore_output_types(converted, io_types)
    _drop_fp16_round_trips(converted)
    with atomic_output(dst) as tmp:
        return _finish(tmp, src, dst, converted, contract, "fp16", source, num_verify,
                       min_agreement, progress, kept_fp32=sorted(set(keep_fp32)),
                       calibration=source.describe())


# --- INT8 ---------------------------------------------------------------------------------

def head_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the classifier convolution(s) and everything after them.

    Quantizing the logits to 256 levels flips near-tied pixels; the head is a tiny share of
    the compute, so it stays in float.
    """
    producers = {out: node for node in model.graph.node for out in node.output}
    head: list[str] = []
    seen: set[str] = set()
    stack = [o.name for o in model.graph.output]
    while stack:
        node = producers.get(stack.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        head.append(node.name)
        if node.op_type not in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
            stack.extend(node.input)
    return head


def pyramid_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the in-graph Laplacian pyramid's nodes (the exporter's ``lap_pyramid`` scope).

    The pyramid's outputs are small high-frequency residuals next to a full-range image:
    8 bits flatten them, and its ops gain nothing from INT8 (the upsampling ConvTranspose
    stays float between extra Q/DQ pairs). On a trained synthetic-task ISDNet, held-out
    images at 1958x1958, keeping it float took argmax agreement with FP32 from 97.95% to
    99.80%; the ONNX Runtime CPU forward went from 942 to 658 ms (random weights).
    """
    return [n.name for n in model.graph.node if "/lap_pyramid/" in n.name]


def _name_nodes(model: onnx.ModelProto) -> None:
    """ONNX Runtime's quantizer addresses nodes by name; give unnamed ones a stable one."""
    used = {n.name for n in model.graph.node if n.name}
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in used:
                name += "_"
            node.name = name
            used.add(name)


class _CalibrationReader:
    """Feeds preprocessed calibration inputs to ONNX Runtime's calibrator, one at a time."""

    def __init__(self, source: _ImageSource, progress: bool) -> None:
        from tqdm.auto import tqdm

        self.source = source
        self.index = 0
        self.bar = tqdm(total=source.count, desc="calibrating", unit="image",
                        disable=not progress)

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.index >= self.source.count:
            self.bar.close()
            return None
        feeds = self.source.feeds(self.index)
        self.index += 1
        self.bar.update(1)
        return feeds

    def rewind(self) -> None:
        self.index = 0
        self.bar.reset()

    def __len__(self) -> int:
        return self.source.count


INT8_TARGETS = ("tensorrt", "cpu")


def _describe_split(calibration: _ImageSource, verification: _ImageSource) -> str:
    if verification is calibration:
        return (f"{calibration.describe()}; verified on the calibration images themselves "
                "(give at least twice --verify images to hold some out)")
    return f"{calibration.describe()}; verified on {verification.describe()} held out"


def quantize_int8(src: str | os.PathLike, dst: str | os.PathLike,
                  calib_images: Sequence[str | os.PathLike] | str | os.PathLike | None = None,
                  *, num_synthetic: int = 16, max_images: int = 32,
                  size: tuple[int, int] | None = None, num_verify: int = 4,
                  min_agreement: float | None = None, seed: int = 0,
                  op_types: Sequence[str] | None = None, exclude_head: bool = True,
                  keep_pyramid_float: bool = True,
                  target: str = "tensorrt", progress: bool = True) -> PrecisionReport:
    """Static INT8 as Q/DQ nodes, in the form the target runs fast.

    The classifier head (``exclude_head``) and the in-graph Laplacian pyramid
    (``keep_pyramid_float``) stay float. Agreement with FP32 is verified on images the
    calibration did not see: other seeds for synthetic calibration; for a folder, the
    ``num_verify`` images picked at random (seeded) when it holds at least twice that many.

    ``tensorrt``: symmetric INT8 activations and per-channel symmetric INT8 weights (zero
    points 0), biases left in float (TensorRT's explicit quantization takes no INT32
    DequantizeLinear). ``cpu``: asymmetric UINT8 activations with INT8 weights and INT32
    biases, the pairing ONNX Runtime's x86 kernels (VNNI u8 x s8 dot products) fuse into
    QLinearConv; symmetric s8 activations stay unfused there and run slower than FP32.
    """
    if target not in INT8_TARGETS:
        raise IsdnetError(f"unknown INT8 target {target!r}; choose one of: "
                          f"{', '.join(INT8_TARGETS)}")
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src, dst = Path(src), Path(dst)
    model, contract = _load(src)
    size = _input_size(contract, size)
    images = _select_images(calib_images, max_images + num_verify, seed)
    if images is None:
        message = (f"no calibration images given: calibrating INT8 on {num_synthetic} synthetic "
                   "images; accuracy on real data is NOT verified, pass --calib DIR with "
                   "~32 representative images")
        warnings.warn(message, CalibrationWarning, stacklevel=2)
    held_out = None  # stays None when a folder is too small to spare verification images
    if images is None:
        held_out = _ImageSource(contract, size, None, num_verify, seed + VERIFY_SEED_OFFSET)
    elif len(images) >= 2 * num_verify:
        picks = set(np.random.default_rng(seed + 1).choice(len(images), num_verify,
                                                           replace=False).tolist())
        held_out = _ImageSource(contract, size, [p for i, p in enumerate(images) if i in picks],
                                num_verify, seed)
        images = [p for i, p in enumerate(images) if i not in picks][:max_images]
    source = _ImageSource(contract, size, images, num_synthetic, seed)
    verify_source = source if held_out is None else held_out
    reader = _CalibrationReader(source, progress)
    if op_types is None:
        op_types = CPU_INT8_OP_TYPES if target == "cpu" else INT8_OP_TYPES

    with tempfile.TemporaryDirectory(prefix="isdnet-int8-") as work:
        prepared = Path(work, "prepared.onnx")
        _name_nodes(model)
        onnx.save_model(model, os.fspath(prepared))
        try:
            quant_pre_process(os.fspath(prepared), os.fspath(prepared), skip_symbolic_shape=True)
        except Exception as exc:  # the pre-pass is an optimization: quantize without it
            log.warning("ONNX Runtime quantization pre-processing failed (%s); going on "
                        "without it", exc)
        prepared_model = onnx.load(os.fspath(prepared))
        _name_nodes(prepared_model)
        excluded = head_nodes(prepared_model) if exclude_head else []
        if keep_pyramid_float:
            excluded += [n for n in pyramid_nodes(prepared_model) if n not in excluded]
        onnx.save_model(prepared_model, os.fspath(prepared))
        quantized = Path(work, "quantized.onnx")
        try:
            quantize_static(
                os.fspath(prepared), os.fspath(quantized), reader,
                quant_format=QuantFormat.QDQ, op_types_to_quantize=list(op_types),
                per_channel=True, reduce_range=False,
                activation_type=QuantType.QInt8 if target == "tensorrt" else QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=excluded, calibrate_method=CalibrationMethod.MinMax,
                extra_options={"ActivationSymmetric": target == "tensorrt",
                               "WeightSymmetric": True,
                               "QuantizeBias": target != "tensorrt"})
        except IsdnetError:
            raise
        except Exception as exc:
            raise IsdnetError(f"INT8 quantization of {src} failed ({exc.__class__.__name__}: "
                              f"{exc})") from None
        result = onnx.load(os.fspath(quantized))
        with atomic_output(dst) as tmp:
            return _finish(tmp, src, dst, result, contract, "int8", verify_source, num_verify,
                           min_agreement, progress, excluded_nodes=excluded,
                           calibration=_describe_split(source, verify_source))
