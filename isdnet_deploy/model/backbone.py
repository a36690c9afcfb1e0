"""ResNetV1c-18, the deep branch's backbone (mmseg ``ResNetV1c``, depth 18, output stride 8).

V1c replaces the 7x7 stem by three 3x3 convolutions. Layers 3 and 4 are dilated (2, 4)
instead of strided; with ``contract_dilation`` the first block of a dilated layer uses half
the dilation. Only conv1 of a BasicBlock is strided/dilated; conv2 is a plain 3x3.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, channels: int, stride: int = 1,
                 dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=dilation,
                               dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        out += identity
        return F.relu(out, inplace=True)


def _layer(in_channels: int, channels: int, blocks: int, stride: int,
           dilation: int) -> nn.Sequential:
    first_dilation = dilation // 2 if dilation > 1 else 1  # contract_dilation
    layers = [BasicBlock(in_channels, channels, stride, first_dilation)]
    layers += [BasicBlock(channels, channels, 1, dilation) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class ResNetV1c18(nn.Module):
    """Returns the last stage only (512 channels at 1/8 of its input): ``in_index=3``."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 32, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64),
            nn.ReLU(inplace=True))
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = _layer(64, 64, 2, stride=1, dilation=1)
        self.layer2 = _layer(64, 128, 2, stride=2, dilation=1)
        self.layer3 = _layer(128, 256, 2, stride=1, dilation=2)
        self.layer4 = _layer(256, 512, 2, stride=1, dilation=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.stem(x))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))
