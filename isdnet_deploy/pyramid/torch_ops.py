"""The Laplacian pyramid as the official ISDNet computes it (``Lap_Pyramid_Conv``).

Gaussian = outer([1,4,6,4,1]) / 256, depthwise, after reflect padding of 2. Down-sampling
keeps even rows/columns of the blurred image; up-sampling inserts zeros and blurs with 4x
the kernel. When the up-sampled image is one pixel larger (odd sizes) it is brought back
with legacy 'nearest'. The shallow input is residual 0 and residual 1 bilinearly resized to
full size, concatenated: 6 channels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..model.layers import legacy_nearest

BINOMIAL_5 = (1.0, 4.0, 6.0, 4.0, 1.0)


def gaussian_kernel(channels: int = 3) -> torch.Tensor:
    taps = torch.tensor(BINOMIAL_5)
    kernel = torch.outer(taps, taps) / 256.0
    return kernel.expand(channels, 1, 5, 5).contiguous()


def zero_insert(x: torch.Tensor) -> torch.Tensor:
    """Values at even rows and columns of a 2h x 2w grid, zeros elsewhere."""
    b, c, h, w = x.shape
    x = torch.stack([x, torch.zeros_like(x)], dim=-1).reshape(b, c, h, 2 * w)
    return torch.stack([x, torch.zeros_like(x)], dim=-2).reshape(b, c, 2 * h, 2 * w)


class LaplacianPyramid(nn.Module):
    def __init__(self, levels: int = 2, channels: int = 3) -> None:
        super().__init__()
        self.levels = levels
        # Not persistent: the official checkpoints do not store the kernel.
        self.register_buffer("kernel", gaussian_kernel(channels), persistent=False)

    def blur(self, x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), kernel, groups=x.shape[1])

    def residuals(self, image: torch.Tensor) -> list[torch.Tensor]:
        current = image
        out = []
        for _ in range(self.levels):
            down = self.blur(current, self.kernel)[:, :, ::2, ::2]
            up = self.blur(zero_insert(down), 4 * self.kernel)
            # Under export the size test would be frozen at the tracing size, so the graph
            # always resizes; at equal sizes legacy nearest is the identity.
            if torch.onnx.is_in_onnx_export() or up.shape[2:] != current.shape[2:]:
                up = legacy_nearest(up, current.shape[2:])
            out.append(current - up)
            current = down
        return out

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        high, low = self.residuals(image)[:2]
        low = F.interpolate(low, size=high.shape[2:], mode="bilinear", align_corners=False)
        return torch.cat([high, low], dim=1)
