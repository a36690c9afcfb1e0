"""The module that is traced into ONNX: ISDNet plus the chosen I/O form.

Kept apart from the exporter so the variants (pyramid inside or outside, float or uint8
input, logits or labels output, labels resized in the graph or not) are plain, testable
PyTorch.
"""

from __future__ import annotations

import torch
from torch import nn

from ..profiles import MEAN_RGB, STD_RGB

_INT = torch.int32
_FLOAT = torch.float32
_TWO_24 = 1 << 24


def _int32(value: int | torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(value).to(_INT)


def _div(a: torch.Tensor, b: int) -> torch.Tensor:
    return torch.div(a, b, rounding_mode="trunc")


def linear_taps(in_size: int | torch.Tensor, out_size: int | torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """First and second source index and their weights, per output pixel, of PyTorch's
    bilinear resize (align_corners=False) from ``in_size`` up to ``out_size`` <= 2 x
    ``in_size`` along one axis; equal to ``pyramid.opencv_ops.bilinear_taps``.

    PyTorch rounds ``(i + 0.5) * s - 0.5`` once, ``s = float32(in / out)``. For a ratio in
    [0.5, 1], ``s = M / 2**24`` with an integer ``M <= 2**24``, so the exact position is the
    integer ``N = (2i + 1) * M - 2**24`` times ``2**-25``. ``N`` can exceed 2**31, so it is
    assembled in int32 pieces: ``N = hi * 2**24 + lo`` with ``0 <= lo < 2**24`` and
    ``|hi| < 2**17``. Both are exact float32 values, and one float32 addition rounds their
    sum exactly once, as PyTorch does. Every integer stays below 2**29 for output sizes up
    to 2**15, so the graph is portable to runtimes that compute in int32.
    """
    in_size, out_size = _int32(in_size), _int32(out_size)
    scaled = (in_size.to(_FLOAT) / out_size.to(_FLOAT) * float(_TWO_24)).to(_INT)
    m_high = _div(scaled, 4096)
    m_low = scaled - m_high * 4096
    odd = 2 * torch.arange(out_size, dtype=_INT) + 1
    a = odd * m_high  # (2i + 1) * M = a * 2**12 + b
    b = odd * m_low
    a_high = _div(a, 4096)
    rest = (a - a_high * 4096) * 4096 + b  # (2i + 1) * M = a_high * 2**24 + rest
    carry = _div(rest, _TWO_24)
    low = rest - carry * _TWO_24
    high = a_high + carry - 1  # minus the 2**24 of N
    source = (high.to(_FLOAT) * float(_TWO_24) + low.to(_FLOAT)) * (2.0 ** -25)
    source = torch.clamp(source, min=0.0)
    last = in_size - 1
    first = torch.minimum(source.to(_INT), last)
    second = torch.minimum(first + 1, last)
    weight = source - first.to(_FLOAT)
    return first, second, 1.0 - weight, weight


def _lerp_rows(x: torch.Tensor, taps: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Rows of ``x`` (dim 2) interpolated: ``a * w0 + b * w1``, both products rounded.
    Gathering whole rows lets ONNX Runtime copy blocks instead of single elements."""
    first, second, first_weight, second_weight = taps
    return (x.index_select(2, first) * first_weight[:, None]
            + x.index_select(2, second) * second_weight[:, None])


def resize_logits(logits: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
    """1xCxhxw scores resized bilinearly to ``size`` ([H, W] int32, each from the input's
    size up to twice it): the arithmetic of ``runtime.preprocess.logits_to_labels`` (columns
    first, then rows), so labels from this graph equal the runtime's labels from logits.
    """
    columns = linear_taps(logits.shape[3], size[1])
    rows = linear_taps(logits.shape[2], size[0])
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
