"""Sliding-window inference: plans, blending, and agreement with whole-image inference."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

from isdnet_deploy.errors import IsdnetError
from isdnet_deploy.runtime.tiling import plan_tiles, tiled_labels, tiled_logits, window_2d

RNG = np.random.default_rng(0)
WEIGHTS = RNG.standard_normal((4, 3)).astype(np.float32)
IMAGE_U8 = cv2.GaussianBlur(RNG.integers(0, 256, (150, 190, 3), dtype=np.uint8), (0, 0), 2)


def per_pixel(tile: np.ndarray) -> np.ndarray:
    """Translation-equivariant: each pixel's logits depend on that pixel only."""
    return np.einsum("kc,hwc->khw", WEIGHTS, tile.astype(np.float32)) + 1.5


def with_tile_mean(tile: np.ndarray) -> np.ndarray:
    """Non-local: adds half the tile's mean colour, so tiles see different contexts."""
    x = tile.astype(np.float32)
    return per_pixel(tile) + 0.5 * (WEIGHTS @ x.reshape(-1, 3).mean(axis=0))[:, None, None]


def box_blur(tile: np.ndarray) -> np.ndarray:
    """Non-local with a 15 px receptive field; tile borders lack the true neighbours."""
    x = cv2.blur(tile.astype(np.float32), (15, 15), borderType=cv2.BORDER_REFLECT_101)
    return np.einsum("kc,hwc->khw", WEIGHTS, x)


@pytest.mark.parametrize(("h", "w", "tile", "overlap"), [
    (150, 190, (64, 64), 0.25), (150, 190, (64, 96), 16), (64, 64, (64, 64), 0.5),
    (100, 33, (48, 48), 0), (1000, 1000, (256, 256), 0.5)])
def test_plan_covers_image_with_requested_overlap(h, w, tile, overlap):
    boxes = plan_tiles(h, w, tile, overlap)
    covered = np.zeros((h, w), int)
    th, tw = min(tile[0], h), min(tile[1], w)
    for y0, x0, y1, x1 in boxes:
        assert 0 <= y0 < y1 <= h and 0 <= x0 < x1 <= w
        assert (y1 - y0, x1 - x0) == (th, tw)
        covered[y0:y1, x0:x1] += 1
    assert covered.min() >= 1
    assert max(b[2] for b in boxes) == h and max(b[3] for b in boxes) == w
    ys = sorted({b[0] for b in boxes})
    want = round(overlap * th) if isinstance(overlap, float) else overlap
    for a, b in itertools.pairwise(ys):
        assert a + th - b >= want  # consecutive tiles overlap by at least the request


def test_plan_errors():
    with pytest.raises(IsdnetError, match="smaller than the tile"):
        plan_tiles(200, 200, (64, 64), 64)
    with pytest.raises(IsdnetError, match="below the minimum of 32"):
        plan_tiles(200, 200, (16, 64), 0)
    with pytest.raises(IsdnetError, match="below the minimum of 48"):
        plan_tiles(40, 200, (64, 64), 0, min_tile=48)
    with pytest.raises(IsdnetError, match="fraction"):
        plan_tiles(200, 200, (64, 64), -3)


def test_window_has_positive_floor_and_peaks_in_the_centre():
    win = window_2d(32, 48, floor=0.05)
    assert win.min() > 0 and win.min() == pytest.approx(0.05 ** 2, rel=0.1)
    assert win[16, 24] == pytest.approx(win.max()) and win.max() <= 1.0
    assert (window_2d(8, 8, "uniform") == 1).all()
    with pytest.raises(IsdnetError, match="unknown blending window"):
        window_2d(8, 8, "gauss")


