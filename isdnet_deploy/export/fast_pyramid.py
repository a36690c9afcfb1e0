"""The official Laplacian pyramid rewritten in cheaper, mathematically equal steps.

The official form blurs the full image with a 5x5 kernel and keeps one result in four, then
blurs a zero-inserted image in which three inputs in four are zero. Here:

- down: the 5-tap binomial as two 1-D passes with stride 2, so only kept pixels are computed;
- up: polyphase. With ``Z`` the zero-inserted image, output ``2k`` sees only
  ``d[k-1], d[k], d[k+1]`` (taps ``[1, 6, 1] / 8`` per dimension) and ``2k+1`` only
  ``d[k], d[k+1]`` (``[4, 4] / 8``). The official code reflect-pads ``Z`` (OpenCV's
  REFLECT_101): before row 0 it reads ``Z[2] = d[1]`` and ``Z[1] = 0`` (``d`` reflected),
  after row ``2h - 1`` it reads ``Z[2h - 2] = d[h - 1]`` and ``Z[2h - 3] = 0`` (``d``
  replicated). So ``d`` is padded by one (reflect before, edge after), one grouped 3x3 conv
  gives the four phases and they are interleaved (pixel shuffle; a 2x2 stride-2 transposed
  conv in ONNX, which ONNX Runtime runs ~4x faster than DepthToSpace).

Two steps are written out because the standard ONNX ops round differently from PyTorch: the
odd-size legacy 'nearest' (``legacy_nearest_shrink``, always, since a traced size test
would freeze the branch taken at the export size) and, under ONNX export, the bilinear
enlargement of level 1 (``bilinear_enlarge``; ONNX Resize is off by up to ~3e-4 at odd sizes).
Their indices and weights come from ``exact_index``: integer arithmetic that stays inside
int32 and reproduces PyTorch's float32 rounding on every consumer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .exact_index import linear_taps, nearest_picks

_BINOMIAL = (1.0, 4.0, 6.0, 4.0, 1.0)
# Polyphase taps over the padded down-sampled row d[k-1], d[k], d[k+1].
_EVEN_PHASE = (1.0 / 8.0, 6.0 / 8.0, 1.0 / 8.0)
_ODD_PHASE = (0.0, 4.0 / 8.0, 4.0 / 8.0)


def _up_kernel(channels: int) -> torch.Tensor:
    """Four 3x3 phase kernels per channel, ordered (row phase, column phase) as pixel shuffle."""
    phases = [torch.tensor(_EVEN_PHASE), torch.tensor(_ODD_PHASE)]
    kernels = torch.stack([torch.outer(r, c) for r in phases for c in phases])
    return kernels.repeat(channels, 1, 1).view(4 * channels, 1, 3, 3)


def legacy_nearest_shrink(x: torch.Tensor, dim: int, size: int | torch.Tensor) -> torch.Tensor:
    """PyTorch's legacy 'nearest' from ``size`` or ``size + 1`` down to ``size`` along ``dim``.

    PyTorch picks ``floor(float32(i * float32(in / size)))``. Rows are gathered (whole rows
    are block copies). ONNX Runtime gathers on the last axis element by element, ~20x slower
    than a copy, so columns use the shape of the picks instead: ``i`` up to some ``m``, then
    ``i + 1`` (from ``size`` = 3227 on, float32 rounding pushes a tail of indices up by one;
    checked for every size up to 65536), i.e. ``x`` without column ``m``.
    """
    if dim != x.dim() - 1:
        return x.index_select(dim, nearest_picks(x.shape[dim], size))
    kept = _kept(x.shape[dim], size)
    return torch.cat([x[..., :kept], x[..., kept + 1:size + 1]], dim)


def _kept(length: int | torch.Tensor, size: int | torch.Tensor) -> torch.Tensor:
    """How many leading indices legacy 'nearest' from ``length`` to ``size`` keeps in place."""
    return (nearest_picks(length, size) == torch.arange(size)).sum()


def bilinear_enlarge(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """``F.interpolate(x, size, mode='bilinear')`` for at most 2x enlargement, from gathers.

    Columns are interpolated on the transposed (small) tensor so that every gather picks
    whole rows, which ONNX Runtime copies as blocks.
    """
    cols = _lerp_rows(x.transpose(2, 3), linear_taps(x.shape[3], size[1]))
    return _lerp_rows(cols.transpose(2, 3), linear_taps(x.shape[2], size[0]))


def _lerp_rows(x: torch.Tensor, taps: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Each output row from its two source rows: one gather of the pairs, one batched 1x2
    matmul with the weights (fewer full-size passes than multiply, multiply, add)."""
    first, second, first_weight, second_weight = taps
    pairs = x.index_select(2, torch.stack([first, second], 1).flatten()).unflatten(2, (-1, 2))
    weights = torch.stack([first_weight, second_weight], 1).unsqueeze(1)
    return torch.matmul(weights, pairs).squeeze(3)


def _take(x: torch.Tensor, dim: int, start: int, count: int, step: int = 1) -> torch.Tensor:
    return x[(slice(None),) * dim + (slice(start, start + step * (count - 1) + 1, step),)]


