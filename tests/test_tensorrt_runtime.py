"""The TensorRT backend: sidecar checks, buffers, zero-copy, profile limits, clear errors.

Without a GPU the backend runs on stand-ins: a ``tensorrt`` double whose "engine" computes
logits from the input it finds at the bound address, and a ``cuda-python`` double whose
"device memory" is host memory. That exercises the real pointer plumbing (pinned staging,
copies, zero-copy bindings, caller-owned outputs). The last test runs the real thing and
skips where TensorRT or a GPU is missing.
"""

from __future__ import annotations

import ctypes
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from isdnet_deploy.contract import Contract, TensorSpec
from isdnet_deploy.engine.sidecar import EngineSidecar, sha256_bytes, sidecar_path, write_sidecar
from isdnet_deploy.errors import IsdnetError, MissingDependencyError
from isdnet_deploy.runtime.backend import Backend
from isdnet_deploy.runtime.tensorrt_backend import (
    TensorRTBackend,
    as_device_array,
    check_in_profile,
    open_engine,
)

LOW, OPT, HIGH = (1, 3, 64, 64), (1, 3, 128, 128), (1, 3, 256, 256)
ENGINE_BYTES = b"FAKE-ENGINE v1"


def expected_logits(image: np.ndarray) -> np.ndarray:
    """What the stand-in engine computes: class c = (c + 1) * channel sum."""
    total = image.sum(axis=1, keepdims=True)
    return np.concatenate([total * (c + 1) for c in range(7)], axis=1).astype(np.float32)


# --- stand-ins -------------------------------------------------------------------------------

def _array_at(ptr: int, shape: tuple[int, ...], dtype) -> np.ndarray:
    dtype = np.dtype(dtype)
    count = int(np.prod(shape))
    buf = (ctypes.c_uint8 * (count * dtype.itemsize)).from_address(ptr)
    return np.frombuffer(buf, dtype=dtype, count=count).reshape(shape)


def fake_tensorrt(version: str = "10.9.0") -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.TensorIOMode = types.SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")
    trt.DataType = types.SimpleNamespace(FLOAT="FLOAT")
    trt.nptype = lambda dt: {"FLOAT": np.float32}[dt]
    trt.executions = []

    class ILogger:
        def __init__(self) -> None:
            pass

    class Context:
        def __init__(self) -> None:
            self.shapes = {"image": OPT}
            self.addresses: dict[str, int] = {}

        def set_input_shape(self, name, shape) -> bool:
            ok = all(lo <= s <= hi for s, lo, hi in zip(shape, LOW, HIGH, strict=True))
            if ok:
                self.shapes[name] = tuple(shape)
            return ok

        def get_tensor_shape(self, name):
            n, _, h, w = self.shapes["image"]
            return self.shapes["image"] if name == "image" else (n, 7, h, w)

        def set_tensor_address(self, name, ptr) -> None:
            self.addresses[name] = int(ptr)

        def execute_async_v3(self, stream) -> bool:
            image = _array_at(self.addresses["image"], self.shapes["image"], np.float32)
            out = _array_at(self.addresses["logits"], self.get_tensor_shape("logits"),
                            np.float32)
            out[...] = expected_logits(image)
            trt.executions.append((stream, dict(self.addresses)))
            return True

    class Engine:
        num_io_tensors = 2

        def get_tensor_name(self, i):
            return ("image", "logits")[i]

        def get_tensor_mode(self, name):
            return trt.TensorIOMode.INPUT if name == "image" else trt.TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name):
            return trt.DataType.FLOAT

        def get_tensor_profile_shape(self, name, index):
            return [LOW, OPT, HIGH]

        def create_execution_context(self):
            trt.context = Context()
            return trt.context

    class Runtime:
        def __init__(self, logger) -> None:
            assert isinstance(logger, ILogger)

        def deserialize_cuda_engine(self, data: bytes):
            return Engine() if data == ENGINE_BYTES else None

    trt.ILogger, trt.Runtime = ILogger, Runtime
    return trt


