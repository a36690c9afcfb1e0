"""ONNX -> serialized TensorRT engine plus its ``.engine.json`` sidecar.

One code path for TensorRT 10 and 11, chosen by what the module has (see ``trt_compat``):

* ONNX with explicit precision (FP16 casts or INT8 Q/DQ, from ``isdnet-deploy quantize``):
  a strongly typed network, no precision flags (TensorRT's recommendation for Q/DQ). The
  graph fixes every layer's precision then, so ``fp16=True`` on an INT8 graph changes
  nothing; the build says so.
* FP32 ONNX with ``fp16=True``: ``BuilderFlag.FP16`` where it still exists (10.x); where it
  is gone (11.x) the ONNX is first converted with ``precision.convert_fp16`` (verified on
  ONNX Runtime) and that graph is built strongly typed.
* FP32 ONNX otherwise: nothing set (10.x builds it weakly typed in FP32, 11.x strongly
  typed, which for an FP32 graph is the same arithmetic).

The engine is built on the requested GPU (``cudaSetDevice`` before the builder exists) and
the sidecar records that GPU. Only ``_build_serialized`` touches TensorRT; tests drive it
with the stand-ins in ``tests/trt_standins.py``.
"""

from __future__ import annotations

import builtins
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

from ..contract import Contract, load_onnx_proto, require_contract
from ..errors import IsdnetError
from ..fileio import atomic_write_bytes
from ..profiles import get_profile
from ..runtime import tensorrt_support as support
from ..runtime.engine_sidecar import EngineSidecar, sha256_bytes, sidecar_path
from ..runtime.tensorrt_support import GpuInfo
from . import trt_compat

log = logging.getLogger(__name__)

DEFAULT_WORKSPACE_MIB = 4096
DEFAULT_OPT_LEVEL = 3  # TensorRT's own default; 4-5 search longer for faster kernels
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")

Size = tuple[int, int]


# --- optimization profile -------------------------------------------------------------------

@dataclass(frozen=True)
class ProfileShapes:
    """Height x width bounds of the one optimization profile (batch is always 1)."""

    min: Size
    opt: Size
    max: Size

    def to_dict(self) -> dict[str, list[int]]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


def _fmt(size: Size) -> str:
    return f"{size[0]}x{size[1]}"


