"""Static INT8 written into the ONNX graph as Q/DQ nodes, calibrated with ONNX Runtime."""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import onnx

from ..data.headers import DEFAULT_MAX_PIXELS
from ..errors import IsdnetError
from ..fileio import atomic_output
from .calibration import (
    CalibrationReader,
    ImageChoice,
    describe_split,
    held_out_split,
    input_size,
    select_images,
)
from .graph_index import GraphIndex, name_nodes
from .graph_passes import head_nodes, pyramid_nodes
from .precision import CalibrationWarning, PrecisionReport, finish_conversion, load_fp32

log = logging.getLogger(__name__)

INT8_TARGETS = ("tensorrt", "cpu")
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


def quantize_int8(src: str | os.PathLike, dst: str | os.PathLike,
                  calib_images: ImageChoice = None,
                  *, num_synthetic: int = 16, max_images: int = 32,
                  size: tuple[int, int] | None = None, num_verify: int = 4,
                  min_agreement: float | None = None, seed: int = 0,
                  op_types: Sequence[str] | None = None, exclude_head: bool = True,
                  keep_pyramid_float: bool = True,
                  target: str = "tensorrt", progress: bool = True,
                  max_pixels: int | None = DEFAULT_MAX_PIXELS,
                  verify_on: Sequence[str] | None = None) -> PrecisionReport:
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
    model, contract = load_fp32(src)
    size = input_size(contract, size)
    images = select_images(calib_images, max_images + num_verify, seed)
    if images is None:
        message = (f"no calibration images given: calibrating INT8 on {num_synthetic} synthetic "
                   "images; accuracy on real data is NOT verified, pass --calib DIR with "
                   "~32 representative images")
        warnings.warn(message, CalibrationWarning, stacklevel=2)
    source, verify_source = held_out_split(contract, size, images, num_synthetic=num_synthetic,
                                           num_verify=num_verify, max_images=max_images,
                                           seed=seed, max_pixels=max_pixels)
    reader = CalibrationReader(source, progress)
    if op_types is None:
        op_types = CPU_INT8_OP_TYPES if target == "cpu" else INT8_OP_TYPES

    with tempfile.TemporaryDirectory(prefix="isdnet-int8-") as work:
        prepared = Path(work, "prepared.onnx")
        name_nodes(model)
        onnx.save_model(model, os.fspath(prepared))
        try:
            quant_pre_process(os.fspath(prepared), os.fspath(prepared), skip_symbolic_shape=True)
        except Exception as exc:  # the pre-pass is an optimization: quantize without it
            log.warning("ONNX Runtime quantization pre-processing failed (%s); going on "
                        "without it", exc)
        prepared_model = onnx.load(os.fspath(prepared))
        name_nodes(prepared_model)
        index = GraphIndex(prepared_model)
        excluded = head_nodes(index) if exclude_head else []
        if keep_pyramid_float:
            excluded += [n for n in pyramid_nodes(index) if n not in excluded]
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
            return finish_conversion(tmp, src, dst, result, contract, "int8", verify_source,
                                     num_verify, min_agreement, progress, verify_on,
                                     excluded_nodes=excluded,
                                     calibration=describe_split(source, verify_source))
