"""Engine building, checked against the stand-ins of ``trt_standins``.

TensorRT cannot be installed on the test machines, so ``build_engine`` is driven with
stand-ins that take their enum values and behaviours from TensorRT 10.16's and 11.1's
headers and bindings (``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` is 1 in 10.x and a
deprecated, ignored 0 in 11.x; ``BuilderFlag.FP16``/``INT8`` exist only in 10.x; a foreign
timing cache gives None; ``set_shape`` raises on inconsistent dims) and record every call;
the tests check the translation of options into those calls.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper
from trt_standins import GPU, TRT10, TRT11, FakeCuda, Severity, cudaError_t, fake_tensorrt

from isdnet_deploy.cli.build import build_command
from isdnet_deploy.contract import Contract, TensorSpec, embed_in_onnx, read_onnx_contract
from isdnet_deploy.engine import trt_compat
from isdnet_deploy.engine.build import (
    BuildReport,
    PrecisionPlan,
    _build_serialized,
    derive_profile_shapes,
    graph_precision,
    input_profiles,
    plan_precision,
)
from isdnet_deploy.engine.build import build_engine as _build_engine
from isdnet_deploy.errors import IsdnetError, MissingDependencyError
from isdnet_deploy.profiles import CITYSCAPES, DEEPGLOBE
from isdnet_deploy.runtime import tensorrt_support as support
from isdnet_deploy.runtime.engine_sidecar import (
    EngineSidecar,
    check_compatible,
    read_engine_bytes,
    read_sidecar,
    sha256_bytes,
    sidecar_path,
)


def calls(trt, name: str) -> list[tuple]:
    return [c for c in trt.calls if c[0] == name]


def build_engine(*args, trt_module=None, cudart_module=None, **kwargs) -> BuildReport:
    kwargs.setdefault("progress", False)
    cuda = cudart_module or (trt_module.cuda if trt_module is not None else FakeCuda())
    return _build_engine(*args, trt_module=trt_module or fake_tensorrt(TRT10, cuda),
                         cudart_module=cuda, **kwargs)


# --- small ONNX models with a contract -------------------------------------------------------

def contract_for(inputs: list[TensorSpec], profile: str | None = "deepglobe",
                 dynamic: bool = True, fixed: list[int] | None = None) -> Contract:
    dims = [1, 7, "height", "width"] if dynamic else [1, 7, *fixed]
    return Contract(inputs=inputs, outputs=[TensorSpec("logits", "float32", "NCHW", dims)],
                    profile=profile, dynamic=dynamic, fixed_size=fixed,
                    classes=[str(i) for i in range(7)], test_scale=0.8)


def tiny_onnx(path: Path, qdq: bool = False, contract: bool = True) -> Path:
    """image -> 1x1 conv -> 7 logits; ``qdq`` puts a Q/DQ pair on the input (INT8 graph)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=(7, 3, 1, 1)).astype(np.float32), "w")]
    nodes, x = [], "image"
    if qdq:
        inits += [numpy_helper.from_array(np.array(0.02, np.float32), "s"),
                  numpy_helper.from_array(np.array(0, np.int8), "z")]
        nodes += [helper.make_node("QuantizeLinear", ["image", "s", "z"], ["q"]),
                  helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"])]
        x = "dq"
    nodes.append(helper.make_node("Conv", [x, "w"], ["logits"], name="conv"))
    dims = [1, 3, "height", "width"]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("image", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 7, "height", "width"])],
        inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    if contract:
        embed_in_onnx(proto, contract_for([TensorSpec("image", "float32", "NCHW", dims)]))
    onnx.save(proto, str(path))
    return path


@pytest.fixture
def fp32_onnx(tmp_path) -> Path:
    return tiny_onnx(tmp_path / "model.onnx")


@pytest.fixture
def int8_onnx(tmp_path) -> Path:
    return tiny_onnx(tmp_path / "model.int8.onnx", qdq=True)