def derive_profile_shapes(contract: Contract, size: Size | None = None, min: Size | None = None,
                          max: Size | None = None) -> ProfileShapes:
    """min/opt/max HxW for an engine built from ``contract``; each can be overridden.

    * opt: ``size``, else the profile's test size (the paper's network input, e.g.
      1958x1958 for DeepGlobe): TensorRT tunes its kernels for this shape.
    * max: the larger of opt and the dataset's native image size (2448x2448 for DeepGlobe),
      so both the paper's scaled input and a full-resolution image run without a rebuild.
    * min: half of opt per side (never below the model's minimum): smaller inputs are
      cheap anyway, and a wide range costs TensorRT some kernel choices.

    A fixed-size model gets min = opt = max = its size.
    """
    if not contract.dynamic and contract.fixed_size:
        fixed = (int(contract.fixed_size[0]), int(contract.fixed_size[1]))
        for name, value in (("opt", size), ("min", min), ("max", max)):
            if value is not None and tuple(value) != fixed:
                raise IsdnetError(f"this model has a fixed input size {_fmt(fixed)}; --{name} "
                                  f"{_fmt(value)} cannot apply (export it with --dynamic)")
        return ProfileShapes(fixed, fixed, fixed)
    profile = get_profile(contract.profile) if contract.profile else None
    if size is not None:
        opt = (int(size[0]), int(size[1]))
    elif profile is not None:
        opt = profile.test_size
    else:
        raise IsdnetError("the model names no dataset profile, so the engine's optimal size is "
                          "unknown; pass --opt HxW")
    if max is None:
        native = profile.image_size if profile is not None else opt
        max = (builtins.max(opt[0], native[0]), builtins.max(opt[1], native[1]))
    if min is None:
        min = (builtins.max(contract.min_size, opt[0] // 2),
               builtins.max(contract.min_size, opt[1] // 2))
    shapes = ProfileShapes(tuple(min), opt, tuple(max))
    if not all(lo <= mid <= hi for lo, mid, hi in zip(shapes.min, shapes.opt, shapes.max,
                                                      strict=True)):
        raise IsdnetError(f"profile sizes must satisfy min <= opt <= max per side; got min "
                          f"{_fmt(shapes.min)}, opt {_fmt(shapes.opt)}, max {_fmt(shapes.max)}")
    if builtins.min(shapes.min) < contract.min_size:
        raise IsdnetError(f"--min {_fmt(shapes.min)} is below the model's minimum "
                          f"{contract.min_size}x{contract.min_size}")
    return shapes


def tensor_shape(layout: str, shape: list[int | str], hw: Size) -> list[int]:
    """A contract tensor's concrete shape at ``hw`` (batch 1, channels from the contract)."""
    dims = {"N": 1, "H": hw[0], "W": hw[1]}
    out = []
    for axis, dim in zip(layout, shape, strict=True):
        out.append(dims[axis] if axis in dims else int(dim))
    return out


def input_profiles(contract: Contract, shapes: ProfileShapes) -> dict[str, dict[str, list[int]]]:
    """Per-input min/opt/max tensor shapes (every input of ISDNet shares the image's HxW)."""
    return {spec.name: {which: tensor_shape(spec.layout, spec.shape, getattr(shapes, which))
                        for which in ("min", "opt", "max")}
            for spec in contract.inputs}


# --- precision plan -------------------------------------------------------------------------

def graph_precision(model: Any) -> str:
    """'int8' for a Q/DQ graph, 'fp16' when any tensor is FP16, else 'fp32'."""
    import onnx

    ops = {node.op_type for node in model.graph.node}
    if ops & set(QDQ_OPS):
        return "int8"
    f16 = onnx.TensorProto.FLOAT16
    if any(init.data_type == f16 for init in model.graph.initializer):
        return "fp16"
    for node in model.graph.node:
        if node.op_type == "Cast" and any(a.name == "to" and a.i == f16 for a in node.attribute):
            return "fp16"
    return "fp32"


@dataclass
class PrecisionPlan:
    strongly_typed: bool
    flags: list[str] = field(default_factory=list)  # BuilderFlag member names to set
    convert_fp16: bool = False  # convert the ONNX to FP16 first (TensorRT without the flag)
    precision: str = "fp32"  # what the engine computes in, for the sidecar
    fp16_ignored: bool = False  # fp16 was asked for a graph whose precision is fixed (INT8)


def plan_precision(trt: ModuleType, onnx_precision: str, fp16: bool) -> PrecisionPlan:
    """Translate the graph's precision and the request into network/builder settings."""
    always_typed = trt_compat.always_strongly_typed(trt)
    if onnx_precision in ("fp16", "int8"):
        return PrecisionPlan(strongly_typed=True, precision=onnx_precision,
                             fp16_ignored=fp16 and onnx_precision == "int8")
    if not fp16:
        return PrecisionPlan(strongly_typed=always_typed)
    if not always_typed:
        return PrecisionPlan(strongly_typed=False, flags=["FP16"], precision="fp16")
    return PrecisionPlan(strongly_typed=True, convert_fp16=True, precision="fp16")


# --- the build --------------------------------------------------------------------------------

def _parse_errors(parser: Any) -> str:
    errors = [str(parser.get_error(i)) for i in range(int(parser.num_errors))]
    return "; ".join(e.strip().replace("\n", " ") for e in errors[:3]) or "no details"


def _attach_timing_cache(config: Any, path: Path) -> tuple[Any, str | None]:
    """Load ``path`` into the config, or start an empty cache and say why.

    ``create_timing_cache`` gives None for a blob this TensorRT cannot read (another
    version), and ``set_timing_cache`` returns False for one recorded on another GPU;
    ``set_timing_cache(None, ...)`` would raise TypeError. Either way the build goes on with
    an empty cache, as Polygraphy does, and the file is replaced after the build.
    """
    old = path.read_bytes() if path.is_file() else b""
    if old:
        cache = config.create_timing_cache(old)
        if cache is not None and config.set_timing_cache(cache, False):
            return cache, None
    cache = config.create_timing_cache(b"")
    if cache is None or not config.set_timing_cache(cache, False):
        raise IsdnetError("TensorRT could not create an empty timing cache; build without "
                          "--timing-cache")
    if not old:
        return cache, None
    return cache, (f"timing cache {path} is from another TensorRT version or GPU; started an "
                   "empty one, which replaces it after the build")


def _set_profile_shapes(profile: Any, name: str, shapes: dict[str, list[int]]) -> None:
    """``IOptimizationProfile.set_shape`` raises RuntimeError on inconsistent dims."""
    try:
        profile.set_shape(name, shapes["min"], shapes["opt"], shapes["max"])
    except RuntimeError as exc:
        raise IsdnetError(
            f"TensorRT refused the optimization profile of input {name!r} (min {shapes['min']}, "
            f"opt {shapes['opt']}, max {shapes['max']}): {str(exc).strip()}; check --min/--opt/"
            "--max and the model's input ranks") from None


def _build_serialized(trt: ModuleType, onnx_path: Path, plan: PrecisionPlan,
                      profiles: dict[str, dict[str, list[int]]], workspace_mib: int,
                      opt_level: int | None, timing_cache: Path | None,
                      progress: bool) -> tuple[bytes, bytes | None, list[str]]:
    """The TensorRT API calls, and nothing else: engine bytes, timing-cache bytes, notes."""
    logger = support.tensorrt_logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(trt_compat.network_creation_flags(trt,
                                                                       plan.strongly_typed))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(os.fspath(onnx_path)):
        raise IsdnetError(f"TensorRT cannot parse {onnx_path}: {_parse_errors(parser)}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mib) << 20)
    if opt_level is not None:
        config.builder_optimization_level = int(opt_level)
    for name in plan.flags:
        config.set_flag(getattr(trt.BuilderFlag, name))

    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        name = network.get_input(i).name
        if name not in profiles:
            raise IsdnetError(f"the ONNX graph has input {name!r} that its contract does not "
                              "describe; re-export the model")
        _set_profile_shapes(profile, name, profiles[name])
    config.add_optimization_profile(profile)

    notes = []
    cache = None
    if timing_cache is not None:
        cache, note = _attach_timing_cache(config, timing_cache)
        if note:
            log.warning("%s", note)
            notes.append(note)

    if progress:
        config.progress_monitor = trt_compat.make_progress_monitor(trt)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise IsdnetError(f"TensorRT could not build an engine from {onnx_path} (see the "
                          "TensorRT messages above); a larger --workspace may help")
    engine = bytes(serialized)
    cache_bytes = bytes(config.get_timing_cache().serialize()) if cache is not None else None
    return engine, cache_bytes, notes


@dataclass
class BuildReport:
    """What ``build_engine`` made: files, precision, profile, and the TensorRT and GPU used."""

    engine: str
    sidecar: str
    engine_bytes: int
    precision: str
    strongly_typed: bool
    converted_to_fp16: bool
    fp16_ignored: bool
    profile: ProfileShapes
    tensorrt_version: str
    gpu: GpuInfo
    build_seconds: float
    notes: list[str] = field(default_factory=list)


def build_engine(onnx_path: str | os.PathLike, engine_path: str | os.PathLike, *,
                 min_shape: Size | None = None, opt_shape: Size | None = None,
                 max_shape: Size | None = None, workspace_mib: int = DEFAULT_WORKSPACE_MIB,
                 timing_cache: str | os.PathLike | None = None,
                 opt_level: int | None = DEFAULT_OPT_LEVEL, fp16: bool = False,
                 device: str = "cuda", log_level: str = "warning", progress: bool = True,
                 trt_module: ModuleType | None = None,
                 cudart_module: ModuleType | None = None) -> BuildReport:
    """Build ``engine_path`` (and ``engine_path.json``) from an exported ONNX model on GPU
    ``device`` ('cuda' or 'cuda:N'); the engine runs on GPUs of that model only."""
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if workspace_mib <= 0:
        raise IsdnetError(f"--workspace must be a positive number of MiB, got {workspace_mib}")
    if engine_path.is_dir():
        raise IsdnetError(f"output {engine_path} is a directory; give a file name such as "
                          "model.engine")
    index = support.cuda_device_index(device)
    support.set_log_level(log_level)
    model = load_onnx_proto(os.fspath(onnx_path))
    contract = require_contract(model, os.fspath(onnx_path))
    if contract.output_resize == "graph":
        raise IsdnetError(
            f"{onnx_path} resizes its labels in the graph to an 'output_size' input, a shape "
            "input that engines built here do not support yet; export it with --output-resize "
            "none (or --output-kind logits) to build a TensorRT engine")
    shapes = derive_profile_shapes(contract, opt_shape, min_shape, max_shape)
    profiles = input_profiles(contract, shapes)

    trt = trt_module or support.import_tensorrt()
    cudart = cudart_module or support.import_cudart()
    gpu = support.gpu_info(cudart, index)
    onnx_precision = graph_precision(model)
    plan = plan_precision(trt, onnx_precision, fp16)
    del model

    notes = []
    if plan.fp16_ignored:
        notes.append(f"--fp16 is ignored: {onnx_path.name} is an INT8 (Q/DQ) graph, built "
                     "strongly typed, so each layer runs in the precision the graph gives it")
        log.warning("%s", notes[-1])
    start = time.perf_counter()
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    cache_path = Path(timing_cache) if timing_cache is not None else None
    support.check_cuda(cudart.cudaSetDevice(index), "cudaSetDevice")
    with trt_compat.redirect_logging_to_tqdm(progress), \
            tempfile.TemporaryDirectory(prefix="isdnet-build-") as work:
        source = onnx_path
        if plan.convert_fp16:
            from .precision import convert_fp16

            notes.append(f"this TensorRT has no FP16 builder flag: {onnx_path.name} was "
                         "converted to FP16 in the graph first (isdnet-deploy quantize "
                         "--precision fp16 does this ahead of time)")
            log.warning("%s", notes[-1])
            source = Path(work, "model.fp16.onnx")
            convert_fp16(onnx_path, source, progress=progress)
        engine, cache_bytes, build_notes = _build_serialized(
            trt, source, plan, profiles, workspace_mib, opt_level, cache_path, progress)
    notes += build_notes
    atomic_write_bytes(engine_path, engine)
    if cache_path is not None and cache_bytes is not None:
        atomic_write_bytes(cache_path, cache_bytes)
    seconds = time.perf_counter() - start

    contract.precision = plan.precision
    options = {
        "onnx": os.fspath(onnx_path),
        "onnx_precision": onnx_precision,
        "requested_fp16": fp16,
        "fp16_ignored": plan.fp16_ignored,
        "precision_flags": plan.flags,
        "strongly_typed": plan.strongly_typed,
        "converted_to_fp16": plan.convert_fp16,
        "workspace_mib": workspace_mib,
        "opt_level": opt_level,
        "timing_cache": os.fspath(cache_path) if cache_path else None,
        "device_index": index,
        "build_seconds": round(seconds, 2),
    }
    sidecar = EngineSidecar(
        contract=contract, tensorrt_version=support.tensorrt_version(trt),
        gpu_name=gpu.name, compute_capability=gpu.compute_capability,
        profile={**shapes.to_dict(), "inputs": profiles}, build=options,
        engine_bytes=len(engine), engine_sha256=sha256_bytes(engine),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    side = sidecar_path(engine_path)
    atomic_write_bytes(side, sidecar.to_json().encode())
    log.info("built %s in %.1f s", engine_path, seconds)
    return BuildReport(
        engine=os.fspath(engine_path), sidecar=os.fspath(side), engine_bytes=len(engine),
        precision=plan.precision, strongly_typed=plan.strongly_typed,
        converted_to_fp16=plan.convert_fp16, fp16_ignored=plan.fp16_ignored, profile=shapes,
        tensorrt_version=sidecar.tensorrt_version, gpu=gpu, build_seconds=seconds, notes=notes)