class FakeCudart(types.ModuleType):
    """cuda-python's runtime calls over host memory, counting what happens."""

    def __init__(self, count: int = 1, name: str = "NVIDIA Fake H100", cc=(9, 0)) -> None:
        super().__init__("cuda.bindings.runtime")
        self.count, self.name, self.cc = count, name, cc
        self.live: dict[int, ctypes.Array] = {}
        self.copies: list[tuple[str, int, int, int]] = []
        self.syncs = 0
        self.cudaMemcpyKind = types.SimpleNamespace(cudaMemcpyHostToDevice="H2D",
                                                    cudaMemcpyDeviceToHost="D2H")

    def cudaGetDeviceCount(self):
        return 0, self.count

    def cudaGetDeviceProperties(self, index):
        return 0, types.SimpleNamespace(name=self.name.encode(), major=self.cc[0],
                                        minor=self.cc[1])

    def cudaSetDevice(self, index):
        return (0,)

    def _alloc(self, nbytes):
        buf = (ctypes.c_uint8 * nbytes)()
        self.live[ctypes.addressof(buf)] = buf
        return 0, ctypes.addressof(buf)

    cudaMalloc = cudaMallocHost = _alloc

    def _free(self, ptr):
        del self.live[ptr]
        return (0,)

    cudaFree = cudaFreeHost = _free

    def cudaMemcpyAsync(self, dst, src, nbytes, kind, stream):
        ctypes.memmove(dst, src, nbytes)
        self.copies.append((kind, dst, src, nbytes))
        return (0,)

    def cudaStreamCreate(self):
        return 0, 7

    def cudaStreamSynchronize(self, stream):
        self.syncs += 1
        return (0,)

    def cudaStreamDestroy(self, stream):
        return (0,)


class DeviceBuffer:
    """A 'device' array for the stand-in: numpy memory exposed via __cuda_array_interface__."""

    def __init__(self, array: np.ndarray, strides=None) -> None:
        self.array = array
        self.__cuda_array_interface__ = {
            "shape": array.shape, "typestr": array.dtype.str, "strides": strides,
            "data": (array.ctypes.data, False), "version": 3}