# --- profile shapes --------------------------------------------------------------------------

IMAGE = TensorSpec("image", "float32", "NCHW", [1, 3, "height", "width"])


def test_profile_defaults_follow_the_dataset_profile() -> None:
    shapes = derive_profile_shapes(contract_for([IMAGE]))
    assert shapes.opt == DEEPGLOBE.test_size == (1958, 1958)
    assert shapes.max == DEEPGLOBE.image_size == (2448, 2448)
    assert shapes.min == (979, 979)
    city = derive_profile_shapes(contract_for([IMAGE], profile="cityscapes"))
    assert city.opt == city.max == CITYSCAPES.test_size and city.min == (512, 1024)


def test_profile_overrides_and_their_checks() -> None:
    contract = contract_for([IMAGE])
    shapes = derive_profile_shapes(contract, size=(1024, 1024), min=(256, 256), max=(1500, 1500))
    assert (shapes.min, shapes.opt, shapes.max) == ((256, 256), (1024, 1024), (1500, 1500))
    assert derive_profile_shapes(contract, size=(512, 640)).min == (256, 320)
    with pytest.raises(IsdnetError, match="min <= opt <= max"):
        derive_profile_shapes(contract, size=(1024, 1024), min=(1100, 1100))
    with pytest.raises(IsdnetError, match="min <= opt <= max"):
        derive_profile_shapes(contract, size=(1024, 1024), max=(900, 2000))
    with pytest.raises(IsdnetError, match="below the model's minimum"):
        derive_profile_shapes(contract, size=(64, 64), min=(16, 16))
    with pytest.raises(IsdnetError, match="pass --opt"):
        derive_profile_shapes(contract_for([IMAGE], profile=None))
    assert derive_profile_shapes(contract_for([IMAGE], profile=None), size=(64, 96)).max == (
        64, 96)


def test_fixed_size_model_gets_a_single_shape() -> None:
    spec = TensorSpec("image", "float32", "NCHW", [1, 3, 512, 768])
    contract = contract_for([spec], dynamic=False, fixed=[512, 768])
    shapes = derive_profile_shapes(contract)
    assert shapes.min == shapes.opt == shapes.max == (512, 768)
    assert derive_profile_shapes(contract, size=(512, 768)).opt == (512, 768)
    with pytest.raises(IsdnetError, match="fixed input size 512x768"):
        derive_profile_shapes(contract, max=(1024, 1024))


def test_input_profiles_follow_each_inputs_layout() -> None:
    contract = contract_for([
        TensorSpec("image", "uint8", "NHWC", [1, "height", "width", 3]),
        TensorSpec("residual", "float32", "NCHW", [1, 6, "height", "width"])])
    shapes = derive_profile_shapes(contract, size=(128, 160))
    profiles = input_profiles(contract, shapes)
    assert profiles["image"] == {"min": [1, 64, 80, 3], "opt": [1, 128, 160, 3],
                                 "max": [1, 2448, 2448, 3]}
    assert profiles["residual"]["opt"] == [1, 6, 128, 160]


# --- precision plan ----------------------------------------------------------------------------

@pytest.mark.parametrize(("version", "onnx_precision", "fp16", "expected"), [
    # TensorRT 10.x: FP16 flag exists, strong typing is asked for with the creation flag.
    (TRT10, "fp32", False, (False, [], False, "fp32", False)),
    (TRT10, "fp32", True, (False, ["FP16"], False, "fp16", False)),
    (TRT10, "fp16", False, (True, [], False, "fp16", False)),
    (TRT10, "int8", False, (True, [], False, "int8", False)),
    (TRT10, "int8", True, (True, [], False, "int8", True)),
    # TensorRT 11.x: no precision flags, every network strongly typed; FP16 means
    # converting the graph.
    (TRT11, "fp32", False, (True, [], False, "fp32", False)),
    (TRT11, "fp32", True, (True, [], True, "fp16", False)),
    (TRT11, "fp16", True, (True, [], False, "fp16", False)),
    (TRT11, "int8", True, (True, [], False, "int8", True)),
])
def test_plan_precision(version, onnx_precision, fp16, expected) -> None:
    plan = plan_precision(fake_tensorrt(version), onnx_precision, fp16)
    assert (plan.strongly_typed, plan.flags, plan.convert_fp16, plan.precision,
            plan.fp16_ignored) == expected