@pytest.mark.parametrize("fn", [per_pixel, with_tile_mean, box_blur])
def test_single_covering_tile_equals_whole_image_exactly(fn):
    whole = fn(IMAGE_U8)
    for tile in ((150, 190), (400, 400)):
        out = tiled_logits(IMAGE_U8, fn, tile, overlap=0.25)
        assert out.dtype == np.float32
        assert np.array_equal(out, whole)
    assert np.array_equal(tiled_labels(IMAGE_U8, fn, (150, 190)), whole.argmax(axis=0))


@pytest.mark.parametrize("window", ["hann", "uniform"])
@pytest.mark.parametrize("image", [IMAGE_U8, IMAGE_U8.astype(np.float32) / 255.0])
def test_translation_equivariant_fn_tiles_to_the_whole_image_result(window, image):
    whole = per_pixel(image)
    tiled = tiled_logits(image, per_pixel, (64, 64), overlap=0.3, window=window)
    assert tiled.shape == whole.shape
    np.testing.assert_allclose(tiled, whole, rtol=1e-5, atol=1e-4)
    assert np.array_equal(tiled_labels(image, per_pixel, (64, 64), 0.3, window=window),
                          whole.argmax(axis=0))


def test_non_local_fn_error_is_bounded_by_context_difference():
    whole = with_tile_mean(IMAGE_U8)
    tiled = tiled_logits(IMAGE_U8, with_tile_mean, (64, 64), overlap=0.25)
    diff = np.abs(tiled - whole)
    # Any blend of tile means lies within the image's colour range, so per class the error
    # is at most 0.5 * sum_c |W[k, c]| * (max_c - min_c).
    span = IMAGE_U8.reshape(-1, 3).max(0).astype(float) - IMAGE_U8.reshape(-1, 3).min(0)
    bound = 0.5 * np.abs(WEIGHTS) @ span
    assert (diff.max(axis=(1, 2)) <= bound + 1e-3).all()
    assert diff.max() > 0.01  # the tiles really do see different context
    print(f"\ntile-mean fn: max |diff| {diff.max():.3f} (bound {bound.max():.1f}), "
          f"mean {diff.mean():.4f}, logit scale {np.abs(whole).max():.1f}")


def test_hann_blending_beats_plain_averaging_at_tile_seams():
    whole = box_blur(IMAGE_U8)
    errors = {}
    for window in ("hann", "uniform"):
        tiled = tiled_logits(IMAGE_U8, box_blur, (64, 64), overlap=0.25, window=window)
        diff = np.abs(tiled - whole)
        agree = (tiled.argmax(0) == whole.argmax(0)).mean()
        errors[window] = (diff.max(), diff.mean(), agree)
        print(f"\nbox-blur fn, {window}: max |diff| {diff.max():.3f}, mean {diff.mean():.4f}, "
              f"label agreement {agree:.4f}, logit scale {np.abs(whole).max():.1f}")
    assert errors["hann"][0] < errors["uniform"][0]
    assert errors["hann"][1] < 0.5 * errors["uniform"][1]
    assert errors["hann"][2] >= 0.99


def test_pad_to_tile_gives_fixed_shape_calls():
    image = IMAGE_U8[:50, :70]
    calls = []

    def fixed(tile: np.ndarray) -> np.ndarray:
        calls.append(tile.shape[:2])
        return per_pixel(tile)[None]  # (1,C,h,w) is accepted too

    out = tiled_logits(image, fixed, (64, 64), overlap=0.25, pad_to_tile=True)
    assert out.shape == (4, 50, 70)
    assert set(calls) == {(64, 64)} and len(calls) == 2
    np.testing.assert_allclose(out, per_pixel(image), rtol=1e-5, atol=1e-4)


def test_bad_logits_are_reported():
    with pytest.raises(IsdnetError, match="full-resolution logits"):
        tiled_logits(IMAGE_U8, lambda t: per_pixel(t)[:, ::4, ::4], (64, 64))
    with pytest.raises(IsdnetError, match="4 classes but 7 were expected"):
        tiled_logits(IMAGE_U8, per_pixel, (64, 64), num_classes=7)
