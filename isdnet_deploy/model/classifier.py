"""The final classifier on the fused 1/8 feature: conv3x3+BN+ReLU 128 -> 64, 1x1 -> classes.

Official name ``SegmentationHead`` under ``refine_head.conv_seg``; its dropout is inactive
at inference and is not built.
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import ConvBNReLU


class SegmentationHead(nn.Module):
    def __init__(self, in_channels: int, mid_channels: int, num_classes: int) -> None:
        super().__init__()
        self.conv_bn_relu = ConvBNReLU(in_channels, mid_channels, 3, padding=1)
        self.conv_out = nn.Conv2d(mid_channels, num_classes, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv_bn_relu(x))