@pytest.mark.parametrize(("version", "typed", "mask"), [
    (TRT10, True, 1 << 1), (TRT10, False, 0), (TRT11, True, 0), (TRT11, False, 0)])
def test_network_creation_flags_follow_each_versions_header(version, typed, mask) -> None:
    trt = fake_tensorrt(version)
    assert trt_compat.network_creation_flags(trt, typed) == mask
    # In 11.x bit 1 is PREFER_JIT_PYTHON_PLUGINS: the mask 10.x needs would ask for that.
    network = trt.Builder(support.tensorrt_logger(trt)).create_network(1 << 1)
    assert calls(trt, "create_network")[-1][2] == (
        ("STRONGLY_TYPED",) if version == TRT10 else ("PREFER_JIT_PYTHON_PLUGINS",))
    assert network.strongly_typed


def test_graph_precision_detects_explicit_precision(tmp_path, fp32_onnx, int8_onnx) -> None:
    from isdnet_deploy.engine.precision import convert_fp16

    assert graph_precision(onnx.load(str(fp32_onnx))) == "fp32"
    assert graph_precision(onnx.load(str(int8_onnx))) == "int8"
    convert_fp16(fp32_onnx, tmp_path / "half.onnx", size=(64, 64), num_verify=1,
                 progress=False)
    assert graph_precision(onnx.load(str(tmp_path / "half.onnx"))) == "fp16"


# --- build_engine against the stand-in -------------------------------------------------------

def test_tensorrt10_fp16_sets_the_builder_flag(fp32_onnx, tmp_path) -> None:
    trt = fake_tensorrt(TRT10)
    engine = tmp_path / "m.engine"
    report = build_engine(fp32_onnx, engine, opt_shape=(256, 256), fp16=True, workspace_mib=512,
                          opt_level=5, trt_module=trt)
    assert calls(trt, "create_network") == [("create_network", 0, ())]
    assert calls(trt, "set_flag") == [("set_flag", "FP16")]
    assert calls(trt, "set_memory_pool_limit") == [("set_memory_pool_limit", "WORKSPACE",
                                                    512 << 20)]
    assert calls(trt, "builder_optimization_level") == [("builder_optimization_level", 5)]
    assert calls(trt, "set_shape") == [("set_shape", "image", [1, 3, 128, 128],
                                        [1, 3, 256, 256], [1, 3, 2448, 2448])]
    assert calls(trt, "parse_from_file") == [("parse_from_file", str(fp32_onnx), "fp32")]
    assert engine.read_bytes() == b"FAKE-ENGINE " + TRT10.encode()
    assert isinstance(report, BuildReport)
    assert report.precision == "fp16" and not report.strongly_typed and report.notes == []
    assert report.sidecar == str(sidecar_path(engine)) and report.engine == str(engine)
    assert report.engine_bytes == len(engine.read_bytes())


def test_tensorrt11_fp16_converts_the_graph_and_builds_strongly_typed(fp32_onnx,
                                                                      tmp_path) -> None:
    trt = fake_tensorrt(TRT11)
    report = build_engine(fp32_onnx, tmp_path / "m.engine", opt_shape=(64, 64), fp16=True,
                          trt_module=trt)
    assert calls(trt, "set_flag") == []
    assert calls(trt, "create_network") == [("create_network", 0, ())]
    (built,) = calls(trt, "build_serialized_network")
    assert built[2] is True  # strongly typed: 11.x networks always are
    (parsed,) = calls(trt, "parse_from_file")
    assert parsed[1] != str(fp32_onnx) and parsed[2] == "fp16"
    assert report.converted_to_fp16 and report.precision == "fp16"
    assert "converted to FP16" in report.notes[0]
    assert not list(tmp_path.glob("*.tmp*"))


