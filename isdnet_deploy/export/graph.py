"""The module that is traced into ONNX: ISDNet plus the chosen I/O form.

Kept apart from the exporter so the variants (pyramid inside or outside, float or uint8
input, logits or labels output, labels resized in the graph or not) are plain, testable
PyTorch.
"""

from __future__ import annotations

import torch
from torch import nn

from ..profiles import MAX_SIZE, MEAN_RGB, STD_RGB
from .exact_index import linear_taps


def _lerp_rows(x: torch.Tensor, taps: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Rows of ``x`` (dim 2) interpolated: ``a * w0 + b * w1``, both products rounded.
    Gathering whole rows lets ONNX Runtime copy blocks instead of single elements."""
    first, second, first_weight, second_weight = taps
    return (x.index_select(2, first) * first_weight[:, None]
            + x.index_select(2, second) * second_weight[:, None])


def _within_twice(out: torch.Tensor, side: int | torch.Tensor) -> torch.Tensor:
    """``out`` clamped to [side, min(2 * side, MAX_SIZE)]: callers check that range already
    (Python: ``preprocess.check_output_size``; C: ``isd_check_size``), so this never changes
    a value; it states the bound inside the graph, so the export-time range proof
    (``portability.py``) can bound the indices computed from a size that is an input
    (``exact_index`` keeps Div operands below 2**23 for sides up to MAX_SIZE)."""
    side = torch.as_tensor(side, dtype=torch.int64)
    return torch.minimum(torch.maximum(out.to(torch.int64), side),
                         torch.clamp(2 * side, max=MAX_SIZE))


def resize_logits(logits: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
    """1xCxhxw scores resized bilinearly to ``size`` ([H, W] int32, each from the input's
    size up to twice it): the arithmetic of ``runtime.preprocess.logits_to_labels`` (columns
    first, then rows), so labels from this graph equal the runtime's labels from logits.
    The taps are ``exact_index``'s integer form, so the graph stays provably int32-safe
    (an earlier form cast a float ratio to an integer, which no consumer need agree on).
    """
    columns = linear_taps(logits.shape[3], _within_twice(size[1], logits.shape[3]))
    rows = linear_taps(logits.shape[2], _within_twice(size[0], logits.shape[2]))
    resized = _lerp_rows(logits.transpose(2, 3), columns).transpose(2, 3)
    return _lerp_rows(resized, rows)


class DeployGraph(nn.Module):
    """``forward(image, residual, output_size)``; the inputs a variant does not declare are
    None (onnx_export passes them in this order)."""

    def __init__(self, model: nn.Module, *, pyramid: str = "graph", input_kind: str = "float",
                 output_kind: str = "logits", labels_dtype: str = "uint8",
                 output_resize: str = "none",
                 mean: tuple[float, ...] = MEAN_RGB, std: tuple[float, ...] = STD_RGB) -> None:
        super().__init__()
        self.model = model
        self.external_pyramid = pyramid == "external"
        self.uint8_input = input_kind == "uint8"
        self.labels = output_kind == "labels"
        self.resize_in_graph = output_resize == "graph"
        self.labels_dtype = torch.uint8 if labels_dtype == "uint8" else torch.int32
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def normalise(self, image: torch.Tensor) -> torch.Tensor:
        """1xHxWx3 RGB bytes -> normalised 1x3xHxW, as (x - mean) / std in float32."""
        return (image.permute(0, 3, 1, 2).to(torch.float32) - self.mean) / self.std

    def forward(self, image: torch.Tensor, residual: torch.Tensor | None = None,
                output_size: torch.Tensor | None = None) -> torch.Tensor:
        if self.uint8_input:
            image = self.normalise(image)
        logits = self.model(image, shallow_input=residual if self.external_pyramid else None)
        if not self.labels:
            return logits
        if self.resize_in_graph:
            logits = resize_logits(logits, output_size)
        return logits.argmax(dim=1)[0].to(self.labels_dtype)
