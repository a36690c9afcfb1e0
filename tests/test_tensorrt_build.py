"""Engine building, checked against a recording stand-in for the TensorRT Python API.

TensorRT cannot be installed on the test machines, so ``build_engine`` is driven with a
test double that has the documented attribute set of TensorRT 10.x (``BuilderFlag.FP16`` /
``INT8`` present, ``STRONGLY_TYPED`` creation flag) or 11.x (precision flags gone) and
records every call; the tests check the translation of options into those calls.
"""

from __future__ import annotations

import enum
import logging
import sys
import types
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from isdnet_deploy.cli.build import build_command
from isdnet_deploy.contract import Contract, TensorSpec, embed_in_onnx
from isdnet_deploy.engine import trt_compat
from isdnet_deploy.engine.build import build_engine as _build_engine
from isdnet_deploy.engine.build import (
    derive_profile_shapes,
    graph_precision,
    input_profiles,
    plan_precision,
)
from isdnet_deploy.engine.sidecar import (
    EngineSidecar,
    check_compatible,
    read_engine_bytes,
    read_sidecar,
    sha256_bytes,
    sidecar_path,
)
from isdnet_deploy.errors import IsdnetError, MissingDependencyError
from isdnet_deploy.profiles import CITYSCAPES, DEEPGLOBE

# --- the recording stand-in ------------------------------------------------------------------


class Severity(enum.Enum):
    INTERNAL_ERROR = 0
    ERROR = 1
    WARNING = 2
    INFO = 3
    VERBOSE = 4