@pytest.mark.parametrize(("version", "mask", "names"), [
    (TRT10, 1 << 1, ("STRONGLY_TYPED",)), (TRT11, 0, ())])
def test_int8_graph_is_built_strongly_typed_without_flags(int8_onnx, tmp_path, version, mask,
                                                          names) -> None:
    trt = fake_tensorrt(version)
    report = build_engine(int8_onnx, tmp_path / "q.engine", opt_shape=(64, 64), trt_module=trt)
    assert calls(trt, "create_network") == [("create_network", mask, names)]
    assert calls(trt, "set_flag") == []
    assert calls(trt, "build_serialized_network")[0][2:] == (True, ())
    assert report.precision == "int8" and report.strongly_typed and not report.fp16_ignored


@pytest.mark.parametrize("version", [TRT10, TRT11])
def test_fp16_on_an_int8_graph_is_said_to_be_ignored(int8_onnx, tmp_path, caplog,
                                                     version) -> None:
    trt = fake_tensorrt(version)
    engine = tmp_path / "q.engine"
    with caplog.at_level(logging.WARNING, logger="isdnet_deploy"):
        report = build_engine(int8_onnx, engine, opt_shape=(64, 64), fp16=True, trt_module=trt)
    assert calls(trt, "set_flag") == [] and report.precision == "int8"
    assert report.fp16_ignored and "--fp16 is ignored" in report.notes[0]
    assert "--fp16 is ignored: model.int8.onnx is an INT8 (Q/DQ) graph" in caplog.text
    assert read_sidecar(engine).build["fp16_ignored"] is True


def test_fp32_build_sets_nothing(fp32_onnx, tmp_path) -> None:
    trt = fake_tensorrt(TRT11)
    build_engine(fp32_onnx, tmp_path / "m.engine", opt_shape=(64, 64), opt_level=None,
                 trt_module=trt)
    assert calls(trt, "create_network") == [("create_network", 0, ())]
    assert not calls(trt, "set_flag") and not calls(trt, "builder_optimization_level")


def test_inconsistent_profile_dims_are_one_line(fp32_onnx) -> None:
    trt = fake_tensorrt(TRT10)
    profiles = {"image": {"min": [1, 3, 64], "opt": [1, 3, 64, 64], "max": [1, 3, 96, 96]}}
    with pytest.raises(IsdnetError, match=r"refused the optimization profile of input 'image' "
                                          r".*Shape provided for opt is inconsistent with "
                                          r"other shapes\.; check --min"):
        _build_serialized(trt, fp32_onnx, PrecisionPlan(False), profiles, 64, None, None,
                          False)
    with pytest.raises(RuntimeError, match="Shape provided for max"):  # what TensorRT raises
        trt.Builder(support.tensorrt_logger(trt)).create_optimization_profile().set_shape(
            "image", [1, 3, 8, 8], [1, 3, 16, 16], [1, 3, 12, 16])


# --- timing cache --------------------------------------------------------------------------------

def test_timing_cache_is_loaded_and_saved(fp32_onnx, tmp_path) -> None:
    cache = tmp_path / "timing.cache"
    trt = fake_tensorrt(TRT10)
    build_engine(fp32_onnx, tmp_path / "a.engine", opt_shape=(64, 64), timing_cache=cache,
                 trt_module=trt)
    assert calls(trt, "create_timing_cache") == [("create_timing_cache", b"")]
    first = cache.read_bytes()
    assert first == f"TRTCACHE/{TRT10}/{GPU}/tactics;".encode()
    trt = fake_tensorrt(TRT10)
    report = build_engine(fp32_onnx, tmp_path / "b.engine", opt_shape=(64, 64),
                          timing_cache=cache, trt_module=trt)
    assert calls(trt, "create_timing_cache") == [("create_timing_cache", first)]
    assert calls(trt, "set_timing_cache") == [("set_timing_cache", GPU, b"tactics;", False)]
    assert cache.read_bytes() == first + b"tactics;" and report.notes == []


