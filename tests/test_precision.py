"""FP16 and INT8 written into the ONNX graph, verified on every ONNX consumer (ONNX Runtime
and OpenVINO, CPU), each against the fp32 model on the same consumer."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import consumers
import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from isdnet_deploy import runtime
from isdnet_deploy.cli.quantize import quantize_command
from isdnet_deploy.contract import (
    Contract,
    TensorSpec,
    embed_in_onnx,
    read_onnx_contract,
    require_contract,
)
from isdnet_deploy.engine.calibration import synthetic_image
from isdnet_deploy.engine.graph_index import GraphIndex
from isdnet_deploy.engine.graph_passes import head_nodes, pyramid_nodes, shape_nodes
from isdnet_deploy.engine.precision import (
    DEFAULT_KEEP_FP32,
    AgreementWarning,
    CalibrationWarning,
    convert_fp16,
    quantize_int8,
)
from isdnet_deploy.errors import IsdnetError
from isdnet_deploy.runtime.preprocess import prepare_feeds
from isdnet_deploy.runtime.registry import installed_consumers

SIZE = (256, 256)


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory) -> dict[str, Path]:
    """The random-weight reference model exported two ways (dynamic, small verify size)."""
    from isdnet_deploy.export.onnx_export import export_onnx

    folder = tmp_path_factory.mktemp("precision")
    paths = {"float": folder / "isdnet.onnx", "uint8": folder / "isdnet_u8.onnx"}
    export_onnx(model, paths["float"], profile="deepglobe", verify=False)
    export_onnx(model, paths["uint8"], profile="deepglobe", pyramid="external", input="uint8",
                output="labels", verify=False)
    return paths


def _contract(path: Path) -> Contract:
    return read_onnx_contract(onnx.load(str(path), load_external_data=False))


def _io_types(path: Path) -> list[tuple[str, int]]:
    graph = onnx.load(str(path)).graph
    return [(v.name, v.type.tensor_type.elem_type) for v in [*graph.input, *graph.output]]


def _run(path: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def _no_leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if ".tmp" in p.name]


def smooth_standin(path: Path) -> Path:
    """A small well-conditioned segmentation net: smooth features, a few wide regions.

    The random-weight ISDNet amplifies any perturbation (rounding only its input to FP16
    already flips ~0.5% of labels), so it cannot show that INT8 *can* reach >= 99%; this
    net, with strided and 1x1 convolutions, a residual Add and a bilinear Resize of the
    logits, and labels decided by which colour channel dominates (as a trained model's
    confident regions), can.
    """
    nodes, inits = [], []

    def conv(name, x, weight, bias, stride=1):
        k = weight.shape[-1]
        inits.extend([numpy_helper.from_array(weight.astype(np.float32), f"{name}_w"),
                       numpy_helper.from_array(bias.astype(np.float32), f"{name}_b")])
        nodes.append(helper.make_node("Conv", [x, f"{name}_w", f"{name}_b"], [name], name=name,
                                      kernel_shape=[k, k], strides=[stride, stride],
                                      pads=[k // 2] * 4))
        return name

    blur = np.zeros((3, 3, 3, 3))
    for c in range(3):
        blur[c, c] = 1 / 9
    x = conv("blur", "image", blur, np.zeros(3), stride=2)
    nodes.append(helper.make_node("Relu", [x], ["act"], name="relu"))
    y = conv("mix", "act", np.eye(3)[:, :, None, None] * 0.5, np.zeros(3))
    nodes.append(helper.make_node("Add", [x, y], ["res"], name="add"))
    weight = np.zeros((7, 3, 1, 1))
    weight[[1, 4, 5], [0, 1, 2], 0, 0] = 8.0  # class 1 <- red, 4 <- green, 5 <- blue
    bias = np.where(np.isin(np.arange(7), [1, 4, 5]), 0.0, -50.0)
    logits = conv("cls", "res", weight, bias)
    nodes.append(helper.make_node("Shape", ["image"], ["shape"], name="shape"))
    inits += [numpy_helper.from_array(np.array([2], np.int64), "two"),
              numpy_helper.from_array(np.array([4], np.int64), "four"),
              numpy_helper.from_array(np.array([1, 7], np.int64), "nc")]
    nodes.append(helper.make_node("Slice", ["shape", "two", "four"], ["hw"], name="slice"))
    nodes.append(helper.make_node("Concat", ["nc", "hw"], ["sizes"], name="sizes", axis=0))
    nodes.append(helper.make_node("Resize", [logits, "", "", "sizes"], ["logits"],
                                  name="resize", mode="linear"))
    dims = [1, 3, "height", "width"]
    graph = helper.make_graph(
        nodes, "smooth", [helper.make_tensor_value_info("image", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 7, "height", "width"])],
        inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    embed_in_onnx(proto, Contract(
        inputs=[TensorSpec("image", "float32", "NCHW", dims)],
        outputs=[TensorSpec("logits", "float32", "NCHW", [1, 7, "height", "width"])],
        profile="deepglobe", classes=[str(i) for i in range(7)], test_scale=0.8, opset=17))
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return path


# --- FP16 ----------------------------------------------------------------------------------

def test_fp16_keeps_parity_io_types_and_contract(exported, tmp_path) -> None:
    dst = tmp_path / "isdnet.fp16.onnx"
    report = convert_fp16(exported["float"], dst, size=SIZE, progress=False)
    assert dst.is_file() and not _no_leftovers(tmp_path)
    assert report.agreement >= 0.99 and report.miou_vs_fp32 >= 0.95
    assert list(report.verified_on) == list(installed_consumers())  # both, in CI
    for stats in report.verified_on.values():  # the FP16 file runs on each as it is
        assert stats["agreement"] >= 0.99 and stats["miou_vs_fp32"] >= 0.95
    assert report.output_bytes < 0.6 * report.source_bytes  # weights stored as FP16
    assert _io_types(dst) == _io_types(exported["float"])  # keep_io_types
    source, converted = _contract(exported["float"]), _contract(dst)
    assert converted.precision == "fp16" and source.precision == "fp32"
    assert converted.inputs == source.inputs and converted.classes == source.classes
    # The report's agreement is what an independent run measures.
    feeds = prepare_feeds(synthetic_image(SIZE, 0), source)
    ref, cand = _run(exported["float"], feeds), _run(dst, feeds)
    assert cand.dtype == np.float32
    assert (ref.argmax(1) == cand.argmax(1)).mean() >= 0.99
    assert np.abs(ref - cand).max() <= report.max_abs_diff + 1e-6


def test_fp16_uint8_input_labels_output_external_pyramid(exported, tmp_path) -> None:
    dst = tmp_path / "u8.fp16.onnx"
    report = convert_fp16(exported["uint8"], dst, size=SIZE, progress=False)
    assert report.agreement >= 0.99 and report.max_abs_diff is None
    assert _io_types(dst) == _io_types(exported["uint8"])
    assert _contract(dst).pyramid == "external"


def test_fp16_keep_list_leaves_resize_in_fp32(exported, tmp_path) -> None:
    assert "Resize" in DEFAULT_KEEP_FP32
    dst = tmp_path / "keep.fp16.onnx"
    convert_fp16(exported["float"], dst, size=SIZE, progress=False, num_verify=1)
    graph = onnx.shape_inference.infer_shapes(onnx.load(str(dst))).graph
    types = {v.name: v.type.tensor_type.elem_type
             for v in [*graph.input, *graph.value_info, *graph.output]}
    resizes = [n for n in graph.node if n.op_type == "Resize"]
    assert resizes and all(types.get(n.input[0]) == TensorProto.FLOAT for n in resizes)
    convs = [n for n in graph.node if n.op_type == "Conv" and "/lap_pyramid/" not in n.name]
    assert convs and all(types.get(n.output[0]) == TensorProto.FLOAT16 for n in convs)


def test_fp16_shape_arithmetic_stays_exact_above_2048(tmp_path) -> None:
    """A size computed from Shape must not round through FP16 (2049 -> 2048)."""
    nodes = [helper.make_node("Shape", ["x"], ["s"], name="shape"),
             helper.make_node("Cast", ["s"], ["sf"], name="to_float", to=TensorProto.FLOAT),
             helper.make_node("Mul", ["sf", "one"], ["sm"], name="scale"),
             helper.make_node("Cast", ["sm"], ["sizes"], name="to_int", to=TensorProto.INT64),
             helper.make_node("Resize", ["x", "", "", "sizes"], ["r"], name="resize"),
             helper.make_node("Mul", ["r", "two"], ["y"], name="double")]
    graph = helper.make_graph(
        nodes, "shapes", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 1, "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 1, "w"])],
        [numpy_helper.from_array(np.ones(4, np.float32), "one"),
         numpy_helper.from_array(np.array(2, np.float32), "two")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert {"to_float", "scale", "to_int"} <= set(shape_nodes(GraphIndex(proto)))
    embed_in_onnx(proto, Contract(
        inputs=[TensorSpec("x", "float32", "NCHW", [1, 1, 1, "w"])],
        outputs=[TensorSpec("y", "float32", "NCHW", [1, 1, 1, "w"])], classes=["a"]))
    src = tmp_path / "shapes.onnx"
    onnx.save(proto, str(src))
    from onnxconverter_common import float16

    converted = float16.convert_float_to_float16(
        onnx.load(str(src)), keep_io_types=True, node_block_list=shape_nodes(GraphIndex(proto)))
    out = tmp_path / "shapes.fp16.onnx"
    onnx.save(converted, str(out))
    x = np.ones((1, 1, 1, 2049), np.float32)
    assert _run(out, {"x": x}).shape == (1, 1, 1, 2049)


@pytest.mark.parametrize("from_shape", [True, False])
def test_fp16_index_arithmetic_with_large_constants_stays_fp32(tmp_path, from_shape) -> None:
    """Index picks computed in float with a 2**24 constant read by two kept nodes (as the
    exported pyramid's legacy-nearest does) must not pass through FP16 (2**24 -> inf),
    whether the picks derive from the input's shape or from constants alone."""
    const = {name: numpy_helper.from_array(np.array(v, np.float32), name)
             for name, v in (("zero", 0.0), ("one", 1.0), ("big", 2.0**24),
                             ("big2", 2.0**24), ("half", 0.5))}
    if from_shape:
        width = [helper.make_node("Shape", ["image"], ["s"], name="shape"),
                 helper.make_node("Gather", ["s", "three"], ["w"], name="width", axis=0),
                 helper.make_node("Cast", ["w"], ["wf"], name="wf", to=TensorProto.FLOAT)]
    else:
        width = [helper.make_node("Constant", [], ["wf"], name="wf", value=helper.make_tensor(
            "w", TensorProto.FLOAT, [], [3000.0]))]
    nodes = [*width,
             helper.make_node("Range", ["zero", "wf", "one"], ["r"], name="range"),
             helper.make_node("Mul", ["r", "big"], ["rb"], name="scale_up"),
             helper.make_node("Div", ["rb", "big"], ["a"], name="down_a"),
             helper.make_node("Div", ["rb", "big2"], ["b"], name="down_b"),
             helper.make_node("Add", ["a", "b"], ["ab"], name="sum"),
             helper.make_node("Mul", ["ab", "half"], ["m"], name="mean"),
             helper.make_node("Floor", ["m"], ["f"], name="floor"),
             helper.make_node("Cast", ["f"], ["idx"], name="idx", to=TensorProto.INT64),
             helper.make_node("Gather", ["image", "idx"], ["g"], name="pick", axis=3),
             helper.make_node("Mul", ["g", "one"], ["logits"], name="data")]  # shares "one"
    dims = [1, 3, "height", "width"]
    graph = helper.make_graph(
        nodes, "picks", [helper.make_tensor_value_info("image", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, dims)],
        [numpy_helper.from_array(np.array(3, np.int64), "three"), *const.values()])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    embed_in_onnx(proto, Contract(inputs=[TensorSpec("image", "float32", "NCHW", dims)],
                                  outputs=[TensorSpec("logits", "float32", "NCHW", dims)],
                                  classes=["r", "g", "b"]))
    src, dst = tmp_path / "picks.onnx", tmp_path / "picks.fp16.onnx"
    onnx.save(proto, str(src))
    report = convert_fp16(src, dst, size=(40, 3000), num_verify=1, progress=False)
    x = np.random.default_rng(0).normal(size=(1, 3, 40, 3000)).astype(np.float32)
    np.testing.assert_allclose(_run(dst, {"image": x}), x, atol=1e-2)
    assert report.agreement >= 0.99


# --- INT8 ----------------------------------------------------------------------------------

def _initializers(proto: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {i.name: i for i in proto.graph.initializer}


def test_int8_is_tensorrt_explicit_quantization_form(exported, tmp_path) -> None:
    dst = tmp_path / "isdnet.int8.onnx"
    with warnings.catch_warnings(), pytest.warns(CalibrationWarning, match="synthetic"):
        # The random-weight model's INT8 agreement is low (see smooth_standin); not judged here.
        warnings.simplefilter("ignore", AgreementWarning)
        report = quantize_int8(exported["float"], dst, num_synthetic=4, num_verify=2,
                               size=(128, 128), progress=False)
    proto = onnx.load(str(dst))
    inits = _initializers(proto)
    quant = [n for n in proto.graph.node if n.op_type == "QuantizeLinear"]
    dequant = [n for n in proto.graph.node if n.op_type == "DequantizeLinear"]
    assert quant and dequant
    for node in quant + dequant:  # symmetric INT8: every zero point is an int8 zero
        zero = inits[node.input[2]]
        assert zero.data_type == TensorProto.INT8
        assert not numpy_helper.to_array(zero).any()
    # No INT32 (bias) DequantizeLinear, which TensorRT does not take.
    assert all(inits[n.input[0]].data_type == TensorProto.INT8
               for n in dequant if n.input[0] in inits)
    # Conv weights are quantized per output channel.
    producers = {o: n for n in proto.graph.node for o in n.output}
    conv = next(n for n in proto.graph.node
                if n.op_type == "Conv" and n.input[1] in producers)
    weight_dq = producers[conv.input[1]]
    scale = numpy_helper.to_array(inits[weight_dq.input[1]])
    assert scale.ndim == 1 and scale.size == inits[weight_dq.input[0]].dims[0] > 1
    # The classifier head stays float: its convolution reads a float weight directly.
    assert report.excluded_nodes
    head = {n.name: n for n in proto.graph.node if n.name in set(report.excluded_nodes)}
    head_convs = [n for n in head.values() if n.op_type == "Conv"]
    assert head_convs and all(n.input[1] in inits for n in head_convs)
    contract = _contract(dst)
    assert contract.precision == "int8" and report.output_bytes < 0.4 * report.source_bytes
    assert "synthetic" in report.calibration
    assert 0.0 < report.agreement <= 1.0 and report.ms_converted > 0


def test_int8_cpu_target_folds_relu_and_keeps_the_pyramid_float(exported, tmp_path) -> None:
    dst = tmp_path / "isdnet.cpu.int8.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        warnings.simplefilter("ignore", AgreementWarning)  # random weights; not judged here
        report = quantize_int8(exported["float"], dst, num_synthetic=2, num_verify=1,
                               size=(96, 96), target="cpu", progress=False)
    proto = onnx.load(str(dst))
    inits = _initializers(proto)
    producers = {o: n for n in proto.graph.node for o in n.output}
    # u8 activations: the zero points of activation Q nodes are uint8.
    quant = [n for n in proto.graph.node if n.op_type == "QuantizeLinear"]
    assert quant and all(inits[n.input[2]].data_type == TensorProto.UINT8 for n in quant)
    # Every Relu after a quantized convolution was folded into its uint8 range: none is
    # left reading a DequantizeLinear (a float ReLU at full resolution between Q/DQ pairs).
    relus = [n for n in proto.graph.node if n.op_type == "Relu"]
    assert not [n.name for n in relus
                if producers.get(n.input[0]) is not None
                and producers[n.input[0]].op_type == "DequantizeLinear"]
    # The pyramid's convolutions read float weights, and it is listed as excluded.
    pyramid = [n for n in proto.graph.node if "/lap_pyramid/" in n.name
               and n.op_type in ("Conv", "ConvTranspose")]
    assert pyramid and all(inits[n.input[1]].data_type == TensorProto.FLOAT for n in pyramid)
    assert {n.name for n in pyramid} <= set(report.excluded_nodes)
    assert {n.name for n in pyramid} <= set(pyramid_nodes(GraphIndex(proto)))
    # Verified on seeds the calibration never saw.
    assert "held out" in report.calibration and f"seed {10_000}" in report.calibration


def test_int8_pyramid_can_be_quantized_when_asked(exported, tmp_path) -> None:
    dst = tmp_path / "isdnet.all.int8.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = quantize_int8(exported["float"], dst, num_synthetic=2, num_verify=1,
                               size=(96, 96), target="cpu", keep_pyramid_float=False,
                               progress=False)
    assert not any("/lap_pyramid/" in n for n in report.excluded_nodes)
    proto = onnx.load(str(dst))
    inits = _initializers(proto)
    pyramid_convs = [n for n in proto.graph.node if "/lap_pyramid/" in n.name
                     and n.op_type == "Conv"]
    assert pyramid_convs and not all(n.input[1] in inits and inits[n.input[1]].data_type
                                     == TensorProto.FLOAT for n in pyramid_convs)


def test_int8_reaches_99_percent_on_a_well_conditioned_net(tmp_path) -> None:
    src = smooth_standin(tmp_path / "smooth.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        report = quantize_int8(src, tmp_path / "smooth.int8.onnx", progress=False)
    assert report.agreement >= 0.99, report.rows()
    assert report.miou_vs_fp32 >= 0.95


def test_fp16_of_the_default_export_keeps_its_bound_on_every_consumer(onnx_model,
                                                                      tmp_path) -> None:
    """The in-graph pyramid stays FP32 (in FP16 it cost 25 % of the labels); the FP16 file
    then keeps >= 99 % of FP32's labels on ONNX Runtime and on OpenVINO, run directly too."""
    pytest.importorskip("openvino", reason="OpenVINO is not installed: pip install "
                                           "'isdnet-deploy[openvino]'")
    dst = tmp_path / "isdnet.fp16.onnx"
    report = convert_fp16(onnx_model, dst, size=(128, 160), num_verify=2, progress=False)
    assert list(report.verified_on) == ["onnxruntime", "openvino"]
    for consumer, stats in report.verified_on.items():
        assert stats["agreement"] >= 0.99 and stats["miou_vs_fp32"] >= 0.95, (consumer, stats)
    proto = onnx.shape_inference.infer_shapes(onnx.load(str(dst)))
    types = {v.name: v.type.tensor_type.elem_type for v in proto.graph.value_info}
    pyramid = [n for n in proto.graph.node if "/lap_pyramid/" in n.name and n.op_type == "Conv"]
    assert pyramid and all(types[n.output[0]] == TensorProto.FLOAT for n in pyramid)
    feeds = prepare_feeds(synthetic_image((128, 160), 5), _contract(onnx_model))
    fp32, fp16 = (consumers.run("openvino", path, feeds) for path in (onnx_model, dst))
    assert (fp32.argmax(axis=1) == fp16.argmax(axis=1)).mean() >= 0.99


@pytest.mark.parametrize("target", ["tensorrt", "cpu"])
def test_int8_forms_keep_their_bound_on_every_consumer(tmp_path, target) -> None:
    """Both Q/DQ forms run on OpenVINO as they are, within the 99 % bound of their own fp32
    model there as on ONNX Runtime (the well-conditioned net: a random ISDNet cannot show
    the bound, see smooth_standin); OpenVINO is then run directly, outside the runtime."""
    pytest.importorskip("openvino", reason="OpenVINO is not installed: pip install "
                                           "'isdnet-deploy[openvino]'")
    src, dst = smooth_standin(tmp_path / "smooth.onnx"), tmp_path / f"smooth.{target}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        report = quantize_int8(src, dst, num_synthetic=4, num_verify=2, size=(128, 96),
                               target=target, progress=False)
    assert list(report.verified_on) == ["onnxruntime", "openvino"]
    for consumer, stats in report.verified_on.items():
        assert stats["agreement"] >= 0.99 and stats["miou_vs_fp32"] >= 0.95, (consumer, stats)
    feeds = prepare_feeds(synthetic_image((96, 128), 77), _contract(src))
    fp32, int8 = (consumers.run("openvino", path, feeds) for path in (src, dst))
    assert (fp32.argmax(axis=1) == int8.argmax(axis=1)).mean() >= 0.99


def test_isdnet_int8_forms_run_on_openvino(onnx_model, tmp_path) -> None:
    """The ISDNet Q/DQ graphs (both forms) compile and run on OpenVINO as they are; with
    random weights agreement is no bound (see smooth_standin), so only that they ran."""
    pytest.importorskip("openvino", reason="OpenVINO is not installed: pip install "
                                           "'isdnet-deploy[openvino]'")
    for target in ("tensorrt", "cpu"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            report = quantize_int8(onnx_model, tmp_path / f"{target}.int8.onnx",
                                   num_synthetic=2, num_verify=1, size=(96, 96),
                                   target=target, progress=False,
                                   verify_on=("openvino",))
        (stats,) = report.verified_on.values()
        assert list(report.verified_on) == ["openvino"] and 0.0 < stats["agreement"] <= 1.0
        assert stats["ms_converted"] > 0 and stats["max_abs_diff"] is not None


def _image_folder(folder: Path, count: int, size: tuple[int, int], seed: int) -> Path:
    folder.mkdir()
    for i in range(count):
        cv2.imwrite(str(folder / f"tile_{i}.png"), synthetic_image(size, seed + i))
    return folder


def test_int8_calibrates_on_a_folder_of_images(tmp_path) -> None:
    src = smooth_standin(tmp_path / "smooth.onnx")
    calib = _image_folder(tmp_path / "calib", 3, (300, 280), 100)
    (calib / "notes.txt").write_text("not an image")
    with warnings.catch_warnings():
        warnings.simplefilter("error", CalibrationWarning)  # real images: no warning
        report = quantize_int8(src, tmp_path / "out.onnx", calib, num_verify=2, progress=False)
    assert report.calibration.startswith("3 image(s)")
    assert "verified on the calibration images themselves" in report.calibration
    assert report.size == [512, 512] and report.num_verify == 2


def test_int8_holds_out_verification_images_from_a_folder(tmp_path) -> None:
    src = smooth_standin(tmp_path / "smooth.onnx")
    calib = _image_folder(tmp_path / "calib", 5, (200, 180), 200)
    report = quantize_int8(src, tmp_path / "out.onnx", calib, num_verify=2, size=(128, 128),
                           progress=False)
    assert report.calibration.startswith("3 image(s)"), report.calibration
    assert "2 image(s)" in report.calibration and "held out" in report.calibration
    assert report.num_verify == 2


def test_int8_empty_calibration_folder_is_an_error(tmp_path) -> None:
    src = smooth_standin(tmp_path / "smooth.onnx")
    (tmp_path / "empty").mkdir()
    dst = tmp_path / "out.onnx"
    with pytest.raises(IsdnetError, match="holds no images"):
        quantize_int8(src, dst, tmp_path / "empty", progress=False)
    with pytest.raises(IsdnetError, match="does not exist"):
        quantize_int8(src, dst, tmp_path / "absent", progress=False)
    with pytest.raises(IsdnetError, match="empty"):
        quantize_int8(src, dst, [], progress=False)
    assert not dst.exists()


def test_agreement_gate_writes_nothing(tmp_path) -> None:
    src = smooth_standin(tmp_path / "smooth.onnx")
    dst = tmp_path / "gated.onnx"
    dst.write_bytes(b"previous")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        with pytest.raises(IsdnetError, match="nothing was written"):
            quantize_int8(src, dst, num_synthetic=2, num_verify=1, min_agreement=1.0,
                          progress=False)
    assert dst.read_bytes() == b"previous" and not _no_leftovers(tmp_path)


def test_head_nodes_are_the_classifier_and_what_follows(exported) -> None:
    proto = onnx.load(str(exported["float"]))
    names = set(head_nodes(GraphIndex(proto)))
    by_name = {n.name: n for n in proto.graph.node}
    ops = [by_name[n].op_type for n in names]
    assert ops.count("Conv") == 1 and ops.count("Resize") == 1
    head_conv = next(by_name[n] for n in names if by_name[n].op_type == "Conv")
    resize = next(by_name[n] for n in names if by_name[n].op_type == "Resize")
    assert resize.input[0] == head_conv.output[0]
    assert resize.output[0] == proto.graph.output[0].name


# --- refusals --------------------------------------------------------------------------------

def test_onnx_without_contract_is_refused(tmp_path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "foreign",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])])
    src = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(graph), str(src))
    for convert in (convert_fp16, quantize_int8):
        with pytest.raises(IsdnetError, match="no isdnet-deploy contract"):
            convert(src, tmp_path / "out.onnx", progress=False)
    assert not (tmp_path / "out.onnx").exists()


