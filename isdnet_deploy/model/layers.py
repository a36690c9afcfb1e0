"""Small building blocks shared by the ISDNet parts, named like mmcv's so keys match."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..export.exact_index import nearest_picks


class ConvBNReLU(nn.Module):
    """mmcv's ConvModule as ISDNet configures it: bias-free conv, BatchNorm, optional ReLU.

    The attribute names ``conv`` and ``bn`` are what the official checkpoints use. ReLUs
    work in place, as mmcv's do: at ultra-high resolution an extra activation-sized
    allocation per layer costs measurable time.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, dilation: int = 1, relu: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                              padding=padding, dilation=dilation, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        return F.relu(x, inplace=True) if self.relu else x


def legacy_nearest(x: torch.Tensor, size: tuple[int, int] | list[int]) -> torch.Tensor:
    """``F.interpolate(x, size)`` with no mode, as the official code calls it.

    PyTorch picks source pixel ``floor(float32(i * float32(in / out)))``. ONNX Resize
    computes ``i / float32(out / in)`` instead, which rounds the other way at some sizes
    (1002 -> 250 is one), so under ONNX export the picks are gathered, computed in int32-safe
    integer arithmetic that reproduces PyTorch's rounding on every consumer.
    """
    if not torch.onnx.is_in_onnx_export():
        return F.interpolate(x, size=size)
    rows = nearest_picks(x.shape[2], size[0])
    cols = nearest_picks(x.shape[3], size[1])
    return x.index_select(2, rows).index_select(3, cols)