@pytest.mark.parametrize(("written_by", "gpus"), [
    (TRT11, ((GPU, (9, 0)),)),  # another TensorRT: create_timing_cache gives None
    (TRT10, (("NVIDIA L4", (8, 9)),)),  # another GPU: set_timing_cache returns False
])
def test_unusable_timing_cache_falls_back_to_an_empty_one(fp32_onnx, tmp_path, caplog,
                                                          written_by, gpus) -> None:
    cache = tmp_path / "timing.cache"
    build_engine(fp32_onnx, tmp_path / "a.engine", opt_shape=(64, 64), timing_cache=cache,
                 trt_module=fake_tensorrt(written_by, FakeCuda(gpus)))
    foreign = cache.read_bytes()
    trt = fake_tensorrt(TRT10)
    config = trt.Builder(support.tensorrt_logger(trt)).create_builder_config()
    if written_by == TRT11:
        assert config.create_timing_cache(foreign) is None
    else:
        assert not config.set_timing_cache(config.create_timing_cache(foreign), False)
    trt.calls.clear()
    with caplog.at_level(logging.WARNING, logger="isdnet_deploy"):
        report = build_engine(fp32_onnx, tmp_path / "b.engine", opt_shape=(64, 64),
                              timing_cache=cache, trt_module=trt)
    assert [c[1] for c in calls(trt, "create_timing_cache")][-1] == b""
    assert "is from another TensorRT version or GPU; started an empty one" in caplog.text
    assert "started an empty one" in report.notes[0]
    assert cache.read_bytes() == f"TRTCACHE/{TRT10}/{GPU}/tactics;".encode()


def test_the_stand_in_refuses_a_none_timing_cache_as_tensorrt_does() -> None:
    trt = fake_tensorrt(TRT10)
    config = trt.Builder(support.tensorrt_logger(trt)).create_builder_config()
    with pytest.raises(TypeError, match="incompatible function arguments"):
        config.set_timing_cache(None, False)


# --- devices, progress, files --------------------------------------------------------------------

def test_build_uses_the_requested_gpu_and_records_it(fp32_onnx, tmp_path) -> None:
    cuda = FakeCuda(gpus=((GPU, (9, 0)), ("NVIDIA A100", (8, 0))))
    trt = fake_tensorrt(TRT10, cuda)
    engine = tmp_path / "m.engine"
    report = build_engine(fp32_onnx, engine, opt_shape=(64, 64), device="cuda:1",
                          trt_module=trt)
    assert calls(trt, "Builder") == [("Builder", 1)]
    assert calls(trt, "build_serialized_network")[0][1] == 1
    assert (report.gpu.index, report.gpu.name, report.gpu.compute_capability) == (
        1, "NVIDIA A100", "8.0")
    side = read_sidecar(engine)
    assert (side.gpu_name, side.compute_capability, side.build["device_index"]) == (
        "NVIDIA A100", "8.0", 1)
    with pytest.raises(IsdnetError, match="cuda:2 does not exist"):
        build_engine(fp32_onnx, engine, opt_shape=(64, 64), device="cuda:2", trt_module=trt)
    with pytest.raises(IsdnetError, match="cannot run a TensorRT engine"):
        build_engine(fp32_onnx, engine, opt_shape=(64, 64), device="cpu", trt_module=trt)


def test_progress_monitor_is_attached_when_asked(fp32_onnx, tmp_path) -> None:
    trt = fake_tensorrt(TRT10)
    _build_engine(fp32_onnx, tmp_path / "a.engine", opt_shape=(64, 64), trt_module=trt,
                  cudart_module=trt.cuda, progress=True)
    assert calls(trt, "progress_monitor") == [("progress_monitor", "_Monitor")]


