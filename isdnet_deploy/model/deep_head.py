"""The deep branch's head: DeepLabV3 ASPP (mmseg ``RefineASPPHead``), 512 -> 128 channels.

Its bottleneck output is the *deep feature* the fusion modules consume. The official head
also runs its own classifier (``decode_head.conv_seg``) and throws the result away at
inference; it is not built here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ConvBNReLU


class ASPPHead(nn.Module):
    def __init__(self, in_channels: int = 512, channels: int = 128,
                 dilations: tuple[int, ...] = (1, 12, 24, 36)) -> None:
        super().__init__()
        self.image_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1),
                                        ConvBNReLU(in_channels, channels, 1))
        self.aspp_modules = nn.ModuleList(
            ConvBNReLU(in_channels, channels, 1 if d == 1 else 3, dilation=d,
                       padding=0 if d == 1 else d)
            for d in dilations)
        self.bottleneck = ConvBNReLU((len(dilations) + 1) * channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.interpolate(self.image_pool(x), size=x.shape[2:], mode="bilinear",
                               align_corners=False)
        branches = [pooled] + [aspp(x) for aspp in self.aspp_modules]
        return self.bottleneck(torch.cat(branches, dim=1))
