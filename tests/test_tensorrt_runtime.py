"""The TensorRT backend: sidecar checks, buffers, zero-copy, alignment, streams, devices,
profile limits, clear errors.

Without a GPU the backend runs on the stand-ins of ``trt_standins``: "device memory" is
host memory, queued stream work runs only when the stream is synchronised, TensorRT refuses
unaligned addresses, and an engine only runs with its GPU current. So a missing
synchronise, a missing wait on a producer's stream or a missing ``cudaSetDevice`` leaves
wrong numbers or a refusal, and a test fails. The last test runs the real thing and skips
where TensorRT or a GPU is missing.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from trt_standins import (
    GPU,
    TRT10,
    TRT11,
    DataType,
    DeviceBuffer,
    DLPackCuda,
    FakeCuda,
    aligned_host,
    expected_logits,
    fake_tensorrt,
    write_engine,
)

from isdnet_deploy.errors import IsdnetError, MissingDependencyError
from isdnet_deploy.runtime import tensorrt_support as support
from isdnet_deploy.runtime.backend import Backend
from isdnet_deploy.runtime.engine_sidecar import sidecar_path
from isdnet_deploy.runtime.inputs import as_device_array
from isdnet_deploy.runtime.tensorrt_backend import (
    TensorRTBackend,
    check_in_profile,
    open_engine,
)

SHAPE, OUT_SHAPE = (1, 3, 128, 96), (1, 7, 128, 96)


@pytest.fixture
def cuda() -> FakeCuda:
    return FakeCuda()


def open_backend(folder, cuda: FakeCuda, version: str = TRT10, **kwargs) -> TensorRTBackend:
    trt = fake_tensorrt(version, cuda)
    backend = TensorRTBackend(write_engine(folder, version=version), trt_module=trt,
                              cudart_module=cuda, **kwargs)
    backend.trt = trt
    return backend


@pytest.fixture(params=[TRT10, TRT11])
def backend(request, tmp_path, cuda):
    with open_backend(tmp_path, cuda, request.param) as opened:
        yield opened


def image(h: int = 128, w: int = 96, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(1, 3, h, w)).astype(np.float32)


def copies(cuda: FakeCuda) -> list[str]:
    return [c[1] for c in cuda.names("cudaMemcpyAsync")]


# --- host arrays ---------------------------------------------------------------------------------

def test_host_input_host_output(backend, cuda) -> None:
    assert isinstance(backend, Backend) and str(backend.device) == "cuda:0"
    x = image()
    out = backend.run({"image": x})
    np.testing.assert_allclose(out["logits"], expected_logits(x), rtol=1e-6)
    assert copies(cuda) == ["cudaMemcpyHostToDevice", "cudaMemcpyDeviceToHost"]
    assert cuda.pending() == 0
    x2 = image(200, 64, seed=1)  # another size inside the profile
    np.testing.assert_allclose(backend.run({"image": x2})["logits"], expected_logits(x2),
                               rtol=1e-6)


def test_caller_owned_host_output_is_filled_in_place(backend) -> None:
    x = image()
    buf = np.zeros(OUT_SHAPE, np.float32)
    out = backend.run({"image": x}, out={"logits": buf})
    assert out["logits"] is buf
    np.testing.assert_allclose(buf, expected_logits(x), rtol=1e-6)


# --- device arrays, alignment --------------------------------------------------------------------

def test_device_input_and_output_are_zero_copy_and_complete_on_return(backend, cuda) -> None:
    x = image()
    dev_in = cuda.device_array(SHAPE)
    dev_in.array[...] = x
    dev_out = cuda.device_array(OUT_SHAPE)
    out = backend.run({"image": dev_in}, out={"logits": dev_out})
    assert out["logits"] is dev_out
    assert copies(cuda) == []
    stream, addresses, _ = backend.trt.executions[-1]
    assert addresses == {"image": dev_in.array.ctypes.data, "logits": dev_out.array.ctypes.data}
    # The backend owns its stream, so run() waited: the result is there without a
    # synchronize() (the stand-in only computes when the stream is synchronised).
    assert ("cudaStreamSynchronize", stream, 0) in cuda.calls and cuda.pending() == 0
    np.testing.assert_allclose(dev_out.array, expected_logits(x), rtol=1e-6)


def test_misaligned_device_input_is_staged_through_the_backends_buffer(backend, cuda) -> None:
    x = image()
    dev_in = cuda.device_array(SHAPE, misalign=64)  # e.g. a DLPack view with a byte_offset
    dev_in.array[...] = x
    out = backend.run({"image": dev_in})
    np.testing.assert_allclose(out["logits"], expected_logits(x), rtol=1e-6)
    (staged, *_), bound = cuda.names("cudaMemcpyAsync"), backend.trt.executions[-1][1]["image"]
    assert staged[1:4] == ("cudaMemcpyDeviceToDevice", bound, dev_in.array.ctypes.data)
    assert bound % 256 == 0 and bound != dev_in.array.ctypes.data


def test_misaligned_device_output_is_copied_after_the_run(backend, cuda) -> None:
    x = image()
    dev_out = cuda.device_array(OUT_SHAPE, misalign=32)
    backend.run({"image": x}, out={"logits": dev_out})
    np.testing.assert_allclose(dev_out.array, expected_logits(x), rtol=1e-6)
    assert copies(cuda) == ["cudaMemcpyHostToDevice", "cudaMemcpyDeviceToDevice"]
    assert cuda.names("cudaMemcpyAsync")[-1][2] == dev_out.array.ctypes.data


def test_misaligned_dlpack_view_is_staged(backend, cuda) -> None:
    x = image()
    view = aligned_host(SHAPE, misalign=16)
    view[...] = x
    backend.run({"image": DLPackCuda(view)})
    assert backend.trt.executions[-1][1]["image"] != view.ctypes.data
    assert "cudaMemcpyDeviceToDevice" in copies(cuda)


def test_an_address_tensorrt_refuses_is_one_clear_error(backend) -> None:
    backend.trt.context.set_tensor_address = lambda name, ptr: False
    with pytest.raises(IsdnetError, match=r"TensorRT refused address 0x[0-9a-f]+ for tensor "
                                          r"'image'"):
        backend.run({"image": image()})


def test_the_stand_in_refuses_misaligned_addresses_as_tensorrt_does(backend, cuda) -> None:
    context = backend.trt.context
    assert context.set_tensor_address("image", cuda.cudaMalloc(64)[1])
    assert not context.set_tensor_address("image", cuda.cudaMalloc(64)[1] + 4)
    assert not context.set_tensor_address("nope", cuda.cudaMalloc(64)[1])


def test_dlpack_views_are_parsed_without_copying() -> None:
    x = image()
    pair = np.concatenate([x, image(seed=3)])
    parsed = as_device_array(DLPackCuda(pair[1:]))  # a contiguous view with an offset
    assert parsed.ptr == pair[1:].ctypes.data and parsed.shape == SHAPE
    assert parsed.dtype == np.float32
    assert as_device_array(x) is None
    with pytest.raises(IsdnetError, match="not contiguous"):
        as_device_array(DLPackCuda(x[:, :, 4:20]))


def test_strided_device_input_is_refused(backend) -> None:
    strided = DeviceBuffer(image(), strides=(3 * 128 * 96 * 8, 128 * 96 * 8, 96 * 8, 8))
    with pytest.raises(IsdnetError, match="not C-contiguous"):
        backend.run({"image": strided})


# --- streams ------------------------------------------------------------------------------------

def producer_stream(cuda: FakeCuda) -> int:
    return int(cuda.cudaStreamCreate()[1])


def test_cuda_array_interface_stream_is_waited_for(backend, cuda) -> None:
    x = image()
    producer = producer_stream(cuda)
    dev_in = cuda.device_array(SHAPE, stream=producer, fill=x)  # written by queued work
    out = backend.run({"image": dev_in})
    np.testing.assert_allclose(out["logits"], expected_logits(x), rtol=1e-6)
    (record,) = cuda.names("cudaEventRecord")
    (wait,) = cuda.names("cudaStreamWaitEvent")
    assert record[1:] == (wait[2], producer) and wait[1] == backend._stream_handle


def test_the_stand_in_leaves_stale_data_without_that_wait(backend, cuda) -> None:
    """The control for the test above: the same input without its ``stream`` key is read
    before the producer's work has run."""
    x = image()
    dev_in = cuda.device_array(SHAPE, stream=producer_stream(cuda), fill=x)
    del dev_in.__cuda_array_interface__["stream"]
    out = backend.run({"image": dev_in})
    assert not out["logits"].any() and cuda.pending() == 1  # zeros; the fill still queued


