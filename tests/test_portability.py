"""The export-time int32 proof (export/portability.py) on hand-made graphs and real exports.

The hand-made graphs are the defects it exists for: the earlier fast pyramid's index product
``(2i + 1) * 2**24`` (which OpenVINO's CPU plugin wrapped in int32), an integer division of
operands beyond float32's integers (which that plugin computes in float32), a float cast to
an index, and an exporter's int64 'to the end' Slice sentinel.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from isdnet_deploy.errors import IsdnetError
from isdnet_deploy.export.portability import (
    INT32_MAX,
    NotInt32Safe,
    check_int32_safe,
    clamp_slice_bounds,
    ensure_int32_safe,
    integer_ranges,
)
from isdnet_deploy.profiles import MAX_SIZE, MIN_SIZE


def _const(name: str, value, dtype=np.int64) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name],
                            value=numpy_helper.from_array(np.asarray(value, dtype=dtype)))


def _model(nodes: list[onnx.NodeProto], output: str, elem_type=TensorProto.INT64,
           output_shape=None) -> onnx.ModelProto:
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                          [1, 3, "height", "width"])
    out = helper.make_tensor_value_info(output, elem_type, output_shape)
    graph = helper.make_graph(nodes, "g", [image], [out])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _width(nodes: list[onnx.NodeProto]) -> list[onnx.NodeProto]:
    return [helper.make_node("Shape", ["image"], ["shape"], name="shape"),
            _const("three", 3),
            helper.make_node("Gather", ["shape", "three"], ["width"], name="width", axis=0),
            *nodes]


def _old_index_product() -> onnx.ModelProto:
    """The earlier bilinear read position: ``(2 * arange(width) + 1) * M - 2**24``."""
    return _model(_width([
        _const("zero", 0), _const("one", 1), _const("two", 2), _const("mantissa", 2**24 - 7),
        _const("half", 2**24),
        helper.make_node("Range", ["zero", "width", "one"], ["index"], name="range"),
        helper.make_node("Mul", ["index", "two"], ["twice"], name="twice"),
        helper.make_node("Add", ["twice", "one"], ["odd"], name="odd"),
        helper.make_node("Mul", ["odd", "mantissa"], ["product"], name="index_product"),
        helper.make_node("Sub", ["product", "half"], ["position"], name="position"),
    ]), "position", output_shape=["width"])


def test_old_index_product_is_rejected_with_node_and_range():
    with pytest.raises(NotInt32Safe) as info:
        check_int32_safe(_old_index_product())
    message = str(info.value)
    assert "\n" not in message
    assert "index_product" in message and f"{MIN_SIZE}..{MAX_SIZE}" in message
    assert str((2 * (MAX_SIZE - 1) + 1) * (2**24 - 7)) in message  # the exact upper bound
    assert isinstance(info.value, IsdnetError)


def test_old_index_product_really_wraps_on_a_narrowing_consumer():
    """What the range means: at width 2048 the product passes 2**31; in int32 it wraps."""
    model = _old_index_product()
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (position,) = session.run(None, {"image": np.zeros((1, 3, 32, 2048), np.float32)})
    assert position.max() > INT32_MAX
    assert position.astype(np.int32).min() < 0
    with pytest.raises(NotInt32Safe):
        check_int32_safe(model, max_side=2048)


def test_small_enough_admitted_size_passes():
    # (2 * 63 + 1) * (2**24 - 7) < 2**31: the same graph is safe up to 64 pixels.
    check_int32_safe(_old_index_product(), max_side=64)
    ranges = integer_ranges(_old_index_product(), max_side=64)
    assert ranges["position"][1] == (1 * (2**24 - 7) - 2**24, 127 * (2**24 - 7) - 2**24)


def test_integer_division_beyond_float32_integers_is_rejected():
    model = _model(_width([
        _const("scale", 65536), _const("three", 3),
        helper.make_node("Mul", ["width", "scale"], ["scaled"], name="scaled"),
        helper.make_node("Div", ["scaled", "three"], ["quotient"], name="quotient"),
    ]), "quotient", output_shape=[])
    with pytest.raises(NotInt32Safe, match=r"quotient \(Div\) divides integers as large as "
                                           r"1073741824; OpenVINO"):
        check_int32_safe(model)
    check_int32_safe(model, max_side=127)  # 127 * 65536 < 2**23


def test_float_cast_to_index_cannot_be_bounded():
    model = _model([helper.make_node("Cast", ["image"], ["index"], name="to_index",
                                     to=TensorProto.INT64)], "index")
    with pytest.raises(NotInt32Safe, match=r"to_index .* cannot bound"):
        check_int32_safe(model)


def test_unknown_operator_is_rejected():
    model = _model([helper.make_node("NonZero", ["image"], ["where"], name="nonzero")], "where")
    with pytest.raises(NotInt32Safe, match="nonzero uses NonZero"):
        check_int32_safe(model)


def test_slice_sentinel_is_clamped_with_the_same_meaning():
    nodes = [_const("start", [1]), _const("end", [2**63 - 1]), _const("axis", [3]),
             helper.make_node("Slice", ["image", "start", "end", "axis"], ["cropped"])]
    model = _model(nodes, "cropped", TensorProto.FLOAT, [1, 3, "height", None])
    image = np.random.default_rng(0).standard_normal((1, 3, 40, 50)).astype(np.float32)

    def run(proto):
        session = ort.InferenceSession(proto.SerializeToString(),
                                       providers=["CPUExecutionProvider"])
        return session.run(None, {"image": image})[0]

    before = run(model)
    with pytest.raises(NotInt32Safe, match="9223372036854775807"):
        check_int32_safe(model)
    ensure_int32_safe(model)
    np.testing.assert_array_equal(run(model), before)
    assert clamp_slice_bounds(model) == 0


def test_analysis_bounds_contain_the_real_values(onnx_model):
    """Soundness on a real export: every integer tensor's values at several sizes (odd,
    even, the minimum) lie inside the bounds the analysis derived for all admitted sizes."""
    from isdnet_deploy.export.onnx_export import sample_inputs

    proto = onnx.load(str(onnx_model))
    ranges = integer_ranges(proto)
    produced = {out for node in proto.graph.node if node.op_type != "Constant"
                for out in node.output}
    names = sorted(name for name in ranges if name in produced)
    assert len(names) > 500  # the index arithmetic of the pyramid and the deep branch
    for name in names:
        proto.graph.output.append(helper.make_empty_tensor_value_info(name))
    session = ort.InferenceSession(proto.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    from isdnet_deploy.contract import read_onnx_contract

    contract = read_onnx_contract(onnx.load(str(onnx_model), load_external_data=False))
    for size in [(MIN_SIZE, MIN_SIZE + 1), (65, 63), (258, 202)]:
        feeds, _ = sample_inputs(contract, size)
        for name, value in zip(names, session.run(names, feeds), strict=True):
            low, high = ranges[name][1]
            if value.size:
                assert low <= value.min() and value.max() <= high, (name, size)


def test_default_export_is_int32_safe_with_headroom(onnx_model):
    proto = onnx.load(str(onnx_model))
    check_int32_safe(proto)
    computed = {out for node in proto.graph.node if node.op_type != "Constant"
                for out in node.output}
    largest = max(max(abs(b[0]), abs(b[1])) for name, (_, b) in integer_ranges(proto).items()
                  if name in computed)
    assert largest < 2**26  # every sum and product of the index arithmetic


def test_export_rejects_overflowing_index_arithmetic(model, tmp_path, monkeypatch):
    """The check runs inside export: a pyramid whose taps overflow int32 writes nothing."""
    import torch

    from isdnet_deploy.export import fast_pyramid
    from isdnet_deploy.export.onnx_export import export_onnx

    real_taps = fast_pyramid.linear_taps

    def overflowing_taps(in_size, out_size):
        first, second, w0, w1 = real_taps(in_size, out_size)
        wide = first * (1 << 20)  # a scaled copy that leaves int32 from 2048 pixels on
        return torch.minimum(wide, first), second, w0, w1

    monkeypatch.setattr(fast_pyramid, "linear_taps", overflowing_taps)
    with pytest.raises(NotInt32Safe, match=r"not int32-safe: node /model/refine_head/"
                                           r"lap_pyramid/Mul\S* \(Mul\) may reach"):
        export_onnx(model, tmp_path / "wraps.onnx", verify=False)
    assert list(tmp_path.iterdir()) == []