class DLPackCuda:
    """Claims to live on a CUDA device; its DLPack capsule is numpy's."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def __dlpack_device__(self):
        return (2, 0)

    def __dlpack__(self, **kwargs):
        return self.array.__dlpack__()


# --- engine files -----------------------------------------------------------------------------

def contract() -> Contract:
    return Contract(
        inputs=[TensorSpec("image", "float32", "NCHW", [1, 3, "height", "width"])],
        outputs=[TensorSpec("logits", "float32", "NCHW", [1, 7, "height", "width"])],
        profile="deepglobe", classes=[str(i) for i in range(7)])


def write_engine(folder: Path, data: bytes = ENGINE_BYTES, version: str = "10.9.0",
                 gpu: str = "NVIDIA Fake H100", cc: str = "9.0") -> Path:
    engine = folder / "model.engine"
    engine.write_bytes(data)
    write_sidecar(engine, EngineSidecar(
        contract=contract(), tensorrt_version=version, gpu_name=gpu, compute_capability=cc,
        profile={"min": [64, 64], "opt": [128, 128], "max": [256, 256]},
        build={"onnx": "model.onnx"}, engine_bytes=len(data), engine_sha256=sha256_bytes(data)))
    return engine


@pytest.fixture
def cudart() -> FakeCudart:
    return FakeCudart()


@pytest.fixture
def backend(tmp_path, cudart):
    trt = fake_tensorrt()
    with TensorRTBackend(write_engine(tmp_path), trt_module=trt, cudart_module=cudart) as b:
        b.trt = trt
        yield b


def image(h: int = 128, w: int = 96, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(1, 3, h, w)).astype(np.float32)


# --- running -------------------------------------------------------------------------------

def test_host_input_host_output(backend, cudart) -> None:
    assert isinstance(backend, Backend) and str(backend.device) == "cuda:0"
    x = image()
    out = backend.run({"image": x})
    np.testing.assert_allclose(out["logits"], expected_logits(x), rtol=1e-6)
    kinds = [c[0] for c in cudart.copies]
    assert kinds == ["H2D", "D2H"] and cudart.syncs == 1
    x2 = image(200, 64, seed=1)  # another size inside the profile
    np.testing.assert_allclose(backend.run({"image": x2})["logits"], expected_logits(x2),
                               rtol=1e-6)


def test_caller_owned_host_output_is_filled_in_place(backend) -> None:
    x = image()
    buf = np.zeros((1, 7, 128, 96), np.float32)
    out = backend.run({"image": x}, out={"logits": buf})
    assert out["logits"] is buf
    np.testing.assert_allclose(buf, expected_logits(x), rtol=1e-6)


def test_device_input_and_output_are_zero_copy_and_asynchronous(backend, cudart) -> None:
    x = image()
    dev_in = DeviceBuffer(x)
    dev_out = DeviceBuffer(np.zeros((1, 7, 128, 96), np.float32))
    out = backend.run({"image": dev_in}, out={"logits": dev_out})
    assert out["logits"] is dev_out
    assert cudart.copies == [] and cudart.syncs == 0  # no copies, no wait
    stream, addresses = backend.trt.executions[-1]
    assert stream == 7
    assert addresses == {"image": x.ctypes.data, "logits": dev_out.array.ctypes.data}
    backend.synchronize()
    assert cudart.syncs == 1
    np.testing.assert_allclose(dev_out.array, expected_logits(x), rtol=1e-6)


def test_dlpack_cuda_input_is_bound_zero_copy(backend) -> None:
    x = image()
    backend.run({"image": DLPackCuda(x)})
    assert backend.trt.executions[-1][1]["image"] == x.ctypes.data
    pair = np.concatenate([x, image(seed=3)])
    parsed = as_device_array(DLPackCuda(pair[1:]))  # a contiguous view with an offset
    assert parsed.ptr == pair[1:].ctypes.data and parsed.shape == (1, 3, 128, 96)
    assert parsed.dtype == np.float32
    assert as_device_array(x) is None
    with pytest.raises(IsdnetError, match="not contiguous"):
        as_device_array(DLPackCuda(x[:, :, 4:20]))


def test_pinned_staging_is_not_overwritten_while_a_copy_may_run(backend, cudart) -> None:
    dev_out = DeviceBuffer(np.zeros((1, 7, 128, 96), np.float32))
    backend.run({"image": image()}, out={"logits": dev_out})
    assert cudart.syncs == 0
    backend.run({"image": image(seed=2)}, out={"logits": dev_out})
    assert cudart.syncs == 1  # waited before refilling the pinned input buffer


@pytest.mark.parametrize("size", [(32, 128), (128, 300)])
def test_size_outside_the_profile_names_the_range(backend, size) -> None:
    with pytest.raises(IsdnetError, match=r"accepts 64x64 to 256x256; .*--min/--max"):
        backend.run({"image": image(*size)})


def test_bad_feeds_and_buffers_are_refused(backend) -> None:
    with pytest.raises(IsdnetError, match="is float64, the artifact takes float32"):
        backend.run({"image": image().astype(np.float64)})
    with pytest.raises(IsdnetError, match="missing input 'image'"):
        backend.run({"img": image()})
    with pytest.raises(IsdnetError, match="no output named 'labels'"):
        backend.run({"image": image()}, out={"labels": np.zeros((128, 96), np.uint8)})
    with pytest.raises(IsdnetError, match="out buffer 'logits'"):
        backend.run({"image": image()}, out={"logits": np.zeros((1, 7, 64, 64), np.float32)})
    strided = DeviceBuffer(image(), strides=(3 * 128 * 96 * 8, 128 * 96 * 8, 96 * 8, 8))
    with pytest.raises(IsdnetError, match="not C-contiguous"):
        backend.run({"image": strided})


def test_check_in_profile_message_for_nhwc() -> None:
    with pytest.raises(IsdnetError, match=r"is 20x30 .* accepts 32x32 to 64x64"):
        check_in_profile("image", "NHWC", (1, 20, 30, 3), (1, 32, 32, 3), (1, 64, 64, 3))
    with pytest.raises(IsdnetError, match="3 dimensions"):
        check_in_profile("image", "NCHW", (3, 20, 30), (1, 3, 32, 32), (1, 3, 64, 64))


def test_close_frees_everything(tmp_path, cudart) -> None:
    backend = TensorRTBackend(write_engine(tmp_path), trt_module=fake_tensorrt(),
                              cudart_module=cudart)
    assert len(cudart.live) == 4  # device + pinned buffer per tensor
    backend.close()
    assert cudart.live == {}
    with pytest.raises(IsdnetError, match="closed"):
        backend.run({"image": image()})
    backend.close()  # idempotent


# --- refusals before TensorRT sees the engine -----------------------------------------------------

def test_missing_sidecar(tmp_path, cudart) -> None:
    engine = tmp_path / "model.engine"
    engine.write_bytes(ENGINE_BYTES)
    with pytest.raises(IsdnetError, match=r"model\.engine\.json is missing.*isdnet-deploy build"):
        TensorRTBackend(engine, trt_module=fake_tensorrt(), cudart_module=cudart)


def test_engine_from_another_tensorrt_version(tmp_path, cudart) -> None:
    engine = write_engine(tmp_path, version="10.3.0")
    with pytest.raises(IsdnetError, match=r"TensorRT 10\.3\.0, this machine has TensorRT "
                                          r"10\.9\.0; rebuild it here"):
        TensorRTBackend(engine, trt_module=fake_tensorrt("10.9.0"), cudart_module=cudart)


def test_engine_for_another_gpu(tmp_path) -> None:
    engine = write_engine(tmp_path, gpu="NVIDIA A100", cc="8.0")
    with pytest.raises(IsdnetError, match=r"built for NVIDIA A100 .*rebuild it here"):
        TensorRTBackend(engine, trt_module=fake_tensorrt(), cudart_module=FakeCudart())


def test_truncated_engine(tmp_path, cudart) -> None:
    engine = write_engine(tmp_path)
    engine.write_bytes(ENGINE_BYTES[:5])
    with pytest.raises(IsdnetError, match="truncated or replaced"):
        TensorRTBackend(engine, trt_module=fake_tensorrt(), cudart_module=cudart)


def test_engine_tensorrt_cannot_load(tmp_path, cudart) -> None:
    engine = write_engine(tmp_path, data=b"garbage bytes!")  # sidecar agrees, bytes are junk
    with pytest.raises(IsdnetError, match=r"cannot load .*rebuild it here"):
        TensorRTBackend(engine, trt_module=fake_tensorrt(), cudart_module=cudart)


def test_sidecar_disagreeing_with_engine_tensors(tmp_path, cudart) -> None:
    engine = write_engine(tmp_path)
    side = sidecar_path(engine)
    side.write_text(side.read_text().replace('"logits"', '"scores"'))
    with pytest.raises(IsdnetError, match="tensor 'logits' that its sidecar does not describe"):
        TensorRTBackend(engine, trt_module=fake_tensorrt(), cudart_module=cudart)


def test_devices(tmp_path, cudart) -> None:
    engine = write_engine(tmp_path)
    with pytest.raises(IsdnetError, match="pass device='cuda'"):
        TensorRTBackend(engine, "cpu", trt_module=fake_tensorrt(), cudart_module=cudart)
    with pytest.raises(IsdnetError, match="cuda:1 does not exist"):
        TensorRTBackend(engine, "cuda:1", trt_module=fake_tensorrt(), cudart_module=cudart)
    with pytest.raises(MissingDependencyError, match="no CUDA GPU"):
        TensorRTBackend(engine, trt_module=fake_tensorrt(), cudart_module=FakeCudart(count=0))


def test_missing_tensorrt_and_cuda_python(tmp_path, monkeypatch) -> None:
    engine = write_engine(tmp_path)
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(MissingDependencyError, match=r"tensorrt .*isdnet-deploy\[tensorrt\]"):
        open_engine(engine)
    with pytest.raises(IsdnetError, match="takes no option 'threads'"):
        open_engine(engine, "cuda", threads=2)
    for name in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(MissingDependencyError, match=r"cuda-python .*isdnet-deploy\[tensorrt\]"):
        TensorRTBackend(engine, trt_module=fake_tensorrt())


# --- the real thing ----------------------------------------------------------------------------

def _gpu_and_tensorrt() -> str | None:
    try:
        import tensorrt  # noqa: F401
        from cuda.bindings import runtime
    except ImportError:
        return "needs tensorrt and cuda-python (pip install 'isdnet-deploy[tensorrt]')"
    err, count = runtime.cudaGetDeviceCount()
    return None if int(err) == 0 and count > 0 else "needs a CUDA GPU"


@pytest.mark.gpu
def test_real_engine_matches_onnx_runtime(request, tmp_path) -> None:
    reason = _gpu_and_tensorrt()
    if reason:
        pytest.skip(reason)
    model = request.getfixturevalue("model")
    import onnxruntime as ort

    from isdnet_deploy.engine.build import build_engine
    from isdnet_deploy.export.onnx_export import export_onnx, sample_inputs

    onnx_path = tmp_path / "isdnet.onnx"
    report = export_onnx(model, onnx_path, profile="deepglobe", verify=False)
    engine = tmp_path / "isdnet.engine"
    build_engine(onnx_path, engine, min_shape=(128, 128), opt_shape=(256, 256),
                 max_shape=(512, 512), progress=False)
    feeds, _ = sample_inputs(report.contract, (256, 256))
    expected = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(
        None, feeds)[0]
    with open_engine(engine) as backend:
        got = backend.run(feeds)["logits"]
        with pytest.raises(IsdnetError, match="accepts 128x128 to 512x512"):
            backend.run(sample_inputs(report.contract, (640, 640))[0])
    assert (got.argmax(1) == expected.argmax(1)).mean() >= 0.99