def test_sidecar_records_the_build(fp32_onnx, tmp_path) -> None:
    engine = tmp_path / "m.engine"
    build_engine(fp32_onnx, engine, opt_shape=(256, 256), workspace_mib=1024,
                 trt_module=fake_tensorrt(TRT10, FakeCuda((("NVIDIA A100", (8, 0)),))))
    side = read_sidecar(engine)
    assert (side.tensorrt_version, side.gpu_name, side.compute_capability) == (
        TRT10, "NVIDIA A100", "8.0")
    assert side.profile["opt"] == [256, 256] and side.profile["max"] == [2448, 2448]
    assert side.profile["inputs"]["image"]["min"] == [1, 3, 128, 128]
    assert side.build["workspace_mib"] == 1024 and side.build["onnx"] == str(fp32_onnx)
    assert side.contract.precision == "fp32" and side.contract.classes == list("0123456")
    assert side.engine_sha256 == sha256_bytes(engine.read_bytes())
    assert read_engine_bytes(engine, side) == engine.read_bytes()


def test_parse_failure_is_one_line_and_writes_nothing(fp32_onnx, tmp_path) -> None:
    engine = tmp_path / "m.engine"
    with pytest.raises(IsdnetError, match=r"cannot parse .*fake refusal"):
        build_engine(fp32_onnx, engine, opt_shape=(64, 64),
                     trt_module=fake_tensorrt(TRT10, parse_ok=False))
    assert not engine.exists() and not sidecar_path(engine).exists()


def test_failed_build_writes_nothing(fp32_onnx, tmp_path) -> None:
    engine = tmp_path / "m.engine"
    with pytest.raises(IsdnetError, match="could not build"):
        build_engine(fp32_onnx, engine, opt_shape=(64, 64),
                     trt_module=fake_tensorrt(TRT10, build_ok=False))
    assert list(tmp_path.iterdir()) == [fp32_onnx]


def test_onnx_without_contract_is_refused(tmp_path) -> None:
    foreign = tiny_onnx(tmp_path / "foreign.onnx", contract=False)
    with pytest.raises(IsdnetError, match="no isdnet-deploy contract"):
        build_engine(foreign, tmp_path / "m.engine")


def test_labels_resized_in_the_graph_are_refused_with_the_export_option(tmp_path) -> None:
    from dataclasses import replace

    path = tiny_onnx(tmp_path / "labels.onnx")
    proto = onnx.load(path)
    contract = replace(read_onnx_contract(proto), output_kind="labels", output_resize="graph")
    embed_in_onnx(proto, contract)
    onnx.save(proto, path)
    with pytest.raises(IsdnetError, match="export it with --output-resize none"):
        build_engine(path, tmp_path / "labels.engine")
    assert not (tmp_path / "labels.engine").exists()


def test_bad_options_are_refused(fp32_onnx, tmp_path) -> None:
    with pytest.raises(IsdnetError, match="workspace"):
        build_engine(fp32_onnx, tmp_path / "m.engine", workspace_mib=0)
    with pytest.raises(IsdnetError, match="is a directory"):
        build_engine(fp32_onnx, tmp_path, opt_shape=(64, 64))
    with pytest.raises(IsdnetError, match="log level 'loud'"):
        build_engine(fp32_onnx, tmp_path / "m.engine", opt_shape=(64, 64), log_level="loud")


# --- missing pieces ------------------------------------------------------------------------------

