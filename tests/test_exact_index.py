"""exact_index reproduces PyTorch's float32 resampling indices with int32-safe integers.

The three resamplings the exported graphs contain are checked against float32 arithmetic:
the image to a quarter for the deep branch (legacy 'nearest'), the pyramid's up-sampled level
back to size or size + 1 (legacy 'nearest'), and level 1 enlarged to full size (bilinear).
Once, offline, every side 32..16384 and every index was compared (3.0e8 values, all equal);
here every side up to 1024 and a spread of larger ones, including the admitted maximum.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from isdnet_deploy.export.exact_index import (
    float32_ratio,
    highest_power_of_two,
    linear_source,
    linear_taps,
    nearest_picks,
    nearest_source,
)
from isdnet_deploy.profiles import MAX_SIZE, MIN_SIZE

SIDES = torch.cat([torch.arange(MIN_SIZE, 1025),
                   torch.arange(1025, MAX_SIZE + 1, 257),
                   torch.tensor([3226, 3227, 3228, 3229, 5205, 8191, 8192, 8193, MAX_SIZE - 1,
                                 MAX_SIZE])])
FAMILIES = {
    "quarter": lambda n: (n, n // 4),  # image -> deep branch input
    "shrink": lambda n: (n + 1, n),  # odd-size pyramid level back to its size
    "equal": lambda n: (n, n),
    "enlarge": lambda n: ((n + 1) // 2, n),  # level 1 -> full size
}


def _every_index(ins: torch.Tensor, outs: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(in, out, i) for every output index i of every (in, out) pair, flattened."""
    starts = torch.cumsum(outs, 0) - outs
    index = torch.arange(int(outs.sum())) - torch.repeat_interleave(starts, outs)
    return torch.repeat_interleave(ins, outs), torch.repeat_interleave(outs, outs), index


def _float32_ratio(ins: torch.Tensor, outs: torch.Tensor) -> torch.Tensor:
    return ins.to(torch.float32) / outs.to(torch.float32)


@pytest.mark.parametrize("family", FAMILIES)
def test_ratio_is_float32_division_for_every_admitted_side(family):
    ins, outs = FAMILIES[family](torch.arange(MIN_SIZE, MAX_SIZE + 1))
    whole, *limbs = float32_ratio(ins, outs)
    assert all(bool(((limb >= 0) & (limb < 256)).all()) for limb in limbs)
    units = ((whole * 256 + limbs[0]) * 256 + limbs[1]) * 256 + limbs[2]
    expected = _float32_ratio(ins, outs).to(torch.float64) * 2**24
    assert torch.equal(units.to(torch.float64), expected)


@pytest.mark.parametrize("family", ["quarter", "shrink", "equal"])
def test_nearest_picks_equal_float32_arithmetic(family):
    ins, outs, index = _every_index(*FAMILIES[family](SIDES))
    expected = torch.floor(index.to(torch.float32) * _float32_ratio(ins, outs)).to(torch.int64)
    got = nearest_source(ins, outs, index)
    mismatch = torch.nonzero(got != torch.minimum(expected, ins - 1))
    assert mismatch.numel() == 0, [(int(ins[k]), int(outs[k]), int(index[k]))
                                   for k in mismatch[:5, 0]]


def test_bilinear_read_positions_equal_one_rounding():
    """``float32((i + 0.5) * ratio - 0.5)``, clamped at 0: float64 holds the product and
    difference exactly, so one cast to float32 is the fused multiply-add's single rounding."""
    ins, outs, index = _every_index(*FAMILIES["enlarge"](SIDES))
    ratio = _float32_ratio(ins, outs).to(torch.float64)
    expected = ((index + 0.5) * ratio - 0.5).to(torch.float32).clamp(min=0).to(torch.float64)
    whole, frac = linear_source(ins, outs, index)
    assert bool(((frac >= 0) & (frac < 2**25)).all())
    assert torch.equal(whole.to(torch.float64) + frac.to(torch.float64) * 2.0**-25, expected)


@pytest.mark.parametrize("length,size", [(1002, 250), (762, 190), (258, 64), (3230, 3229),
                                         (5206, 5205), (16384, 4096), (16384, 16384),
                                         (33, 32), (9, 8)])
def test_nearest_picks_equal_interpolate(length, size):
    row = torch.arange(length, dtype=torch.float32).view(1, 1, 1, length)
    expected = F.interpolate(row, size=(1, size)).view(-1).to(torch.int64)
    assert torch.equal(nearest_picks(length, size), expected)


def test_shrink_picks_keep_then_skip_one():
    """What the fast pyramid's column form relies on: from size or size + 1 down to size,
    the picks are ``i`` up to some point and ``i + 1`` after it."""
    for family in ("shrink", "equal"):
        ins, outs, index = _every_index(*FAMILIES[family](SIDES))
        offset = nearest_source(ins, outs, index) - index
        assert bool(((offset == 0) | (offset == 1)).all())
        same_row = outs[1:] == outs[:-1]
        assert bool((offset[1:] >= offset[:-1])[same_row].all())


def test_linear_taps_weights_are_pytorchs():
    """Weights and indices of 979 -> 1958 (level 1 of the paper's size) equal PyTorch's."""
    first, second, w0, w1 = linear_taps(979, 1958)
    source = torch.arange(979, dtype=torch.float32).view(1, 1, 1, -1)
    ramp = F.interpolate(source, size=(1, 1958), mode="bilinear", align_corners=False).view(-1)
    assert torch.equal(w0 * first.to(torch.float32) + w1 * second.to(torch.float32), ramp)
    assert int(second.max()) == 978


def test_highest_power_of_two():
    x = torch.arange(1, 2**15)
    expected = 2 ** torch.floor(torch.log2(x.to(torch.float64))).to(torch.int64)
    assert torch.equal(highest_power_of_two(x), expected)
