"""ONNX export at API level: every I/O variant against the PyTorch reference in ONNX Runtime,
and every option on a second consumer (OpenVINO).

The eight variants are exported once (dynamic) and shared; sizes stay small and include
sides not divisible by 4, where the pyramid's odd-size fallback and the legacy-nearest
down-sampling are easiest to get wrong.
"""

from __future__ import annotations

import importlib.util
import itertools
from collections import Counter
from pathlib import Path

import consumers
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

from isdnet_deploy.contract import INPUT_KINDS, OUTPUT_KINDS, PYRAMID_MODES, read_onnx_contract
from isdnet_deploy.errors import IsdnetError

VARIANTS = list(itertools.product(PYRAMID_MODES, INPUT_KINDS, OUTPUT_KINDS))
VERIFY_SIZE = (98, 130)
SIZES = [(258, 202), (130, 98)]  # neither side divisible by 4


def _id(variant: tuple[str, ...]) -> str:
    return "-".join(variant)


def _session(path: str | Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _reference(model, normalised: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.from_numpy(normalised)).numpy()


def _decided(reference: np.ndarray, margin: float) -> np.ndarray:
    """Pixels whose reference top-2 logits differ by more than ``margin``."""
    top2 = np.sort(reference[0], axis=0)[-2:]
    return (top2[1] - top2[0]) > margin


@pytest.fixture(scope="module")
def exports(model, tmp_path_factory):
    from isdnet_deploy.export.onnx_export import export_onnx

    folder = tmp_path_factory.mktemp("variants")
    return {v: export_onnx(model, folder / f"{_id(v)}.onnx", pyramid=v[0], input=v[1],
                           output=v[2], verify_size=VERIFY_SIZE)
            for v in VARIANTS}


@pytest.fixture(scope="module")
def static_export(model, tmp_path_factory):
    from isdnet_deploy.export.onnx_export import export_onnx

    path = tmp_path_factory.mktemp("static") / "static.onnx"
    return export_onnx(model, path, dynamic=False, size=(130, 98))


@pytest.mark.parametrize("variant", VARIANTS, ids=_id)
def test_export_verified_on_export(exports, variant):
    report = exports[variant]
    assert report.parity is not None and report.parity.passed
    assert tuple(report.parity.size) == VERIFY_SIZE
    assert Path(report.path).stat().st_size == report.file_bytes > 10_000_000


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("variant", VARIANTS, ids=_id)
def test_variant_matches_reference(model, exports, variant, size):
    from isdnet_deploy.export.onnx_export import verify_onnx

    report = exports[variant]
    parity = verify_onnx(report.path, model, report.contract, size, seed=1)
    assert parity.passed, parity
    assert parity.decided_agreement == 1.0
    if report.contract.output_kind == "logits":
        assert parity.max_abs_diff <= parity.tolerance
    else:
        assert parity.max_abs_diff is None


@pytest.mark.parametrize("variant", VARIANTS, ids=_id)
def test_outputs_follow_contract(exports, variant):
    from isdnet_deploy.export.onnx_export import sample_inputs

    contract = exports[variant].contract
    h, w = 130, 98
    out_h, out_w = 162, 121  # labels resized in the graph come at output_size
    feeds, _ = sample_inputs(contract, (h, w), output_size=(out_h, out_w))
    assert sorted(feeds) == sorted(s.name for s in contract.inputs)
    (result,) = _session(exports[variant].path).run(None, feeds)
    (spec,) = contract.outputs
    dims = {"height": h, "width": w, "out_height": out_h, "out_width": out_w}
    expected = [dims.get(d, d) for d in spec.shape]
    assert list(result.shape) == expected
    assert result.dtype == np.dtype(spec.dtype)


@pytest.mark.parametrize("pyramid", PYRAMID_MODES)
@pytest.mark.parametrize("input_kind", INPUT_KINDS)
def test_labels_equal_reference_argmax(model, exports, pyramid, input_kind):
    from isdnet_deploy.export.onnx_export import sample_inputs

    report = exports[(pyramid, input_kind, "labels")]
    feeds, normalised = sample_inputs(report.contract, (258, 202), seed=2)
    (labels,) = _session(report.path).run(None, feeds)
    reference = _reference(model, normalised)
    decided = _decided(reference, 1e-3)
    assert decided.mean() > 0.95  # otherwise the comparison below says little
    assert labels.dtype == np.uint8
    np.testing.assert_array_equal(labels[decided], reference.argmax(1)[0][decided])


@pytest.mark.parametrize("output_kind", OUTPUT_KINDS)
@pytest.mark.parametrize("pyramid", PYRAMID_MODES)
def test_uint8_input_equals_float_input(model, exports, pyramid, output_kind):
    from isdnet_deploy.export.onnx_export import sample_inputs
    from isdnet_deploy.pyramid.opencv_ops import shallow_input_nchw

    byte_report = exports[(pyramid, "uint8", output_kind)]
    float_report = exports[(pyramid, "float", output_kind)]
    byte_feeds, _ = sample_inputs(byte_report.contract, (258, 202), seed=3)
    rgb = byte_feeds["image"]
    assert rgb.dtype == np.uint8 and rgb.shape == (1, 258, 202, 3)
    mean = np.asarray(float_report.contract.mean, np.float32)
    std = np.asarray(float_report.contract.std, np.float32)
    normalised = np.ascontiguousarray(((rgb[0].astype(np.float32) - mean) / std)
                                      .transpose(2, 0, 1)[None])
    float_feeds = {"image": normalised}
    if "output_size" in byte_feeds:
        float_feeds["output_size"] = byte_feeds["output_size"]
    if pyramid == "external":
        float_feeds["residual"] = shallow_input_nchw(normalised[0].transpose(1, 2, 0))
        np.testing.assert_array_equal(float_feeds["residual"], byte_feeds["residual"])
    (from_bytes,) = _session(byte_report.path).run(None, byte_feeds)
    (from_floats,) = _session(float_report.path).run(None, float_feeds)
    if output_kind == "logits":
        np.testing.assert_allclose(from_bytes, from_floats, rtol=0, atol=1e-4)
    else:
        decided = _decided(_reference(model, normalised), 1e-3)
        assert decided.mean() > 0.95
        np.testing.assert_array_equal(from_bytes[decided], from_floats[decided])


def test_one_dynamic_file_runs_at_many_sizes(model, exports):
    from isdnet_deploy.export.onnx_export import sample_inputs

    report = exports[("graph", "float", "logits")]
    session = _session(report.path)
    for size in [(258, 202), (130, 98), (96, 128), (61, 45), (32, 33)]:
        feeds, normalised = sample_inputs(report.contract, size, seed=4)
        (logits,) = session.run(None, feeds)
        reference = _reference(model, normalised)
        assert logits.shape == reference.shape == (1, model.num_classes, *size)
        tolerance = 1e-4 + 1e-5 * np.abs(reference).max()
        assert np.abs(logits - reference).max() <= tolerance, size


def test_static_export_runs_only_at_its_size(model, static_export):
    from isdnet_deploy.export.onnx_export import sample_inputs, verify_onnx

    contract = static_export.contract
    assert not contract.dynamic and contract.fixed_size == [130, 98]
    assert static_export.parity.passed and tuple(static_export.parity.size) == (130, 98)
    proto = onnx.load(static_export.path, load_external_data=False)
    dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 130, 98]
    assert verify_onnx(static_export.path, model, contract, (130, 98), seed=5).passed
    feeds, _ = sample_inputs(contract, (98, 130))
    with pytest.raises(InvalidArgument, match=r"(?i)invalid dimensions"):
        _session(static_export.path).run(None, feeds)