def test_converted_model_is_not_converted_again(tmp_path) -> None:
    src = smooth_standin(tmp_path / "smooth.onnx")
    convert_fp16(src, tmp_path / "a.onnx", progress=False, num_verify=1)
    with pytest.raises(IsdnetError, match="already fp16"):
        convert_fp16(tmp_path / "a.onnx", tmp_path / "b.onnx", progress=False)


def test_unreadable_onnx_is_refused(tmp_path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf at all")
    with pytest.raises(IsdnetError):
        convert_fp16(bad, tmp_path / "out.onnx", progress=False)


def test_missing_contract_reads_the_same_in_engine_and_runtime(tmp_path) -> None:
    proto = helper.make_model(helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "foreign",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])]))
    path = tmp_path / "foreign.onnx"
    onnx.save(proto, str(path))
    with pytest.raises(IsdnetError) as engine:
        require_contract(proto, str(path))
    with pytest.raises(IsdnetError) as backend:
        runtime.open_backend(path)
    assert "'isdnet_deploy'" in str(engine.value) and "\n" not in str(backend.value)
    assert str(backend.value).startswith(str(engine.value) + " or pass contract=")


def test_verification_opens_both_models_through_the_runtime(monkeypatch, tmp_path) -> None:
    src = smooth_standin(tmp_path / "smooth.onnx")
    opened = []
    real = runtime.open_backend

    def spy(path, *args, **kwargs):
        opened.append((Path(path).suffix, *args))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(runtime, "open_backend", spy)
    convert_fp16(src, tmp_path / "out.onnx", size=(64, 64), num_verify=1, progress=False)
    assert opened == [(".onnx", consumer, "cpu") for consumer in installed_consumers()
                      for _ in ("fp32", "fp16")]