def test_dlpack_producer_gets_the_backends_stream(backend, cuda) -> None:
    x = image()
    producer = producer_stream(cuda)
    source = DLPackCuda(cuda.device_array(SHAPE, stream=producer, fill=x).array, cuda,
                        producer)
    out = backend.run({"image": source})
    np.testing.assert_allclose(out["logits"], expected_logits(x), rtol=1e-6)
    assert backend._stream_handle in source.streams and None not in source.streams[-1:]


def test_caller_stream_runs_asynchronously_until_synchronised(tmp_path, cuda) -> None:
    caller = producer_stream(cuda)
    x = image()
    with open_backend(tmp_path, cuda, stream=caller) as backend:
        dev_out = cuda.device_array(OUT_SHAPE)
        backend.run({"image": cuda.device_array(SHAPE, stream=caller, fill=x)},
                    out={"logits": dev_out})
        assert backend.trt.executions[-1][0] == caller
        assert not dev_out.array.any() and cuda.pending() > 0  # queued, not done
        assert cuda.names("cudaEventRecord") == []  # same stream: ordered already
        backend.synchronize()
        np.testing.assert_allclose(dev_out.array, expected_logits(x), rtol=1e-6)
        host = backend.run({"image": x})["logits"]  # host outputs: complete on return
        np.testing.assert_allclose(host, expected_logits(x), rtol=1e-6)
    assert caller in cuda.streams  # the caller's stream is the caller's to destroy
    assert cuda.names("cudaStreamDestroy") == []