@pytest.mark.parametrize("variant", VARIANTS, ids=_id)
def test_contract_round_trips_through_metadata(exports, variant):
    report = exports[variant]
    proto = onnx.load(report.path, load_external_data=False)
    contract = read_onnx_contract(proto)
    assert contract == report.contract
    assert (contract.pyramid, contract.input_kind, contract.output_kind) == variant
    assert contract.dynamic and contract.profile == "deepglobe"
    assert [i.name for i in proto.graph.input] == [s.name for s in contract.inputs]
    assert [o.name for o in proto.graph.output] == [s.name for s in contract.outputs]


def test_static_contract_round_trips(static_export):
    proto = onnx.load(static_export.path, load_external_data=False)
    assert read_onnx_contract(proto) == static_export.contract


@pytest.mark.parametrize("variant", VARIANTS, ids=_id)
def test_onnx_checker_full_check(exports, variant):
    onnx.checker.check_model(exports[variant].path, full_check=True)


def test_files_are_self_contained(exports):
    folder = Path(exports[VARIANTS[0]].path).parent
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{_id(v)}.onnx"
                                                              for v in VARIANTS)
    for report in exports.values():
        proto = onnx.load(report.path, load_external_data=False)
        assert not any(t.data_location == onnx.TensorProto.EXTERNAL
                       for t in proto.graph.initializer)