def test_converted_model_onnx_runtime_rejects_is_one_line_and_writes_nothing(
        monkeypatch, tmp_path) -> None:
    """A converter result ONNX Runtime cannot load is reported with ONNX Runtime's reason,
    not as a damaged file."""
    from onnxconverter_common import float16

    def mistyped(model, **kwargs):
        half = numpy_helper.from_array(np.ones(1, np.float16), "half")
        model.graph.initializer.append(half)
        model.graph.node.append(helper.make_node("Add", ["logits", "half"], ["sum"]))
        model.graph.output.append(helper.make_tensor_value_info("sum", TensorProto.FLOAT16,
                                                                None))
        return model

    monkeypatch.setattr(float16, "convert_float_to_float16", mistyped)
    src = smooth_standin(tmp_path / "smooth.onnx")
    dst = tmp_path / "out.onnx"
    with pytest.raises(IsdnetError, match="the fp16 model does not run on onnxruntime") as info:
        convert_fp16(src, dst, size=(64, 64), num_verify=1, progress=False)
    assert "\n" not in str(info.value) and "corrupt" not in str(info.value)
    assert "nothing was written" in str(info.value) and "Type" in str(info.value)
    assert not dst.exists() and not _no_leftovers(tmp_path)


# --- CLI -----------------------------------------------------------------------------------------

