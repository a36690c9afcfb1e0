"""The graph index and the precision graph passes, on small hand-made ONNX graphs; the
calibration inputs and their reader."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import CalibrationDataReader
from test_precision import smooth_standin

from isdnet_deploy.contract import Contract, TensorSpec
from isdnet_deploy.engine import graph_index
from isdnet_deploy.engine.calibration import (
    VERIFY_SEED_OFFSET,
    CalibrationReader,
    ImageSource,
    describe_split,
    held_out_split,
)
from isdnet_deploy.engine.graph_index import GraphIndex, name_nodes
from isdnet_deploy.engine.graph_passes import (
    drop_fp16_round_trips,
    head_nodes,
    index_nodes,
    integer_casts,
    pyramid_nodes,
    restore_output_types,
    shape_nodes,
    split_shared_constants,
)
from isdnet_deploy.engine.precision import convert_fp16

F32, F16 = TensorProto.FLOAT, TensorProto.FLOAT16
DIMS = [1, 3, 8, 8]


def _model(nodes, inputs, outputs, initializers=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _value(name: str, elem: int = F32, dims=DIMS) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, dims)


def _init(name: str, value, dtype=np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype), name)


def _node(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.name == name)


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _count_index_inference(monkeypatch) -> list[int]:
    """Record each ONNX shape inference that ``GraphIndex`` runs (the FP16 converter and
    ONNX Runtime's quantizer run their own, not counted)."""
    calls: list[int] = []
    real = onnx.shape_inference.infer_shapes

    def counting(model, *args, **kwargs):
        if sys._getframe(1).f_code.co_filename == graph_index.__file__:
            calls.append(1)
        return real(model, *args, **kwargs)

    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", counting)
    return calls


# --- the index ------------------------------------------------------------------------------

def test_index_maps_producers_readers_constants_and_initializers() -> None:
    model = _model(
        [helper.make_node("Constant", [], ["k"], name="const",
                          value=helper.make_tensor("k", F32, [], [2.0])),
         helper.make_node("Mul", ["x", "k"], ["a"], name="mul"),
         helper.make_node("Add", ["a", "a"], ["b"], name="double"),
         helper.make_node("Add", ["b", "w"], ["y"], name="bias")],
        [_value("x")], [_value("y")], [_init("w", 1.0)])
    index = GraphIndex(model)
    assert index.producers["a"].name == "mul" and "x" not in index.producers
    assert [n.name for n in index.readers["a"]] == ["double", "double"]
    assert [n.name for n in index.readers["w"]] == ["bias"]
    assert list(index.initializers) == ["w"] and list(index.constants) == ["k"]
    assert index.types["b"] == F32 and index.types["k"] == F32 and index.types["w"] == F32


def test_shape_inference_runs_once_per_index_and_only_when_types_are_needed(
        monkeypatch) -> None:
    calls = _count_index_inference(monkeypatch)
    model = _model([helper.make_node("Cast", ["x"], ["f"], name="to_float", to=F32),
                    helper.make_node("Relu", ["f"], ["y"], name="relu")],
                   [_value("x", TensorProto.UINT8)], [_value("y")])
    index = GraphIndex(model)
    assert head_nodes(index) == ["relu", "to_float"]
    assert shape_nodes(index) == pyramid_nodes(index) == []
    assert calls == []
    assert integer_casts(index) == ["to_float"] and index_nodes(index) == []
    assert index.types is index.types
    assert len(calls) == 1
    assert GraphIndex(model).types == index.types
    assert len(calls) == 2


def test_fp16_conversion_infers_shapes_once_per_model(monkeypatch, tmp_path) -> None:
    """Once for the source, once for the converted model (it was three times)."""
    src = smooth_standin(tmp_path / "smooth.onnx")
    calls = _count_index_inference(monkeypatch)
    convert_fp16(src, tmp_path / "smooth.fp16.onnx", size=(64, 64), num_verify=1,
                 progress=False)
    assert len(calls) == 2


def test_name_nodes_names_unnamed_nodes_uniquely() -> None:
    model = _model([helper.make_node("Relu", ["x"], ["a"]),
                    helper.make_node("Relu", ["a"], ["b"], name="Relu_2"),
                    helper.make_node("Relu", ["b"], ["y"])],
                   [_value("x")], [_value("y")])
    name_nodes(model)
    assert [n.name for n in model.graph.node] == ["Relu_0", "Relu_2", "Relu_2_"]


# --- FP16 analyses --------------------------------------------------------------------------

def test_shape_nodes_follow_shapes_and_constants_only() -> None:
    model = _model(
        [helper.make_node("Shape", ["x"], ["s"], name="shape"),
         helper.make_node("Gather", ["s", "three"], ["w"], name="width", axis=0),
         helper.make_node("Cast", ["w"], ["wf"], name="to_float", to=F32),
         helper.make_node("Mul", ["wf", "x"], ["y"], name="with_data")],
        [_value("x")], [_value("y")], [_init("three", 3, np.int64)])
    assert shape_nodes(GraphIndex(model)) == ["width", "to_float"]


def test_index_nodes_walk_back_from_integers_and_stop_at_convolutions() -> None:
    model = _model(
        [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
         helper.make_node("Mul", ["c", "half"], ["m"], name="scale"),
         helper.make_node("Floor", ["m"], ["f"], name="floor"),
         helper.make_node("Cast", ["f"], ["i"], name="to_int", to=TensorProto.INT64),
         helper.make_node("Relu", ["c"], ["y"], name="relu")],
        [_value("x")], [_value("y"), _value("i", TensorProto.INT64)],
        [_init("w", np.ones((3, 3, 1, 1))), _init("half", 0.5)])
    assert set(index_nodes(GraphIndex(model))) == {"to_int", "floor", "scale"}


def test_integer_casts_are_casts_from_integer_tensors() -> None:
    model = _model([helper.make_node("Cast", ["x"], ["f"], name="u8_to_float", to=F32),
                    helper.make_node("Cast", ["f"], ["y"], name="to_half", to=F16)],
                   [_value("x", TensorProto.UINT8)], [_value("y", F16)])
    assert integer_casts(GraphIndex(model)) == ["u8_to_float"]


# --- FP16 mending passes --------------------------------------------------------------------

def test_split_shared_constants_copies_for_kept_readers_only() -> None:
    model = _model(
        [helper.make_node("Constant", [], ["cv"], name="c",
                          value=helper.make_tensor("cv", F32, [], [3.0])),
         helper.make_node("Mul", ["x", "w"], ["a"], name="converted"),
         helper.make_node("Add", ["a", "w"], ["b"], name="kept"),
         helper.make_node("Add", ["b", "v"], ["d"], name="kept_alone"),
         helper.make_node("Sub", ["d", "cv"], ["e"], name="converted_sub"),
         helper.make_node("Div", ["e", "cv"], ["y"], name="kept_by_op")],
        [_value("x")], [_value("y")], [_init("w", 2.0), _init("v", 1.0)])
    blocked = {"kept", "kept_alone"}
    split_shared_constants(GraphIndex(model), blocked, {"Div"})
    assert [i.name for i in model.graph.initializer] == ["w", "v", "w_fp32"]
    assert list(_node(model, "kept").input) == ["a", "w_fp32"]
    assert list(_node(model, "converted").input) == ["x", "w"]
    assert list(_node(model, "kept_alone").input) == ["b", "v"]  # no converted reader
    assert [n.name for n in model.graph.node][:2] == ["c", "c_fp32"]
    assert list(_node(model, "kept_by_op").input) == ["e", "cv_fp32"]
    assert list(_node(model, "converted_sub").input) == ["d", "cv"]
    assert "c_fp32" in blocked
    onnx.checker.check_model(model)
    x = np.arange(192, dtype=np.float32).reshape(DIMS)
    np.testing.assert_allclose(_run(model, {"x": x})[0], (x * 2 + 2 + 1 - 3) / 3, rtol=1e-6)


def test_restore_output_types_retargets_or_appends_a_cast() -> None:
    model = _model(
        [helper.make_node("Relu", ["x"], ["r"], name="relu"),
         helper.make_node("Cast", ["r"], ["y_cast"], name="cast_out", to=F16),
         helper.make_node("Relu", ["h"], ["y_node"], name="half_relu")],
        [_value("x"), _value("h", F16)], [_value("y_cast", F16), _value("y_node", F16)])
    restore_output_types(GraphIndex(model), {"y_cast": F32, "y_node": F32})
    assert [o.type.tensor_type.elem_type for o in model.graph.output] == [F32, F32]
    assert _node(model, "cast_out").attribute[0].i == F32
    assert list(_node(model, "half_relu").output) == ["y_node_converted"]
    appended = _node(model, "y_node_restore_type")
    assert (appended.op_type, list(appended.input)) == ("Cast", ["y_node_converted"])
    onnx.checker.check_model(model)
    x = np.full(DIMS, 1 / 3, np.float32)
    y_cast, y_node = _run(model, {"x": x, "h": x.astype(np.float16)})
    assert y_cast.dtype == y_node.dtype == np.float32


def test_drop_fp16_round_trips_rewires_kept_nodes_and_removes_dead_casts() -> None:
    """70000 overflows FP16 (max 65504): through the round trip the kept Floor saw inf."""
    model = _model(
        [helper.make_node("Cast", ["x"], ["ha"], name="down_shared", to=F16),
         helper.make_node("Cast", ["ha"], ["ua"], name="up_a", to=F32),
         helper.make_node("Relu", ["ha"], ["y_half"], name="half_reader"),
         helper.make_node("Floor", ["ua"], ["y_a"], name="kept_a"),
         helper.make_node("Cast", ["x"], ["hb"], name="down_alone", to=F16),
         helper.make_node("Cast", ["hb"], ["ub"], name="up_b", to=F32),
         helper.make_node("Floor", ["ub"], ["y_b"], name="kept_b")],
        [_value("x")], [_value("y_a"), _value("y_half", F16), _value("y_b")])
    x = np.full(DIMS, 70000.5, np.float32)
    assert np.isinf(_run(model, {"x": x})[0]).all()
    assert drop_fp16_round_trips(GraphIndex(model)) == 2
    names = [n.name for n in model.graph.node]
    assert "down_alone" not in names and "down_shared" in names  # still read by half_reader
    for name in ("up_a", "up_b"):
        up = _node(model, name)
        assert (up.op_type, list(up.input), list(up.attribute)) == ("Identity", ["x"], [])
    onnx.checker.check_model(model)
    y_a, _, y_b = _run(model, {"x": x})
    assert (y_a == 70000.0).all() and (y_b == 70000.0).all()


# --- INT8 analyses --------------------------------------------------------------------------

def test_head_is_the_classifier_and_what_follows_and_the_pyramid_is_its_scope() -> None:
    model = _model(
        [helper.make_node("Conv", ["x", "w"], ["f"], name="/lap_pyramid/Conv"),
         helper.make_node("Conv", ["f", "w"], ["g"], name="backbone"),
         helper.make_node("Relu", ["g"], ["a"], name="act"),
         helper.make_node("Conv", ["a", "w"], ["logits"], name="classifier"),
         helper.make_node("Resize", ["logits", "", "scales"], ["y"], name="up")],
        [_value("x")], [_value("y", dims=[1, 3, 16, 16])],
        [_init("w", np.ones((3, 3, 1, 1))), _init("scales", [1, 1, 2, 2])])
    index = GraphIndex(model)
    assert head_nodes(index) == ["up", "classifier"]
    assert pyramid_nodes(index) == ["/lap_pyramid/Conv"]


# --- calibration inputs ---------------------------------------------------------------------

CONTRACT = Contract(inputs=[TensorSpec("image", "float32", "NCHW", [1, 3, "height", "width"])],
                    outputs=[TensorSpec("logits", "float32", "NCHW",
                                        [1, 2, "height", "width"])],
                    classes=["a", "b"])


def test_calibration_reader_is_onnxruntimes_interface_and_rewinds() -> None:
    reader = CalibrationReader(ImageSource(CONTRACT, (64, 48), None, 3, seed=5), progress=False)
    assert isinstance(reader, CalibrationDataReader) and len(reader) == 3
    first = list(reader)  # CalibrationDataReader iterates over get_next until None
    assert len(first) == 3 and reader.get_next() is None
    assert all(f["image"].shape == (1, 3, 64, 48) and f["image"].dtype == np.float32
               for f in first)
    assert not np.array_equal(first[0]["image"], first[1]["image"])  # seeds 5 and 6
    reader.rewind()
    assert np.array_equal(reader.get_next()["image"], first[0]["image"])


def test_held_out_split_never_verifies_on_calibration_inputs() -> None:
    size = (64, 64)
    calib, verify = held_out_split(CONTRACT, size, None, num_synthetic=4, num_verify=2,
                                   max_images=32, seed=0)
    assert (calib.count, calib.seed, verify.count) == (4, 0, 2)
    assert verify.seed == VERIFY_SEED_OFFSET and "held out" in describe_split(calib, verify)

    images = [Path(f"tile_{i}.png") for i in range(5)]
    calib, verify = held_out_split(CONTRACT, size, images, num_synthetic=4, num_verify=2,
                                   max_images=32, seed=0)
    assert len(verify.images) == 2 and len(calib.images) == 3
    assert sorted(calib.images + verify.images) == images

    calib, verify = held_out_split(CONTRACT, size, images[:3], num_synthetic=4, num_verify=2,
                                   max_images=32, seed=0)
    assert verify is calib and "themselves" in describe_split(calib, verify)


@pytest.mark.parametrize("max_images", [1, 2])
def test_held_out_split_caps_calibration_images(max_images) -> None:
    images = [Path(f"tile_{i}.png") for i in range(6)]
    calib, verify = held_out_split(CONTRACT, (64, 64), images, num_synthetic=4, num_verify=2,
                                   max_images=max_images, seed=3)
    assert len(calib.images) == max_images and len(verify.images) == 2
    assert not set(calib.images) & set(verify.images)
