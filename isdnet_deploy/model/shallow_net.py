"""The shallow branch: an STDC-like network on the 6-channel Laplacian residual.

Official name ``ShallowNet`` (cat-bottlenecks, base 64, layers [2, 2], 4 convs a block).
It returns features at 1/8 (256 ch, after ``features.3``) and 1/16 (512 ch, after
``features.5``) of the full-resolution input.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ConvBNReLU


def conv_x(in_channels: int, out_channels: int, kernel_size: int = 3,
           stride: int = 1) -> ConvBNReLU:
    """STDC's ConvX (conv with padding k//2, BN, ReLU) is the shared ConvBNReLU; the state
    keys (``conv``, ``bn``) are the same."""
    return ConvBNReLU(in_channels, out_channels, kernel_size, stride=stride,
                      padding=kernel_size // 2)


class CatBottleneck(nn.Module):
    """STDC block: a 1x1 conv, then a chain of 3x3 convs each halving the channels; the
    block's output concatenates the first conv's output with every link of the chain.

    With stride 2, the chain's input goes through a depthwise 3x3 s2 conv (``avd_layer``)
    and the kept copy of the first output is average-pooled to match.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        half, quarter, eighth = out_channels // 2, out_channels // 4, out_channels // 8
        self.stride = stride
        if stride == 2:
            self.avd_layer = nn.Sequential(
                nn.Conv2d(half, half, 3, stride=2, padding=1, groups=half, bias=False),
                nn.BatchNorm2d(half))
        self.conv_list = nn.ModuleList([
            conv_x(in_channels, half, kernel_size=1),
            conv_x(half, quarter),
            conv_x(quarter, eighth),
            conv_x(eighth, eighth),
        ])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = self.conv_list[0](x)
        out = self.avd_layer(first) if self.stride == 2 else first
        chain = []
        for conv in self.conv_list[1:]:
            out = conv(out)
            chain.append(out)
        if self.stride == 2:
            first = F.avg_pool2d(first, 3, stride=2, padding=1)
        return torch.cat([first, *chain], dim=1)


class ShallowNet(nn.Module):
    def __init__(self, in_channels: int = 6, base: int = 64) -> None:
        super().__init__()
        self.features = nn.Sequential(
            conv_x(in_channels, base // 2, 3, stride=2),
            conv_x(base // 2, base, 3, stride=2),
            CatBottleneck(base, base * 4, stride=2),
            CatBottleneck(base * 4, base * 4),
            CatBottleneck(base * 4, base * 8, stride=2),
            CatBottleneck(base * 8, base * 8),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat8 = self.features[:4](x)
        feat16 = self.features[4:](feat8)
        return feat8, feat16