def test_missing_tensorrt_names_the_extra(fp32_onnx, tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(MissingDependencyError, match=r"isdnet-deploy\[tensorrt\]"):
        _build_engine(fp32_onnx, tmp_path / "m.engine", opt_shape=(64, 64))


def test_missing_cuda_python_names_the_extra(fp32_onnx, tmp_path, monkeypatch) -> None:
    for name in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(MissingDependencyError, match=r"cuda-python .*isdnet-deploy\[tensorrt\]"):
        _build_engine(fp32_onnx, tmp_path / "m.engine", opt_shape=(64, 64),
                      trt_module=fake_tensorrt(TRT10))


@pytest.mark.parametrize("error", [cudaError_t.cudaErrorNoDevice,
                                   cudaError_t.cudaErrorInsufficientDriver])
def test_missing_gpu_is_a_clear_error(fp32_onnx, tmp_path, error) -> None:
    with pytest.raises(MissingDependencyError, match=f"no CUDA GPU is visible \\({error.name}"):
        build_engine(fp32_onnx, tmp_path / "m.engine", opt_shape=(64, 64),
                     cudart_module=FakeCuda(gpus=(), no_device=error))


def test_real_cuda_python_without_gpu_reports_no_gpu() -> None:
    try:
        cudart = support.import_cudart()
    except MissingDependencyError:
        pytest.skip("cuda-python is not installed")
    err, count = cudart.cudaGetDeviceCount()
    if int(err) == 0 and count > 0:
        pytest.skip("a CUDA GPU is present")
    with pytest.raises(MissingDependencyError, match="no CUDA GPU"):
        support.gpu_info(cudart, 0)


# --- logger and CLI ----------------------------------------------------------------------------

def test_one_logger_per_tensorrt_module_with_a_process_level(caplog) -> None:
    trt = fake_tensorrt(TRT10)
    logger = support.tensorrt_logger(trt)
    assert support.tensorrt_logger(trt) is logger
    assert support.tensorrt_logger(fake_tensorrt(TRT10)) is not logger
    try:
        support.set_log_level("info")
        with caplog.at_level(logging.DEBUG, logger="isdnet_deploy.tensorrt"):
            logger.log(Severity.ERROR, "bad thing")
            logger.log(Severity.INFO, "note")
            logger.log(Severity.VERBOSE, "chatter")
            support.set_log_level("error")
            logger.log(Severity.WARNING, "hidden now")
    finally:
        support.set_log_level("warning")
    levels = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert levels == [(logging.ERROR, "TensorRT: bad thing"), (logging.INFO, "TensorRT: note")]
    with pytest.raises(IsdnetError, match="log level"):
        support.set_log_level("loud")


def test_build_then_open_uses_the_same_logger(fp32_onnx, tmp_path) -> None:
    from isdnet_deploy.runtime.tensorrt_backend import TensorRTBackend

    trt = fake_tensorrt(TRT10)
    engine = tmp_path / "m.engine"
    build_engine(fp32_onnx, engine, opt_shape=(64, 64), min_shape=(64, 64), max_shape=(256, 256),
                 trt_module=trt)
    with TensorRTBackend(engine, trt_module=trt, cudart_module=trt.cuda):
        pass
    assert calls(trt, "logger ignored") == [] and calls(trt, "Runtime")


def test_progress_monitor_survives_a_build_sequence() -> None:
    monitor = trt_compat.make_progress_monitor(fake_tensorrt(TRT10))
    monitor.phase_start("Building", None, 3)
    monitor.phase_start("Tactics", "Building", 2)
    assert monitor.step_complete("Tactics", 0) and monitor.step_complete("Tactics", 1)
    monitor.phase_finish("Tactics")
    monitor.step_complete("Building", 2)
    monitor.phase_finish("Building")
    assert monitor._bars == {}


def test_cli_build_with_the_stand_in(fp32_onnx, tmp_path, monkeypatch) -> None:
    cuda = FakeCuda(gpus=((GPU, (9, 0)), ("NVIDIA A100", (8, 0))))
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(TRT10, cuda))
    monkeypatch.setattr(support, "import_cudart", lambda: cuda)
    result = CliRunner().invoke(build_command, [
        str(fp32_onnx), "--opt", "256x256", "--min", "128x128", "--max", "512x512", "--fp16",
        "--workspace", "256", "--timing-cache", str(tmp_path / "t.cache"), "--no-progress",
        "--device", "cuda:1"])
    assert result.exit_code == 0, result.output
    assert "fp16" in result.output and "min 128x128 / opt 256x256 / max 512x512" in result.output
    assert "cuda:1 NVIDIA A100 (compute 8.0)" in result.output
    assert (tmp_path / "model.engine").is_file() and (tmp_path / "t.cache").is_file()


