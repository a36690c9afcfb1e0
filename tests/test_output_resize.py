"""Labels at the image's size: the runtime's exact logits resize and its twin in the graph.

The runtime resizes logits bilinearly (PyTorch's sampling, float32 products rounded one by
one) before the argmax; labels-output artifacts do the same inside the graph, in int32-safe
ops, so the embedding export (uint8 in, labels out) gives the labels of the default export.
"""

from __future__ import annotations

import numpy as np
import pytest

from isdnet_deploy.errors import IsdnetError
from isdnet_deploy.pyramid.opencv_ops import bilinear_taps, resize_bilinear
from isdnet_deploy.runtime import preprocess

# (input size, output size): DeepGlobe's 1958 -> 2448, odd sizes, identity, exactly 2x,
# and the largest sides the C library accepts.
TAP_CASES = [(1958, 2448), (26, 33), (31, 39), (97, 121), (100, 100), (128, 256), (1, 1),
             (1, 2), (257, 321), (4001, 5001), (16384, 32767), (20000, 32768)]


@pytest.mark.parametrize(("size_in", "size_out"), TAP_CASES)
def test_graph_taps_equal_runtime_taps_bit_for_bit(size_in, size_out):
    import torch

    from isdnet_deploy.export.exact_index import linear_taps

    first, second, w0, w1 = linear_taps(torch.tensor(size_in), torch.tensor(size_out))
    ref_first, ref_second, ref_w1 = bilinear_taps(size_in, size_out)
    np.testing.assert_array_equal(first.numpy(), ref_first)
    np.testing.assert_array_equal(second.numpy(), ref_second)
    np.testing.assert_array_equal(w1.numpy().view(np.uint32), ref_w1.view(np.uint32))
    np.testing.assert_array_equal(w0.numpy().view(np.uint32),
                                  (np.float32(1.0) - ref_w1).view(np.uint32))


def _random_logits(classes: int, h: int, w: int, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((1, classes, h, w)) * 3
            ).astype(np.float32)


@pytest.mark.parametrize(("shape", "size"), [((7, 33, 41), (41, 51)), ((2, 64, 48), (80, 60)),
                                             ((19, 40, 40), (40, 40)), ((7, 50, 30), (99, 31))])
def test_graph_resize_equals_runtime_labels(shape, size):
    import torch

    from isdnet_deploy.export.graph import resize_logits

    logits = _random_logits(*shape, seed=sum(shape))
    resized = resize_logits(torch.from_numpy(logits), torch.tensor(size, dtype=torch.int32))
    graph_labels = resized.argmax(dim=1)[0].numpy()
    np.testing.assert_array_equal(graph_labels, preprocess.logits_to_labels(logits, size))


def test_runtime_resize_is_the_plain_float32_formula_in_blocks():
    """Blocks and the fused argmax change nothing: equal to resizing everything at once with
    ``resize_bilinear`` (same arithmetic) and taking the argmax, NaN never winning."""
    logits = _random_logits(5, 70, 90, seed=3)
    logits[0, 2, 10:20, 5:9] = np.nan
    logits[0, :, 40, 40] = np.nan  # all NaN: class 0
    size = (81, 113)  # several row blocks, a last partial one
    resized = resize_bilinear(np.ascontiguousarray(logits[0].transpose(1, 2, 0)), *size)
    expected = np.where(np.isnan(resized), -np.inf, resized).argmax(axis=2)
    np.testing.assert_array_equal(preprocess.logits_to_labels(logits, size), expected)
    out = np.full(size, 99, np.int32)
    assert preprocess.logits_to_labels(logits, size, out=out) is out
    np.testing.assert_array_equal(out, expected)


def test_runtime_resize_is_pytorch_bilinear_to_float_rounding():
    """PyTorch's CPU kernel fuses one product into an FMA, so values may differ in the last
    bit; the labels of near-continuous random scores still agree almost everywhere."""
    import torch
    import torch.nn.functional as F

    logits = _random_logits(7, 245, 245, seed=4)
    size = (306, 306)  # DeepGlobe's ratio
    ours = resize_bilinear(np.ascontiguousarray(logits[0].transpose(1, 2, 0)), *size)
    theirs = F.interpolate(torch.from_numpy(logits), size=size, mode="bilinear",
                           align_corners=False)[0].numpy().transpose(1, 2, 0)
    assert np.abs(ours - theirs).max() <= 4 * np.finfo(np.float32).eps * np.abs(theirs).max()
    agreement = (preprocess.logits_to_labels(logits, size) == theirs.argmax(axis=2)).mean()
    assert agreement >= 0.9999


def test_output_size_must_lie_between_the_input_and_twice_it(embedding_onnx_model):
    from isdnet_deploy import runtime

    contract = runtime.load(embedding_onnx_model).contract
    image = np.zeros((64, 80, 3), np.uint8)
    feeds = preprocess.prepare_feeds(image, contract)
    assert feeds["output_size"].dtype == np.int32 and list(feeds["output_size"]) == [64, 80]
    assert list(preprocess.prepare_feeds(image, contract, (128, 81))["output_size"]) == [128, 81]
    for bad in ((129, 80), (64, 79)):
        with pytest.raises(IsdnetError, match="twice"):
            preprocess.prepare_feeds(image, contract, bad)


@pytest.mark.parametrize("size", [(101, 77), (160, 133), (64, 251)])
def test_embedding_export_labels_equal_default_export_labels(onnx_model, embedding_onnx_model,
                                                             size):
    """The point of resizing in the graph: the embedding export at DeepGlobe's test scale
    gives exactly the labels of the default export (logits resized by the runtime)."""
    from isdnet_deploy import runtime
    from isdnet_deploy.data.samples import photo_like

    image = photo_like(*size, seed=size[0])
    embedding, default = runtime.load(embedding_onnx_model), runtime.load(onnx_model)
    assert embedding.contract.output_resize == "graph"
    assert embedding.contract.test_scale == 0.8
    labels = embedding.predict(image)
    assert labels.shape == size and labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, default.predict(image))
    bgr = np.ascontiguousarray(image[:, :, ::-1])
    np.testing.assert_array_equal(embedding.predict(bgr, color="bgr"), labels)


def test_graph_resize_needs_a_labels_output(cli, tmp_path):
    result = cli("export", "-o", tmp_path / "m.onnx", "--output-resize", "graph")
    assert result.exit_code != 0
    assert "--output-kind labels" in result.output
    assert not (tmp_path / "m.onnx").exists()