def test_pinned_staging_is_not_overwritten_while_a_copy_may_run(tmp_path, cuda) -> None:
    with open_backend(tmp_path, cuda, stream=producer_stream(cuda)) as backend:
        dev_out = cuda.device_array(OUT_SHAPE)
        backend.run({"image": image()}, out={"logits": dev_out})
        assert cuda.names("cudaStreamSynchronize") == []
        x2 = image(seed=2)
        backend.run({"image": x2}, out={"logits": dev_out})
        assert len(cuda.names("cudaStreamSynchronize")) == 1  # before refilling the buffer
        backend.synchronize()
        np.testing.assert_allclose(dev_out.array, expected_logits(x2), rtol=1e-6)


def test_open_engine_takes_a_stream(tmp_path, cuda, monkeypatch) -> None:
    engine = write_engine(tmp_path)
    monkeypatch.setattr(support, "import_tensorrt", lambda: fake_tensorrt(TRT10, cuda))
    monkeypatch.setattr(support, "import_cudart", lambda: cuda)
    caller = producer_stream(cuda)
    with open_engine(engine, "cuda", stream=caller) as backend:
        backend.run({"image": image()})
        assert backend._stream_handle == caller
    with pytest.raises(IsdnetError, match="takes no option 'threads'"):
        open_engine(engine, "cuda", threads=2)


# --- devices --------------------------------------------------------------------------------------

def test_each_backend_runs_and_closes_on_its_own_gpu(tmp_path, monkeypatch) -> None:
    cuda = FakeCuda(gpus=((GPU, (9, 0)), (GPU, (9, 0))))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    on_one = open_backend(tmp_path / "a", cuda, device="cuda:1")
    on_zero = open_backend(tmp_path / "b", cuda, device="cuda:0")
    assert cuda.current == 0 and on_one.device.index == 1
    x = image()
    # The stand-in engine refuses to run with another GPU current, as TensorRT's would.
    np.testing.assert_allclose(on_one.run({"image": x})["logits"], expected_logits(x),
                               rtol=1e-6)
    assert on_one.trt.executions[-1][2] == 1
    on_zero.run({"image": x})
    assert on_zero.trt.executions[-1][2] == 0
    start = len(cuda.calls)
    on_one.close()
    frees = [c for c in cuda.calls[start:] if c[0].startswith("free")]
    assert len(frees) == 4 and {c[2] for c in frees} == {1}
    on_zero.close()
    assert cuda.live == {}


def test_devices_are_checked(tmp_path, cuda) -> None:
    engine = write_engine(tmp_path)
    trt = fake_tensorrt(TRT10, cuda)
    with pytest.raises(IsdnetError, match="pass device='cuda'"):
        TensorRTBackend(engine, "cpu", trt_module=trt, cudart_module=cuda)
    with pytest.raises(IsdnetError, match="cuda:1 does not exist"):
        TensorRTBackend(engine, "cuda:1", trt_module=trt, cudart_module=cuda)
    with pytest.raises(MissingDependencyError, match="no CUDA GPU"):
        TensorRTBackend(engine, trt_module=trt, cudart_module=FakeCuda(gpus=()))


# --- lifecycle, logger ---------------------------------------------------------------------------

def test_close_frees_everything(tmp_path, cuda) -> None:
    backend = open_backend(tmp_path, cuda)
    assert len(cuda.live) == 4  # device + pinned buffer per tensor
    stream = backend._stream_handle
    backend.close()
    assert cuda.live == {} and stream not in cuda.streams and cuda.events == {}
    with pytest.raises(IsdnetError, match="closed"):
        backend.run({"image": image()})
    backend.close()  # idempotent


def test_backends_and_builds_share_one_tensorrt_logger(tmp_path, cuda) -> None:
    trt = fake_tensorrt(TRT10, cuda)
    engine = write_engine(tmp_path)
    with TensorRTBackend(engine, trt_module=trt, cudart_module=cuda), \
            TensorRTBackend(engine, trt_module=trt, cudart_module=cuda):
        trt.Builder(support.tensorrt_logger(trt))
    assert [c for c in trt.calls if c[0] == "logger ignored"] == []
    # The control: TensorRT (and the stand-in) ignore a second logger, with a warning.
    other = type(support.tensorrt_logger(trt))()
    trt.Runtime(other)
    assert ("logger ignored", "Runtime") in trt.calls