def test_cli_build_says_when_fp16_is_ignored(int8_onnx, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(TRT11))
    monkeypatch.setattr(support, "import_cudart", FakeCuda)
    result = CliRunner().invoke(build_command, [str(int8_onnx), "--opt", "64x64", "--fp16",
                                                "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "int8 (strongly typed), --fp16 ignored" in result.output


def test_cli_build_without_tensorrt_raises_missing_dependency(fp32_onnx, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    result = CliRunner().invoke(build_command, [str(fp32_onnx), "--opt", "64x64"])
    assert isinstance(result.exception, MissingDependencyError)


# --- sidecar -------------------------------------------------------------------------------------

def make_sidecar(**changes) -> EngineSidecar:
    fields = dict(contract=contract_for([IMAGE]), tensorrt_version="10.9.0",
                  gpu_name="NVIDIA H100", compute_capability="9.0",
                  profile={"min": [64, 64], "opt": [128, 128], "max": [256, 256]},
                  build={"onnx": "model.onnx"}, engine_bytes=4, engine_sha256=sha256_bytes(b"abcd"))
    fields.update(changes)
    return EngineSidecar(**fields)


def test_sidecar_round_trip() -> None:
    side = make_sidecar()
    again = EngineSidecar.from_json(side.to_json())
    assert again == side and again.contract.inputs[0] == IMAGE


def test_sidecar_refuses_other_tensorrt_or_gpu() -> None:
    side = make_sidecar()
    same = support.GpuInfo(0, "NVIDIA H100", "9.0")
    check_compatible(side, "m.engine", "10.9.0", same)
    with pytest.raises(IsdnetError, match=r"TensorRT 10\.9\.0, this machine has TensorRT "
                                          r"10\.10\.0; rebuild it here with: isdnet-deploy "
                                          r"build model\.onnx -o m\.engine"):
        check_compatible(side, "m.engine", "10.10.0", same)
    with pytest.raises(IsdnetError, match=r"built for NVIDIA H100 .* this GPU is NVIDIA L4"):
        check_compatible(side, "m.engine", "10.9.0", support.GpuInfo(0, "NVIDIA L4", "8.9"))


def test_sidecar_missing_or_malformed(tmp_path) -> None:
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"abcd")
    with pytest.raises(IsdnetError, match=r"missing.*isdnet-deploy build"):
        read_sidecar(engine)
    sidecar_path(engine).write_text("{not json")
    with pytest.raises(IsdnetError, match="not valid JSON"):
        read_sidecar(engine)
    sidecar_path(engine).write_text('{"format": "something-else"}')
    with pytest.raises(IsdnetError, match="format 'something-else'"):
        read_sidecar(engine)
    text = make_sidecar().to_json().replace('"engine_sha256"', '"renamed"')
    sidecar_path(engine).write_text(text)
    with pytest.raises(IsdnetError, match="malformed"):
        read_sidecar(engine)


def test_engine_bytes_must_match_the_sidecar(tmp_path) -> None:
    engine = tmp_path / "m.engine"
    side = make_sidecar()
    engine.write_bytes(b"ab")
    with pytest.raises(IsdnetError, match="has 2 bytes but its sidecar records 4"):
        read_engine_bytes(engine, side)
    engine.write_bytes(b"abce")
    with pytest.raises(IsdnetError, match="checksum"):
        read_engine_bytes(engine, side)
    engine.write_bytes(b"abcd")
    assert read_engine_bytes(engine, side) == b"abcd"
    with pytest.raises(IsdnetError, match="does not exist"):
        read_engine_bytes(tmp_path / "absent.engine", side)
