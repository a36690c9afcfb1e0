"""FP16 weights and activations written into the ONNX graph, FP32 I/O kept."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

from ..data.headers import DEFAULT_MAX_PIXELS
from ..errors import IsdnetError
from ..fileio import atomic_output
from .calibration import ImageChoice, ImageSource, input_size, select_images
from .graph_index import GraphIndex, name_nodes
from .graph_passes import (
    drop_fp16_round_trips,
    index_nodes,
    integer_casts,
    pyramid_nodes,
    restore_output_types,
    shape_nodes,
    split_shared_constants,
)
from .precision import DEFAULT_KEEP_FP32, PrecisionReport, finish_conversion, load_fp32


def convert_fp16(src: str | os.PathLike, dst: str | os.PathLike,
                 keep_fp32: Sequence[str] = DEFAULT_KEEP_FP32, *,
                 verify_images: ImageChoice = None,
                 num_verify: int = 4, size: tuple[int, int] | None = None,
                 min_agreement: float | None = None, seed: int = 0,
                 progress: bool = True, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                 verify_on: Sequence[str] | None = None,
                 keep_pyramid_float: bool = True) -> PrecisionReport:
    """FP16 weights and activations with FP32 I/O; ``keep_fp32`` op types stay FP32.

    ``verify_on``: the ONNX consumers it is verified on (default: every installed one).
    ``keep_pyramid_float``: the in-graph Laplacian pyramid stays FP32, as for INT8. Measured
    on the random-weight ISDNet at 256x256 with the integer-index pyramid
    (``export/exact_index.py``): 74.6 % argmax agreement with FP32 with the pyramid in FP16
    (ONNX Runtime and OpenVINO alike, max |logit diff| 11.8), 99.7 % with it in FP32, the
    same as an external-pyramid export's.
    Shape, index and integer-cast arithmetic stays FP32 too (see ``graph_passes``). The
    source is indexed once for those analyses; the converted model is indexed after its
    outputs are re-routed, for the round-trip pass.
    """
    from onnxconverter_common import float16

    src, dst = Path(src), Path(dst)
    model, contract = load_fp32(src)
    size = input_size(contract, size)
    images = select_images(verify_images, num_verify, seed)
    source = ImageSource(contract, size, images, num_verify, seed, max_pixels)
    name_nodes(model)
    io_types = {v.name: v.type.tensor_type.elem_type for v in model.graph.output}
    # Stale or duplicated value_info (onnxslim writes some twice) misleads the converter's
    # retyping; it re-infers every shape anyway.
    del model.graph.value_info[:]
    index = GraphIndex(model)
    blocked = set(shape_nodes(index) + index_nodes(index) + integer_casts(index)
                  + (pyramid_nodes(index) if keep_pyramid_float else []))
    split_shared_constants(index, blocked, set(keep_fp32))
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
    restore_output_types(GraphIndex(converted), io_types)
    drop_fp16_round_trips(GraphIndex(converted))  # indexed again: outputs were re-routed
    with atomic_output(dst) as tmp:
        return finish_conversion(tmp, src, dst, converted, contract, "fp16", source,
                                 num_verify, min_agreement, progress, verify_on,
                                 kept_fp32=sorted(set(keep_fp32)),
                                 calibration=source.describe())