def _down_eager(x: torch.Tensor) -> torch.Tensor:
    """Blur-and-decimate from strided views: PyTorch's depthwise convs are slow on CPU."""
    x = F.pad(x, (2, 2, 2, 2), mode="reflect")
    for dim in (3, 2):
        count = (x.shape[dim] - 3) // 2
        taps = [_take(x, dim, k, count, 2) for k in range(5)]
        out = taps[0] + taps[4]
        x = out.add_(taps[1] + taps[3], alpha=4.0).add_(taps[2], alpha=6.0)
    return x.mul_(1.0 / 256.0)


def _phases_eager(down: torch.Tensor) -> dict[tuple[int, int], torch.Tensor]:
    """The four polyphase parts of the up-sampled image, keyed (row phase, column phase)."""
    padded = F.pad(F.pad(down, (1, 0, 1, 0), mode="reflect"), (0, 1, 0, 1), mode="replicate")

    def even(x: torch.Tensor, dim: int) -> torch.Tensor:  # 8 x [1, 6, 1] / 8
        count = x.shape[dim] - 2
        out = _take(x, dim, 0, count) + _take(x, dim, 2, count)
        return out.add_(_take(x, dim, 1, count), alpha=6.0)

    def odd(x: torch.Tensor, dim: int) -> torch.Tensor:  # 2 x [1, 1] / 2
        count = x.shape[dim] - 2
        return _take(x, dim, 1, count) + _take(x, dim, 2, count)

    cols = (even(padded, 3), odd(padded, 3))
    return {(0, 0): even(cols[0], 2).mul_(1.0 / 64.0), (0, 1): even(cols[1], 2).mul_(1.0 / 16.0),
            (1, 0): odd(cols[0], 2).mul_(1.0 / 16.0), (1, 1): odd(cols[1], 2).mul_(0.25)}


def _residual_eager(current: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    """``current - up``, each phase subtracted straight into its strided slot when the
    odd-size legacy 'nearest' is a crop (always below 3227 pixels)."""
    phases = _phases_eager(down)
    up_size = 2 * down.shape[2], 2 * down.shape[3]
    if all(_kept(up_size[d], current.shape[2 + d]) == current.shape[2 + d] for d in (0, 1)):
        out = torch.empty_like(current)
        for (row, col), phase in phases.items():
            slot = out[:, :, row::2, col::2]
            torch.sub(current[:, :, row::2, col::2],
                      phase[:, :, :slot.shape[2], :slot.shape[3]], out=slot)
        return out
    up = F.pixel_shuffle(torch.stack(list(phases.values()), 2).flatten(1, 2), 2)
    for dim in (2, 3):
        up = legacy_nearest_shrink(up, dim, current.shape[dim])
    return current - up


class FastLaplacianPyramid(nn.Module):
    """Drop-in for ``LaplacianPyramid``: 1x3xHxW image -> 1x6xHxW residuals, equal to ~1e-6.

    Eager PyTorch runs strided element-wise arithmetic; under ONNX export the same maths is
    written with convs, which ONNX Runtime runs fastest.
    """

    def __init__(self, levels: int = 2, channels: int = 3) -> None:
        super().__init__()
        self.levels = levels
        self.channels = channels
        taps = torch.tensor(_BINOMIAL) / 16.0
        # Not persistent, like the official kernel: checkpoints never carry these.
        self.register_buffer("down_rows", taps.view(1, 1, 5, 1).repeat(channels, 1, 1, 1),
                             persistent=False)
        self.register_buffer("down_cols", taps.view(1, 1, 1, 5).repeat(channels, 1, 1, 1),
                             persistent=False)
        self.register_buffer("up_phases", _up_kernel(channels), persistent=False)
        self.register_buffer("interleave", torch.eye(4).repeat(channels, 1).view(-1, 1, 2, 2),
                             persistent=False)

    def _down_graph(self, x: torch.Tensor) -> torch.Tensor:
        # Rows first: ONNX Runtime runs this order ~10% faster.
        x = F.pad(x, (2, 2, 2, 2), mode="reflect")
        x = F.conv2d(x, self.down_rows, stride=(2, 1), groups=self.channels)
        return F.conv2d(x, self.down_cols, stride=(1, 2), groups=self.channels)

    def _residual_graph(self, current: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
        padded = F.pad(F.pad(down, (1, 0, 1, 0), mode="reflect"), (0, 1, 0, 1), mode="replicate")
        phases = F.conv2d(padded, self.up_phases, groups=self.channels)
        up = F.conv_transpose2d(phases, self.interleave, stride=2, groups=self.channels)
        # Unconditional (a no-op at even sizes): a traced size test would freeze the branch
        # taken at the export size.
        for dim in (2, 3):
            up = legacy_nearest_shrink(up, dim, current.shape[dim])
        return current - up

    def residuals(self, image: torch.Tensor) -> list[torch.Tensor]:
        exporting = torch.onnx.is_in_onnx_export()
        current = image
        out = []
        for _ in range(self.levels):
            if exporting:
                down = self._down_graph(current)
                out.append(self._residual_graph(current, down))
            else:
                down = _down_eager(current)
                out.append(_residual_eager(current, down))
            current = down
        return out

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        high, low = self.residuals(image)[:2]
        if torch.onnx.is_in_onnx_export():
            low = bilinear_enlarge(low, high.shape[2:])
        else:
            low = F.interpolate(low, size=high.shape[2:], mode="bilinear", align_corners=False)
        return torch.cat([high, low], dim=1)
