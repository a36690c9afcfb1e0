"""Every runtime backend goes through the same cases: declared I/O, names, dtypes, shapes,
wrong input, caller-owned buffers, the device, and the lifecycle (run after close).

A new backend joins by adding one entry to ``OPENERS``.
"""

from __future__ import annotations

import numpy as np
import pytest

from isdnet_deploy.errors import IsdnetError
from isdnet_deploy.runtime.backend import Backend, Device

H, W = 128, 96


def _onnxruntime(request, tmp_path):
    from isdnet_deploy.runtime.onnxruntime_backend import OnnxRuntimeBackend

    return OnnxRuntimeBackend(request.getfixturevalue("onnx_model"))


def _openvino(request, tmp_path):
    pytest.importorskip("openvino", reason="OpenVINO is not installed: pip install "
                                           "'isdnet-deploy[openvino]'")
    from isdnet_deploy.runtime.openvino_backend import OpenVinoBackend

    return OpenVinoBackend(request.getfixturevalue("onnx_model"))


def _torch(request, tmp_path):
    from isdnet_deploy.runtime.torch_backend import TorchBackend

    return TorchBackend(None, "cpu", model=request.getfixturevalue("model"))


def _tensorrt(request, tmp_path):
    from trt_standins import FakeCuda, fake_tensorrt, write_engine

    from isdnet_deploy.runtime.tensorrt_backend import TensorRTBackend

    cuda = FakeCuda()
    return TensorRTBackend(write_engine(tmp_path), trt_module=fake_tensorrt(cuda=cuda),
                           cudart_module=cuda)


OPENERS = {"onnxruntime": _onnxruntime, "openvino": _openvino, "torch": _torch,
           "tensorrt (stand-in)": _tensorrt}


@pytest.fixture(params=list(OPENERS))
def backend(request, tmp_path):
    opened = OPENERS[request.param](request, tmp_path)
    yield opened
    opened.close()


def image(h: int = H, w: int = W, dtype=np.float32) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(1, 3, h, w)).astype(dtype)


def test_declares_its_io_from_the_contract(backend: Backend) -> None:
    assert isinstance(backend, Backend)
    assert backend.input_names == [s.name for s in backend.contract.inputs] == ["image"]
    assert backend.output_names == [s.name for s in backend.contract.outputs] == ["logits"]
    assert backend.inputs[0].dtype == np.float32 and backend.inputs[0].layout == "NCHW"
    assert isinstance(backend.device, Device)
    assert backend.device.is_cuda == (backend.name == "tensorrt")
    assert str(backend.device) in ("cpu", "cuda:0")


def test_run_gives_the_declared_outputs(backend: Backend) -> None:
    outputs = backend.run({"image": image()})
    assert list(outputs) == ["logits"]
    logits = outputs["logits"]
    assert logits.dtype == np.float32
    assert logits.shape == (1, backend.contract.num_classes, H, W)
    assert np.isfinite(logits).all()


@pytest.mark.parametrize(("feeds", "message"), [
    ({"image": image(dtype=np.float64)}, "is float64, the artifact takes float32"),
    ({"img": image()}, "missing input 'image'"),
    ({"image": image(), "extra": image()}, "unknown input 'extra'"),
    ({"image": image()[0]}, "has shape 3x128x96, the artifact takes NCHW"),
    ({"image": image()[:, :2]}, "axis 1 must be 3"),
    ({"image": image(16, W)}, "16x96, below the model's minimum of 32x32"),
    ({"image": [[1.0]]}, "is a list, not an array"),
])
def test_wrong_input_is_one_clear_error(backend: Backend, feeds, message) -> None:
    with pytest.raises(IsdnetError, match=message):
        backend.run(feeds)


def test_caller_buffer_is_filled_in_place(backend: Backend) -> None:
    x = image()
    expected = backend.run({"image": x})["logits"]
    buffer = np.full((1, backend.contract.num_classes, H, W), np.nan, np.float32)
    result = backend.run({"image": x}, out={"logits": buffer})
    assert result["logits"] is buffer
    np.testing.assert_array_equal(buffer, expected)


@pytest.mark.parametrize(("make", "message"), [
    (lambda c: np.zeros((1, c, 64, 64), np.float32), "this run writes float32 1x.x128x96"),
    (lambda c: np.zeros((1, c, H, W), np.float64), "is float64 1x.x128x96"),
    (lambda c: np.zeros((1, c, W, H), np.float32).transpose(0, 1, 3, 2), "C-contiguous"),
    (lambda c: np.zeros((H, W), np.uint8), "no output named 'labels'"),
])
def test_wrong_buffer_is_refused_before_running(backend: Backend, make, message) -> None:
    buffer = make(backend.contract.num_classes)
    name = "labels" if buffer.dtype == np.uint8 else "logits"
    with pytest.raises(IsdnetError, match=message):
        backend.run({"image": image()}, out={name: buffer})


def test_closed_backend_refuses_to_run(backend: Backend) -> None:
    backend.run({"image": image()})
    backend.close()
    assert backend.closed
    with pytest.raises(IsdnetError, match=f"this {backend.name} backend is closed"):
        backend.run({"image": image()})
    backend.close()  # twice is harmless


def test_context_manager_closes(backend: Backend) -> None:
    with backend as opened:
        assert opened is backend and not backend.closed
    assert backend.closed


@pytest.mark.parametrize(("text", "kind", "index"), [
    ("cpu", "cpu", 0), ("cuda", "cuda", 0), ("CUDA:2", "cuda", 2)])
def test_device_parsing(text, kind, index) -> None:
    device = Device.parse(text)
    assert (device.kind, device.index, device.is_cuda) == (kind, index, kind == "cuda")


@pytest.mark.parametrize("text", ["gpu", "cpu:1", "cuda:x", ""])
def test_bad_device_is_refused(text) -> None:
    with pytest.raises(IsdnetError, match="device"):
        Device.parse(text)