def test_cli_int8_without_calib_warns_then_writes(tmp_path) -> None:
    src = smooth_standin(tmp_path / "smooth.onnx")
    out = tmp_path / "cli.int8.onnx"
    result = CliRunner().invoke(quantize_command, [
        str(src), "--precision", "int8", "--num-synthetic", "4", "--verify", "2",
        "--size", "128x128", "--no-progress", "-o", str(out),
        "--report", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    assert "WARNING" in result.output and "synthetic" in result.output
    assert "argmax agreement" in result.output and out.is_file()
    assert '"precision": "int8"' in (tmp_path / "r.json").read_text()


def test_cli_fp16_default_output_name(tmp_path) -> None:
    src = smooth_standin(tmp_path / "smooth.onnx")
    result = CliRunner().invoke(quantize_command, [
        str(src), "--precision", "fp16", "--size", "96x96", "--verify", "1", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "smooth.fp16.onnx").is_file()


def test_cli_empty_calib_folder_raises_one_line_error(tmp_path) -> None:
    src = smooth_standin(tmp_path / "smooth.onnx")
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(quantize_command, [
        str(src), "--precision", "int8", "--calib", str(tmp_path / "empty"), "--no-progress"])
    assert isinstance(result.exception, IsdnetError)
    assert "\n" not in str(result.exception) and "holds no images" in str(result.exception)


def test_cli_verify_on_names_consumers_and_reports_each(tmp_path) -> None:
    pytest.importorskip("openvino", reason="OpenVINO is not installed: pip install "
                                           "'isdnet-deploy[openvino]'")
    src = smooth_standin(tmp_path / "smooth.onnx")
    result = CliRunner().invoke(quantize_command, [
        str(src), "--precision", "fp16", "--size", "64x64", "--verify", "1", "--no-progress",
        "--verify-on", "openvino", "--json", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    assert "openvino (CPU), each against fp32 on the same consumer" in result.output
    assert "onnxruntime:" not in result.output and "openvino: argmax agreement" in result.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert list(report["verified_on"]) == ["openvino"]


def test_cli_verify_on_refusals(monkeypatch, tmp_path) -> None:
    import importlib.util

    src = smooth_standin(tmp_path / "smooth.onnx")
    unknown = CliRunner().invoke(quantize_command, [str(src), "--precision", "fp16",
                                                    "--verify-on", "tvm"])
    assert unknown.exit_code == 2 and "'tvm' is not an ONNX consumer" in unknown.output
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "openvino" else real(name, *a))
    with pytest.raises(IsdnetError) as info:
        CliRunner().invoke(quantize_command, [str(src), "--precision", "fp16", "--verify-on",
                                              "onnxruntime,openvino"], catch_exceptions=False)
    assert str(info.value) == ("openvino is not installed (needed to verify on openvino); "
                               "install it with: pip install 'isdnet-deploy[openvino]'")
    assert not (tmp_path / "smooth.fp16.onnx").exists()