def test_simplified_export_still_verifies(model, exports, tmp_path):
    from isdnet_deploy.export.onnx_export import export_onnx, verify_onnx

    report = export_onnx(model, tmp_path / "slim.onnx", simplify=True,
                         verify_size=VERIFY_SIZE)
    assert report.simplified and report.parity.passed
    plain = onnx.load(exports[("graph", "float", "logits")].path, load_external_data=False)
    slim = onnx.load(report.path, load_external_data=False)
    assert len(slim.graph.node) <= len(plain.graph.node)
    assert read_onnx_contract(slim) == report.contract
    assert verify_onnx(report.path, model, report.contract, (258, 202), seed=6).passed


def test_int32_labels(model, exports, tmp_path):
    from isdnet_deploy.export.onnx_export import export_onnx, sample_inputs

    report = export_onnx(model, tmp_path / "int32.onnx", pyramid="external", output="labels",
                         labels_dtype="int32", verify_size=VERIFY_SIZE)
    assert report.parity.passed and report.contract.outputs[0].dtype == "int32"
    feeds, _ = sample_inputs(report.contract, (130, 98))
    (wide,) = _session(report.path).run(None, feeds)
    (narrow,) = _session(exports[("external", "float", "labels")].path).run(None, feeds)
    assert wide.dtype == np.int32
    np.testing.assert_array_equal(wide, narrow.astype(np.int32))


def test_official_checkpoint_exports(official_checkpoint, tmp_path):
    from isdnet_deploy.export.onnx_export import export_onnx
    from isdnet_deploy.model.checkpoint import file_sha256, load_model

    model = load_model(official_checkpoint)
    report = export_onnx(model, tmp_path / "official.onnx", input="uint8",
                         verify_size=VERIFY_SIZE)
    assert report.parity.passed
    assert report.contract.checkpoint_sha256 == file_sha256(official_checkpoint)
    assert report.contract.profile == "deepglobe" and report.contract.num_classes == 7


@pytest.mark.skipif(importlib.util.find_spec("isdnet_deploy.export.fast_pyramid") is None,
                    reason="fast pyramid not available")
def test_fast_and_official_pyramid_give_same_logits(model, exports, tmp_path):
    from isdnet_deploy.export.onnx_export import export_onnx, sample_inputs

    fast = exports[("graph", "float", "logits")]
    official = export_onnx(model, tmp_path / "official_pyramid.onnx", fast_pyramid=False,
                           verify_size=VERIFY_SIZE)
    assert official.parity.passed

    def op_counts(path: str) -> Counter:
        return Counter(n.op_type for n in onnx.load(path, load_external_data=False).graph.node)

    assert op_counts(fast.path) != op_counts(official.path)  # the fast form was traced
    fast_session, official_session = _session(fast.path), _session(official.path)
    for size in [(258, 202), (130, 98)]:
        feeds, _ = sample_inputs(fast.contract, size, seed=7)
        (a,) = fast_session.run(None, feeds)
        (b,) = official_session.run(None, feeds)
        # The pyramids agree to ~1e-6, but 30 float32 layers later the logits differ by up
        # to ~1e-4 at |logit| ~ 60, less than the official model's own float32-vs-float64
        # error; so the bound is the export's tolerance, not a bare 1e-5.
        tolerance = 1e-4 + 1e-5 * np.abs(b).max()
        assert np.abs(a - b).max() <= tolerance, size
        decided = _decided(b, 2 * tolerance)
        np.testing.assert_array_equal(a.argmax(1)[0][decided], b.argmax(1)[0][decided])