# --- refusals ------------------------------------------------------------------------------------

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


def test_check_in_profile_message_for_nhwc() -> None:
    with pytest.raises(IsdnetError, match=r"is 20x30 .* accepts 32x32 to 64x64"):
        check_in_profile("image", "NHWC", (1, 20, 30, 3), (1, 32, 32, 3), (1, 64, 64, 3))
    with pytest.raises(IsdnetError, match="3 dimensions"):
        check_in_profile("image", "NCHW", (3, 20, 30), (1, 3, 32, 32), (1, 3, 64, 64))


@pytest.mark.parametrize("dtype", [DataType.BF16, DataType.FP8])
def test_io_without_a_numpy_type_is_one_clear_error(tmp_path, cuda, dtype) -> None:
    trt = fake_tensorrt(TRT11, cuda, io_dtype=dtype)
    with pytest.raises(TypeError):
        trt.nptype(dtype)  # what tensorrt.nptype does
    with pytest.raises(IsdnetError, match=rf"input 'image' of TensorRT type {dtype.name}, "
                                          r"which NumPy cannot hold; rebuild"):
        TensorRTBackend(write_engine(tmp_path, version=TRT11), trt_module=trt,
                        cudart_module=cuda)
    assert cuda.live == {} and set(cuda.streams) == {1, 2}


def test_missing_sidecar(tmp_path, cuda) -> None:
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"FAKE-ENGINE " + TRT10.encode())
    with pytest.raises(IsdnetError, match=r"model\.engine\.json is missing.*isdnet-deploy build"):
        TensorRTBackend(engine, trt_module=fake_tensorrt(TRT10, cuda), cudart_module=cuda)


def test_engine_from_another_tensorrt_version(tmp_path, cuda) -> None:
    engine = write_engine(tmp_path, version="10.3.0")
    with pytest.raises(IsdnetError, match=r"TensorRT 10\.3\.0, this machine has TensorRT "
                                          r"10\.16\.1; rebuild it here"):
        TensorRTBackend(engine, trt_module=fake_tensorrt(TRT10, cuda), cudart_module=cuda)


def test_engine_for_another_gpu(tmp_path, cuda) -> None:
    engine = write_engine(tmp_path, gpu="NVIDIA A100", cc="8.0")
    with pytest.raises(IsdnetError, match=r"built for NVIDIA A100 .*rebuild it here"):
        TensorRTBackend(engine, trt_module=fake_tensorrt(TRT10, cuda), cudart_module=cuda)


def test_truncated_engine(tmp_path, cuda) -> None:
    engine = write_engine(tmp_path)
    engine.write_bytes(engine.read_bytes()[:5])
    with pytest.raises(IsdnetError, match="truncated or replaced"):
        TensorRTBackend(engine, trt_module=fake_tensorrt(TRT10, cuda), cudart_module=cuda)


def test_engine_tensorrt_cannot_load(tmp_path, cuda) -> None:
    engine = write_engine(tmp_path, data=b"garbage bytes!")  # sidecar agrees, bytes are junk
    with pytest.raises(IsdnetError, match=r"cannot load .*rebuild it here"):
        TensorRTBackend(engine, trt_module=fake_tensorrt(TRT10, cuda), cudart_module=cuda)


def test_sidecar_disagreeing_with_engine_tensors(tmp_path, cuda) -> None:
    engine = write_engine(tmp_path)
    side = sidecar_path(engine)
    side.write_text(side.read_text().replace('"name": "logits"', '"name": "scores"'))
    with pytest.raises(IsdnetError, match="tensor 'logits' that its sidecar does not describe"):
        TensorRTBackend(engine, trt_module=fake_tensorrt(TRT10, cuda), cudart_module=cuda)


def test_missing_tensorrt_and_cuda_python(tmp_path, cuda, monkeypatch) -> None:
    engine = write_engine(tmp_path)
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(MissingDependencyError, match=r"tensorrt .*isdnet-deploy\[tensorrt\]"):
        open_engine(engine)
    for name in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(MissingDependencyError, match=r"cuda-python .*isdnet-deploy\[tensorrt\]"):
        TensorRTBackend(engine, trt_module=fake_tensorrt(TRT10, cuda))


def test_the_backend_imports_no_engine_data_metrics_or_torch() -> None:
    code = ("import sys, isdnet_deploy.runtime.tensorrt_backend; print(sorted(m for m in "
            "sys.modules if m.split('.')[:2] in (['isdnet_deploy', 'engine'], ['isdnet_deploy', "
            "'data'], ['isdnet_deploy', 'metrics']) or m == 'torch'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[]"


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
