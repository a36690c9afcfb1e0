"""The Laplacian pyramid: torch op (in the model) vs NumPy/OpenCV (outside the graph)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from isdnet_deploy.model.layers import legacy_nearest
from isdnet_deploy.pyramid.opencv_ops import legacy_nearest_index, shallow_input_nchw
from isdnet_deploy.pyramid.torch_ops import LaplacianPyramid

SIZES = [(64, 64), (65, 63), (258, 202), (130, 98), (333, 257), (1000, 760)]


@pytest.mark.parametrize("h,w", SIZES)
def test_opencv_pyramid_equals_torch_op(h: int, w: int) -> None:
    image = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(h * w))
    expected = LaplacianPyramid()(image).numpy()
    got = shallow_input_nchw(image[0].permute(1, 2, 0).numpy())
    assert got.shape == (1, 6, h, w)
    assert np.abs(got - expected).max() <= 1e-5


@pytest.mark.parametrize("h,w", [(64, 64), (65, 63), (258, 202), (31, 33)])
def test_gaussian_down_step_matches_cv2_pyrdown(h: int, w: int) -> None:
    """cv2.pyrDown is an independent implementation of blur-then-keep-even-pixels."""
    image = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(1))
    pyramid = LaplacianPyramid()
    down = pyramid.blur(image, pyramid.kernel)[:, :, ::2, ::2][0].permute(1, 2, 0).numpy()
    reference = cv2.pyrDown(np.ascontiguousarray(image[0].permute(1, 2, 0).numpy()))
    assert down.shape == reference.shape
    assert np.abs(down - reference).max() <= 1e-6


def test_pyramid_of_constant_image_has_zero_residual() -> None:
    # The binomial kernel sums to 1 and the zero-inserted blur restores the mean, so a flat
    # image has no detail at any level (including the odd-size fallback).
    image = torch.full((1, 3, 67, 45), 0.7)
    assert LaplacianPyramid()(image).abs().max() < 1e-5


def test_residual_keeps_fine_detail_only() -> None:
    image = torch.zeros(1, 3, 64, 64)
    image[:, :, ::2] = 1.0  # a one-pixel stripe pattern: all high frequency
    residual = LaplacianPyramid()(image)
    assert residual[:, :3].abs().mean() > 10 * residual[:, 3:].abs().mean()


@pytest.mark.parametrize("in_size,out_size", [(1958, 489), (1002, 250), (980, 979),
                                              (101, 100), (4, 1), (300, 600)])
def test_legacy_nearest_gather_form_equals_interpolate(in_size: int, out_size: int) -> None:
    x = torch.arange(in_size, dtype=torch.float32).view(1, 1, in_size, 1).expand(1, 1, -1, 3)
    expected = F.interpolate(x, size=(out_size, 3))[0, 0, :, 0].long().numpy()
    assert (legacy_nearest_index(in_size, out_size) == expected).all()


def test_legacy_nearest_is_plain_interpolate_in_eager_mode() -> None:
    x = torch.randn(1, 3, 37, 41)
    assert torch.equal(legacy_nearest(x, (9, 10)), F.interpolate(x, size=(9, 10)))
