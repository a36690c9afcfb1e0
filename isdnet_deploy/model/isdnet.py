"""ISDNet assembled: the paper's Figure 2 read top to bottom.

    image (full res) ──► Laplacian pyramid ──► shallow net ──► feat8, feat16 ─┐
    image ──► legacy nearest to 1/4 ──► ResNetV1c-18 ──► ASPP ──► deep feature ┤
        fuse16(feat16, deep) ──► fuse8(feat8, ·) ──► classifier ──► bilinear to H x W

Module names follow the official mmseg checkpoint: ``backbone``, ``decode_head``
(the ASPP head) and ``refine_head`` (pyramid, shallow net, fusions, classifier).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import IsdnetError
from ..profiles import MIN_SIZE
from ..pyramid.torch_ops import LaplacianPyramid
from .backbone import ResNetV1c18
from .classifier import SegmentationHead
from .deep_head import ASPPHead
from .fusion import RelationAwareFusion
from .layers import legacy_nearest
from .shallow_net import ShallowNet

DOWN_RATIO = 4


def check_image_tensor(image: torch.Tensor) -> None:
    if image.ndim != 4 or image.shape[1] != 3:
        raise IsdnetError(f"ISDNet takes a normalised Nx3xHxW image; got shape "
                          f"{tuple(image.shape)} (convert to 3-channel RGB, channels first)")
    if not image.is_floating_point():
        raise IsdnetError(f"ISDNet takes a float image; got {image.dtype} (normalise first)")
    if min(image.shape[2:]) < MIN_SIZE:
        raise IsdnetError(f"image is {image.shape[2]}x{image.shape[3]}, below the model's "
                          f"minimum of {MIN_SIZE}x{MIN_SIZE}; upscale or pad it")


class RefineHead(nn.Module):
    """The official ``ISDHead`` at inference: shallow branch, two fusions, classifier."""

    def __init__(self, num_classes: int, channels: int = 128) -> None:
        super().__init__()
        self.lap_pyramid = LaplacianPyramid(levels=2)
        self.stdc_net = ShallowNet(in_channels=6)
        self.fuse16 = RelationAwareFusion(shallow_channels=512, channels=channels)
        self.fuse8 = RelationAwareFusion(shallow_channels=256, channels=channels)
        self.conv_seg = SegmentationHead(channels, channels // 2, num_classes)

    def forward(self, image: torch.Tensor, deep_feat: torch.Tensor,
                shallow_input: torch.Tensor | None = None) -> torch.Tensor:
        if shallow_input is None:
            shallow_input = self.lap_pyramid(image)
        feat8, feat16 = self.stdc_net(shallow_input)
        fused16 = self.fuse16(feat16, deep_feat)
        fused8 = self.fuse8(feat8, fused16)
        return self.conv_seg(fused8)


class ISDNet(nn.Module):
    """forward(normalised 1x3xHxW float image) -> N x classes x H x W logits."""

    def __init__(self, num_classes: int = 7) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.backbone = ResNetV1c18()
        self.decode_head = ASPPHead(in_channels=512, channels=128)
        self.refine_head = RefineHead(num_classes, channels=128)

    def deep_feature(self, image: torch.Tensor) -> torch.Tensor:
        # The official segmentor shrinks the image with F.interpolate's default mode
        # (legacy 'nearest') to H//4 x W//4; any other mode changes the logits.
        h, w = image.shape[2], image.shape[3]
        small = legacy_nearest(image, (h // DOWN_RATIO, w // DOWN_RATIO))
        return self.decode_head(self.backbone(small))

    def forward(self, image: torch.Tensor,
                shallow_input: torch.Tensor | None = None) -> torch.Tensor:
        """``shallow_input`` (the 6-channel residual) skips the in-model pyramid when the
        caller computed it outside, e.g. with OpenCV in a prefetch stage."""
        if not torch.jit.is_tracing():
            check_image_tensor(image)
        logits = self.refine_head(image, self.deep_feature(image), shallow_input)
        return F.interpolate(logits, size=image.shape[2:], mode="bilinear",
                             align_corners=False)