def fake_tensorrt(version: str = "10.9.0", weak_flags: bool = True,
                  strongly_typed: bool = True, parse_ok: bool = True,
                  build_ok: bool = True) -> types.ModuleType:
    """A module shaped like ``tensorrt`` 10.x (weak_flags) or 11.x (not), recording calls."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.calls = []
    record = trt.calls.append

    class ILogger:
        Severity = Severity

        def __init__(self) -> None:
            record(("ILogger.__init__",))

    class IProgressMonitor:
        def __init__(self) -> None:
            record(("IProgressMonitor.__init__",))

    flags = {"TF32": "TF32", "REFIT": "REFIT"}
    if weak_flags:
        flags.update(FP16="FP16", INT8="INT8", BF16="BF16")
    trt.BuilderFlag = types.SimpleNamespace(**flags)
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(
        **({"STRONGLY_TYPED": 1} if strongly_typed else {}))
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
    trt.ILogger, trt.IProgressMonitor = ILogger, IProgressMonitor

    class TimingCache:
        def __init__(self, data: bytes) -> None:
            self.data = data

        def serialize(self) -> bytearray:
            return bytearray(b"CACHE:" + self.data)

    class Network:
        def __init__(self) -> None:
            self.inputs: list[str] = []

        @property
        def num_inputs(self) -> int:
            return len(self.inputs)

        def get_input(self, i: int) -> types.SimpleNamespace:
            return types.SimpleNamespace(name=self.inputs[i])

    class Config:
        def __init__(self) -> None:
            self.cache = None

        def set_memory_pool_limit(self, pool, size) -> None:
            record(("set_memory_pool_limit", pool, size))

        @property
        def builder_optimization_level(self) -> int:
            return 3

        @builder_optimization_level.setter
        def builder_optimization_level(self, level: int) -> None:
            record(("builder_optimization_level", level))

        def set_flag(self, flag) -> None:
            record(("set_flag", flag))

        def add_optimization_profile(self, profile) -> int:
            record(("add_optimization_profile", profile.shapes))
            return 0

        def create_timing_cache(self, data: bytes) -> TimingCache:
            record(("create_timing_cache", bytes(data)))
            return TimingCache(bytes(data))

        def set_timing_cache(self, cache, ignore_mismatch: bool) -> bool:
            record(("set_timing_cache", cache.data, ignore_mismatch))
            self.cache = cache
            return cache.data != b"stale"

        def get_timing_cache(self) -> TimingCache:
            return self.cache

        def __setattr__(self, name, value) -> None:
            if name == "progress_monitor":
                record(("progress_monitor", type(value).__name__))
            object.__setattr__(self, name, value)

    class Profile:
        def __init__(self) -> None:
            self.shapes = {}

        def set_shape(self, name, low, opt, high) -> None:
            record(("set_shape", name, list(low), list(opt), list(high)))
            self.shapes[name] = (list(low), list(opt), list(high))

    class Builder:
        def __init__(self, logger) -> None:
            record(("Builder", type(logger).__mro__[1].__name__))

        def create_network(self, flags: int = 0) -> Network:
            record(("create_network", flags))
            return Network()

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network, config):
            record(("build_serialized_network",))
            return bytearray(b"FAKE-ENGINE " + trt.__version__.encode()) if build_ok else None

    class OnnxParser:
        def __init__(self, network, logger) -> None:
            self.network = network
            self.num_errors = 0 if parse_ok else 1

        def parse_from_file(self, path: str) -> bool:
            model = onnx.load(path)
            record(("parse_from_file", path, graph_precision(model)))
            self.network.inputs = [i.name for i in model.graph.input]
            return parse_ok

        def get_error(self, i: int) -> str:
            return "In node 0 (importConv): UNSUPPORTED_NODE: fake refusal"

    trt.Builder, trt.OnnxParser = Builder, OnnxParser
    return trt


def fake_cudart(count: int = 1, name: str = "NVIDIA Fake H100",
                capability: tuple[int, int] = (9, 0)) -> types.ModuleType:
    cudart = types.ModuleType("cuda.bindings.runtime")
    cudart.cudaGetDeviceCount = lambda: (0, count) if count >= 0 else (35, 0)
    cudart.cudaGetDeviceProperties = lambda index: (0, types.SimpleNamespace(
        name=name.encode() + b"\0\0", major=capability[0], minor=capability[1]))
    return cudart


def calls(trt, name: str) -> list[tuple]:
    return [c for c in trt.calls if c[0] == name]


def build_engine(*args, trt_module=None, cudart_module=None, **kwargs):
    kwargs.setdefault("progress", False)
    return _build_engine(*args, trt_module=trt_module or fake_tensorrt(),
                         cudart_module=cudart_module or fake_cudart(), **kwargs)


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

@pytest.mark.parametrize(("weak", "typed", "onnx_precision", "fp16", "expected"), [
    # TensorRT 10.x: flags exist, strong typing exists.
    (True, True, "fp32", False, (False, [], False, "fp32")),
    (True, True, "fp32", True, (False, ["FP16"], False, "fp16")),
    (True, True, "fp16", False, (True, [], False, "fp16")),
    (True, True, "int8", True, (True, [], False, "int8")),
    # An older 10.x without strong typing: Q/DQ and FP16 graphs need the weak flags.
    (True, False, "int8", False, (False, ["INT8"], False, "int8")),
    (True, False, "fp16", False, (False, ["FP16"], False, "fp16")),
    # TensorRT 11.x: no precision flags; FP16 means converting the graph.
    (False, True, "fp32", False, (False, [], False, "fp32")),
    (False, True, "fp32", True, (True, [], True, "fp16")),
    (False, True, "int8", False, (True, [], False, "int8")),
    # A TensorRT with neither (strong typing implicit, creation flag dropped).
    (False, False, "int8", False, (True, [], False, "int8")),
    (False, False, "fp32", True, (True, [], True, "fp16")),
])
def test_plan_precision(weak, typed, onnx_precision, fp16, expected) -> None:
    plan = plan_precision(fake_tensorrt(weak_flags=weak, strongly_typed=typed),
                          onnx_precision, fp16)
    assert (plan.strongly_typed, plan.flags, plan.convert_fp16, plan.precision) == expected


def test_plan_with_int8_graph_but_no_int8_flag_is_an_error() -> None:
    trt = fake_tensorrt(strongly_typed=False)
    del trt.BuilderFlag.INT8
    with pytest.raises(IsdnetError, match="lacks the INT8 builder flag"):
        plan_precision(trt, "int8", False)


def test_implicitly_strongly_typed_tensorrt_gets_no_creation_flag(int8_onnx, tmp_path) -> None:
    trt = fake_tensorrt("11.9.0", weak_flags=False, strongly_typed=False)
    result = build_engine(int8_onnx, tmp_path / "q.engine", opt_shape=(64, 64), trt_module=trt)
    assert calls(trt, "create_network") == [("create_network", 0)]
    assert result["strongly_typed"] and not calls(trt, "set_flag")


def test_graph_precision_detects_explicit_precision(tmp_path, fp32_onnx, int8_onnx) -> None:
    from isdnet_deploy.engine.precision import convert_fp16

    assert graph_precision(onnx.load(str(fp32_onnx))) == "fp32"
    assert graph_precision(onnx.load(str(int8_onnx))) == "int8"
    convert_fp16(fp32_onnx, tmp_path / "half.onnx", size=(64, 64), num_verify=1,
                 progress=False)
    assert graph_precision(onnx.load(str(tmp_path / "half.onnx"))) == "fp16"


# --- build_engine against the stand-in -------------------------------------------------------

def test_tensorrt10_fp16_sets_the_builder_flag(fp32_onnx, tmp_path) -> None:
    trt = fake_tensorrt("10.9.0")
    engine = tmp_path / "m.engine"
    result = build_engine(fp32_onnx, engine, opt_shape=(256, 256), fp16=True, workspace_mib=512,
                          opt_level=5, trt_module=trt)
    assert calls(trt, "create_network") == [("create_network", 0)]
    assert calls(trt, "set_flag") == [("set_flag", "FP16")]
    assert calls(trt, "set_memory_pool_limit") == [("set_memory_pool_limit", "WORKSPACE",
                                                    512 << 20)]
    assert calls(trt, "builder_optimization_level") == [("builder_optimization_level", 5)]
    assert calls(trt, "set_shape") == [("set_shape", "image", [1, 3, 128, 128],
                                        [1, 3, 256, 256], [1, 3, 2448, 2448])]
    assert calls(trt, "parse_from_file") == [("parse_from_file", str(fp32_onnx), "fp32")]
    assert engine.read_bytes() == b"FAKE-ENGINE 10.9.0"
    assert result["precision"] == "fp16" and not result["strongly_typed"]
    assert result["sidecar"] == str(sidecar_path(engine))


def test_tensorrt11_fp16_converts_the_graph_and_builds_strongly_typed(fp32_onnx,
                                                                      tmp_path) -> None:
    trt = fake_tensorrt("11.4.0", weak_flags=False)
    result = build_engine(fp32_onnx, tmp_path / "m.engine", opt_shape=(64, 64), fp16=True,
                          trt_module=trt)
    assert calls(trt, "set_flag") == []
    assert calls(trt, "create_network") == [("create_network", 1 << 1)]
    (parsed,) = calls(trt, "parse_from_file")
    assert parsed[1] != str(fp32_onnx) and parsed[2] == "fp16"
    assert result["converted_to_fp16"] and result["precision"] == "fp16"
    assert not list(tmp_path.glob("*.tmp*"))


@pytest.mark.parametrize("version,weak", [("10.9.0", True), ("11.4.0", False)])
def test_int8_graph_is_built_strongly_typed_without_flags(int8_onnx, tmp_path, version,
                                                          weak) -> None:
    trt = fake_tensorrt(version, weak_flags=weak)
    result = build_engine(int8_onnx, tmp_path / "q.engine", opt_shape=(64, 64), fp16=True,
                          trt_module=trt)
    assert calls(trt, "create_network") == [("create_network", 1 << 1)]
    assert calls(trt, "set_flag") == []
    assert result["precision"] == "int8" and result["strongly_typed"]


def test_fp32_build_sets_nothing(fp32_onnx, tmp_path) -> None:
    trt = fake_tensorrt("11.4.0", weak_flags=False)
    build_engine(fp32_onnx, tmp_path / "m.engine", opt_shape=(64, 64), opt_level=None,
                 trt_module=trt)
    assert calls(trt, "create_network") == [("create_network", 0)]
    assert not calls(trt, "set_flag") and not calls(trt, "builder_optimization_level")


def test_timing_cache_is_loaded_and_saved(fp32_onnx, tmp_path) -> None:
    cache = tmp_path / "timing.cache"
    trt = fake_tensorrt()
    build_engine(fp32_onnx, tmp_path / "a.engine", opt_shape=(64, 64), timing_cache=cache,
                 trt_module=trt)
    assert calls(trt, "create_timing_cache") == [("create_timing_cache", b"")]
    assert cache.read_bytes() == b"CACHE:"
    trt = fake_tensorrt()
    build_engine(fp32_onnx, tmp_path / "b.engine", opt_shape=(64, 64), timing_cache=cache,
                 trt_module=trt)
    assert calls(trt, "create_timing_cache") == [("create_timing_cache", b"CACHE:")]
    assert calls(trt, "set_timing_cache") == [("set_timing_cache", b"CACHE:", False)]
    assert cache.read_bytes() == b"CACHE:CACHE:"


def test_stale_timing_cache_is_replaced(fp32_onnx, tmp_path, caplog) -> None:
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"stale")
    trt = fake_tensorrt()
    with caplog.at_level(logging.WARNING, logger="isdnet_deploy"):
        build_engine(fp32_onnx, tmp_path / "a.engine", opt_shape=(64, 64), timing_cache=cache,
                     trt_module=trt)
    assert [c[1] for c in calls(trt, "create_timing_cache")] == [b"stale", b""]
    assert "another TensorRT or GPU" in caplog.text
    assert cache.read_bytes() == b"CACHE:"


def test_progress_monitor_is_attached_when_asked(fp32_onnx, tmp_path) -> None:
    trt = fake_tensorrt()
    _build_engine(fp32_onnx, tmp_path / "a.engine", opt_shape=(64, 64), trt_module=trt,
                  cudart_module=fake_cudart(), progress=True)
    assert calls(trt, "progress_monitor") == [("progress_monitor", "_Monitor")]
    assert ("Builder", "ILogger") in trt.calls


def test_sidecar_records_the_build(fp32_onnx, tmp_path) -> None:
    engine = tmp_path / "m.engine"
    build_engine(fp32_onnx, engine, opt_shape=(256, 256), workspace_mib=1024,
                 trt_module=fake_tensorrt("10.9.0"),
                 cudart_module=fake_cudart(name="NVIDIA A100", capability=(8, 0)))
    side = read_sidecar(engine)
    assert (side.tensorrt_version, side.gpu_name, side.compute_capability) == (
        "10.9.0", "NVIDIA A100", "8.0")
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
                     trt_module=fake_tensorrt(parse_ok=False))
    assert not engine.exists() and not sidecar_path(engine).exists()


def test_failed_build_writes_nothing(fp32_onnx, tmp_path) -> None:
    engine = tmp_path / "m.engine"
    with pytest.raises(IsdnetError, match="could not build"):
        build_engine(fp32_onnx, engine, opt_shape=(64, 64),
                     trt_module=fake_tensorrt(build_ok=False))
    assert list(tmp_path.iterdir()) == [fp32_onnx]


def test_onnx_without_contract_is_refused(tmp_path) -> None:
    foreign = tiny_onnx(tmp_path / "foreign.onnx", contract=False)
    with pytest.raises(IsdnetError, match="no isdnet-deploy contract"):
        build_engine(foreign, tmp_path / "m.engine")


def test_bad_options_are_refused(fp32_onnx, tmp_path) -> None:
    with pytest.raises(IsdnetError, match="workspace"):
        build_engine(fp32_onnx, tmp_path / "m.engine", workspace_mib=0)
    with pytest.raises(IsdnetError, match="is a directory"):
        build_engine(fp32_onnx, tmp_path, opt_shape=(64, 64))


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
                      trt_module=fake_tensorrt())


@pytest.mark.parametrize("count", [0, -1])
def test_missing_gpu_is_a_clear_error(fp32_onnx, tmp_path, count) -> None:
    with pytest.raises(MissingDependencyError, match="no CUDA GPU"):
        build_engine(fp32_onnx, tmp_path / "m.engine", opt_shape=(64, 64),
                     cudart_module=fake_cudart(count=count))


def test_real_cuda_python_without_gpu_reports_no_gpu() -> None:
    try:
        cudart = trt_compat.import_cudart()
    except MissingDependencyError:
        pytest.skip("cuda-python is not installed")
    err, count = cudart.cudaGetDeviceCount()
    if int(err) == 0 and count > 0:
        pytest.skip("a CUDA GPU is present")
    with pytest.raises(MissingDependencyError, match="no CUDA GPU"):
        trt_compat.gpu_info(cudart)


# --- logger and CLI ----------------------------------------------------------------------------

def test_logger_adapter_forwards_to_python_logging(caplog) -> None:
    logger = trt_compat.make_logger(fake_tensorrt(), "info")
    with caplog.at_level(logging.DEBUG, logger="isdnet_deploy.tensorrt"):
        logger.log(Severity.ERROR, "bad thing")
        logger.log(Severity.INFO, "note")
        logger.log(Severity.VERBOSE, "chatter")
    levels = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert levels == [(logging.ERROR, "TensorRT: bad thing"), (logging.INFO, "TensorRT: note")]
    with pytest.raises(IsdnetError, match="log level"):
        trt_compat.make_logger(fake_tensorrt(), "loud")


def test_progress_monitor_survives_a_build_sequence() -> None:
    monitor = trt_compat.make_progress_monitor(fake_tensorrt())
    monitor.phase_start("Building", None, 3)
    monitor.phase_start("Tactics", "Building", 2)
    assert monitor.step_complete("Tactics", 0) and monitor.step_complete("Tactics", 1)
    monitor.phase_finish("Tactics")
    monitor.step_complete("Building", 2)
    monitor.phase_finish("Building")
    assert monitor._bars == {}


def test_cli_build_with_the_stand_in(fp32_onnx, tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt("10.9.0"))
    monkeypatch.setattr(trt_compat, "import_cudart", fake_cudart)
    result = CliRunner().invoke(build_command, [
        str(fp32_onnx), "--opt", "256x256", "--min", "128x128", "--max", "512x512", "--fp16",
        "--workspace", "256", "--timing-cache", str(tmp_path / "t.cache"), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "fp16" in result.output and "min 128x128 / opt 256x256 / max 512x512" in result.output
    assert (tmp_path / "model.engine").is_file() and (tmp_path / "t.cache").is_file()


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
    same = trt_compat.GpuInfo(0, "NVIDIA H100", "9.0")
    check_compatible(side, "m.engine", "10.9.0", same)
    with pytest.raises(IsdnetError, match=r"TensorRT 10\.9\.0, this machine has TensorRT "
                                          r"10\.10\.0; rebuild it here with: isdnet-deploy "
                                          r"build model\.onnx -o m\.engine"):
        check_compatible(side, "m.engine", "10.10.0", same)
    with pytest.raises(IsdnetError, match=r"built for NVIDIA H100 .* this GPU is NVIDIA L4"):
        check_compatible(side, "m.engine", "10.9.0", trt_compat.GpuInfo(0, "NVIDIA L4", "8.9"))


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