def test_export_leaves_reference_model_untouched(model, exports):
    """Verification compares against ``model``; swapping its pyramid would make the check
    compare the fast form with itself."""
    from isdnet_deploy.pyramid.torch_ops import LaplacianPyramid

    assert type(model.refine_head.lap_pyramid) is LaplacianPyramid


def test_failed_verification_writes_nothing(model, tmp_path):
    from isdnet_deploy.export.onnx_export import export_onnx

    with pytest.raises(IsdnetError, match="disagrees with the PyTorch reference"):
        export_onnx(model, tmp_path / "strict.onnx", pyramid="external", atol=0.0, rtol=0.0,
                    verify_size=VERIFY_SIZE)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("options, message", [
    ({"dynamic": True, "size": (128, 128)}, "give one of them"),
    ({"dynamic": False}, "static export needs"),
    ({"dynamic": False, "size": (16, 128)}, "below the minimum"),
    ({"pyramid": "inside"}, "unknown pyramid"),
    ({"exporter": "tflite"}, "unknown exporter"),
    ({"profile": "inria"}, "pick a matching --profile"),
])
def test_bad_options_raise_one_line(model, tmp_path, options, message):
    from isdnet_deploy.export.onnx_export import export_onnx

    with pytest.raises(IsdnetError, match=message) as info:
        export_onnx(model, tmp_path / "bad.onnx", **options)
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name, message", [
    ("blocker/m.onnx", "blocker is a file, not a folder"),
    ("m.pth", "should end with .onnx"),
])
def test_bad_output_path(model, tmp_path, name, message):
    from isdnet_deploy.export.onnx_export import export_onnx

    (tmp_path / "blocker").write_text("a file where a folder would go")
    with pytest.raises(IsdnetError, match=message):
        export_onnx(model, tmp_path / name)
    assert [p.name for p in tmp_path.iterdir()] == ["blocker"]


# --- The same graphs on a second, independent consumer -----------------------------------
# Every option level (pyramid, input, output, dynamic or --size, --simplify) appears at least
# once, and each file runs on ONNX Runtime and OpenVINO. The official-layout checkpoint keeps
# logits small (|max| ~0.6), so float32 noise (~1e-7) sits far below the tolerance (1e-4)
# and any difference in what a consumer computes from the graph shows: the int32 wrap-around
# of the earlier fast pyramid on OpenVINO was 0.057.
STATIC_SIZE = (258, 202)
PORTABLE = {
    "graph-float-logits": {},
    "graph-uint8-labels": {"input": "uint8", "output": "labels"},
    "external-float-logits": {"pyramid": "external"},
    "graph-uint8-logits-simplified": {"input": "uint8", "simplify": True},
    "graph-float-logits-static": {"dynamic": False, "size": STATIC_SIZE},
    "graph-float-logits-static-simplified": {"dynamic": False, "size": STATIC_SIZE,
                                             "simplify": True},
    "external-uint8-labels-static-simplified": {"pyramid": "external", "input": "uint8",
                                                "output": "labels", "dynamic": False,
                                                "size": STATIC_SIZE, "simplify": True},
}


@pytest.fixture(scope="module")
def official_model(official_checkpoint):
    from isdnet_deploy.model.checkpoint import load_model

    return load_model(official_checkpoint)


@pytest.fixture(scope="module")
def portable_exports(official_model, tmp_path_factory):
    from isdnet_deploy.export.onnx_export import export_onnx

    folder = tmp_path_factory.mktemp("portable")
    return {name: export_onnx(official_model, folder / f"{name}.onnx",
                              verify_size=VERIFY_SIZE if options.get("dynamic", True) else None,
                              **options)
            for name, options in PORTABLE.items()}


