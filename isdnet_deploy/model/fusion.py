"""Relational-aware fusion (the paper's RAF module) of shallow and deep features.

Channel attentions of both branches are split into r groups and multiplied into an r x r
(here 16 x 8 by 8 x 16, flattened to 256) affinity; two small MLPs turn it into
corrections of each branch's attention, scaled by learned scalars g1, g2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ConvBNReLU


class ChannelAttention(nn.Module):
    """Feature = conv3x3+BN+ReLU(x); attention = BN(conv1x1(spatial mean of feature))."""

    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__()
        self.conv_bn_relu = ConvBNReLU(in_channels, channels, 3, padding=1)
        self.conv_1x1 = ConvBNReLU(channels, channels, 1, relu=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat = self.conv_bn_relu(x)
        return feat, self.conv_1x1(feat.mean(dim=(2, 3), keepdim=True))


def _mlp(channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(channels * 2, channels), nn.ReLU(),
                         nn.Linear(channels, channels))


class RelationAwareFusion(nn.Module):
    def __init__(self, shallow_channels: int, channels: int = 128, r: int = 16) -> None:
        super().__init__()
        self.r = r
        self.g1 = nn.Parameter(torch.zeros(1))
        self.g2 = nn.Parameter(torch.zeros(1))
        self.spatial_mlp = _mlp(channels)
        self.spatial_att = ChannelAttention(shallow_channels, channels)
        self.context_mlp = _mlp(channels)
        self.context_att = ChannelAttention(channels, channels)
        self.context_head = ConvBNReLU(channels, channels, 3, padding=1)
        self.smooth = ConvBNReLU(channels, channels, 3, padding=1, relu=False)

    def forward(self, shallow: torch.Tensor, deep: torch.Tensor) -> torch.Tensor:
        s_feat, s_att = self.spatial_att(shallow)
        c_feat, c_att = self.context_att(deep)
        b, c = s_att.shape[:2]
        affinity = torch.bmm(s_att.reshape(b, self.r, c // self.r),
                             c_att.reshape(b, self.r, c // self.r).transpose(1, 2))
        affinity = affinity.reshape(b, -1)
        s_corr = F.relu(self.spatial_mlp(affinity))[:, :, None, None]
        c_corr = F.relu(self.context_mlp(affinity))[:, :, None, None]
        s_feat = s_feat * torch.sigmoid(s_att + self.g1 * s_corr)
        c_feat = c_feat * torch.sigmoid(c_att + self.g2 * c_corr)
        c_feat = F.interpolate(c_feat, size=s_feat.shape[2:], mode="bilinear",
                               align_corners=False)
        return self.smooth(s_feat + self.context_head(c_feat))