def _judge(consumer: str, report, model, size: tuple[int, int], seed: int = 1,
           precision: str = "f32") -> dict:
    """The export's own verdict (verify_onnx's tolerance and decided pixels) on ``consumer``."""
    import torch

    from isdnet_deploy.export.onnx_export import DEFAULT_RTOL, sample_inputs
    from isdnet_deploy.metrics.parity import decided_agreement

    feeds, normalised = sample_inputs(report.contract, size, seed)
    result = consumers.run(consumer, report.path, feeds, precision)
    with torch.no_grad():
        reference = model(torch.from_numpy(normalised)).numpy()
    tolerance = 1e-4 + DEFAULT_RTOL * float(np.abs(reference).max())
    logits = report.contract.output_kind == "logits"
    labels = result.argmax(axis=1)[0] if logits else result.astype(np.int64)
    decided, _ = decided_agreement(reference, labels, tolerance)
    return {"max_abs_diff": float(np.abs(result - reference).max()) if logits else None,
            "tolerance": tolerance, "decided": decided,
            "agreement": float((labels == reference.argmax(axis=1)[0]).mean())}


@pytest.mark.parametrize("consumer", consumers.CONSUMERS)
@pytest.mark.parametrize("name", PORTABLE)
def test_every_variant_computes_the_reference_on_every_consumer(official_model,
                                                                 portable_exports, name,
                                                                 consumer):
    report = portable_exports[name]
    assert report.parity.passed
    sizes = [STATIC_SIZE] if not report.contract.dynamic else \
        [(258, 202), (1002, 762)] if name == "graph-float-logits" else [(130, 98)]
    for size in sizes:
        verdict = _judge(consumer, report, official_model, size)
        assert verdict["decided"] == 1.0, (size, verdict)
        if verdict["max_abs_diff"] is not None:
            assert verdict["max_abs_diff"] <= verdict["tolerance"], (size, verdict)


@pytest.mark.slow
@pytest.mark.parametrize("consumer", consumers.CONSUMERS)
def test_paper_size_on_every_consumer(official_model, portable_exports, consumer):
    """1958x1958 (the paper's DeepGlobe test size) through the default dynamic export."""
    verdict = _judge(consumer, portable_exports["graph-float-logits"], official_model,
                     (1958, 1958))
    assert verdict["decided"] == 1.0, verdict
    assert verdict["max_abs_diff"] <= verdict["tolerance"], verdict


def test_simplified_static_graph_folds_the_index_arithmetic(portable_exports):
    """onnxslim folds a static graph's integer index arithmetic to constants (it used to
    fold the earlier float form wrongly); the folded graph is what was verified above."""
    proto = onnx.load(portable_exports["graph-float-logits-static-simplified"].path,
                      load_external_data=False)
    ops = Counter(node.op_type for node in proto.graph.node)
    assert not ops["Div"] and not ops["Mod"] and not ops["Range"], ops


@pytest.mark.parametrize("variant", [("graph", "float", "logits"), ("external", "uint8", "labels")],
                         ids=_id)
def test_random_weights_decide_the_same_pixels_on_openvino(model, exports, variant):
    """The random-weight model's logits reach ~40, so float32 noise itself approaches the
    tolerance (OpenVINO f32 measured at 0.6-1.01x of it, ONNX Runtime 0.5-0.7x): the
    decided pixels, those whose margin exceeds twice the tolerance, must still all agree."""
    verdict = _judge("openvino", exports[variant], model, (258, 202))
    assert verdict["decided"] == 1.0, verdict


def test_openvino_bf16_compiles_and_runs_the_default_export(model, exports):
    """bf16 where the CPU has it (AVX-512 BF16 or AMX); elsewhere OpenVINO runs f32. Either
    way the default dynamic export compiles and runs (it used to fail shape inference), and
    agreement is then a precision question: bf16 kept ~99 % on this model (issue 12)."""
    verdict = _judge("openvino", exports[("graph", "float", "logits")], model, (258, 202),
                     precision="bf16")
    assert verdict["agreement"] >= 0.95, verdict
