"""The embeddable runtime: no torch, every input form, caller buffers, test scale, external
pyramid, prefetch pipeline, and one clear error for each bad input."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest

from isdnet_deploy import runtime
from isdnet_deploy.data.samples import photo_like
from isdnet_deploy.errors import IsdnetError, MissingDependencyError
from isdnet_deploy.runtime import Pipeline, preprocess

SIZE = (96, 128)  # small, and 0.8 x (120, 160): DeepGlobe's test scale maps one onto the other


def normalised(image: np.ndarray, contract) -> np.ndarray:
    mean = np.asarray(contract.mean, np.float32)
    std = np.asarray(contract.std, np.float32)
    return np.ascontiguousarray(((image.astype(np.float32) - mean) / std).transpose(2, 0, 1)[None])


@pytest.fixture(scope="module")
def artifacts(model, tmp_path_factory):
    from isdnet_deploy.export.onnx_export import export_onnx

    folder = tmp_path_factory.mktemp("runtime")
    paths = {"graph": folder / "graph.onnx", "external": folder / "external.onnx"}
    export_onnx(model, paths["graph"], verify_size=SIZE)
    export_onnx(model, paths["external"], pyramid="external", verify_size=SIZE)
    return paths


@pytest.fixture(scope="module")
def seg(artifacts):
    return runtime.load(artifacts["graph"])


@pytest.fixture(scope="module")
def seg_noscale(artifacts):
    return runtime.load(artifacts["graph"], scale=False)


@pytest.fixture(scope="module")
def seg_external(artifacts):
    return runtime.load(artifacts["external"])


def test_runtime_runs_with_torch_blocked(artifacts, seg, tmp_path):
    image = photo_like(*SIZE, seed=3)
    np.save(tmp_path / "image.npy", image)
    script = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # any "import torch" now raises ImportError
        import numpy as np
        from isdnet_deploy import runtime
        seg = runtime.load({str(artifacts["graph"])!r})
        np.save({str(tmp_path / "labels.npy")!r}, seg.predict(np.load({str(tmp_path /
                                                                          "image.npy")!r})))
        loaded = sorted(m for m, v in sys.modules.items() if v is not None
                        and m.split(".")[0] == "torch")
        print("torch modules:", loaded)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "torch modules: []" in done.stdout
    assert np.array_equal(np.load(tmp_path / "labels.npy"), seg.predict(image))


def test_bgr_equals_rgb_of_flipped_array(seg):
    image = photo_like(*SIZE, seed=1)
    flipped = np.ascontiguousarray(image[:, :, ::-1])
    assert np.array_equal(seg.predict(image, color="bgr"), seg.predict(flipped, color="rgb"))
    assert np.array_equal(seg.predict(flipped, color="bgr"), seg.predict(image))
    # the colour order really reaches the network
    rgb_feed = seg.feeds(image)[0]["image"]
    bgr_feed = seg.feeds(image, color="bgr")[0]["image"]
    assert not np.allclose(rgb_feed, bgr_feed)


def test_float_nchw_input_matches_uint8(seg_noscale):
    image = photo_like(*SIZE, seed=2)
    x = normalised(image, seg_noscale.contract)
    labels = seg_noscale.predict(x)
    assert labels.shape == SIZE
    assert np.array_equal(labels, seg_noscale.predict(image))
    assert np.array_equal(seg_noscale.predict(x.astype(np.float64)), labels)


def test_memoryview_input(seg):
    image = photo_like(*SIZE, seed=4)
    assert np.array_equal(seg.predict(memoryview(image)), seg.predict(image))


class DLPackOnly:
    """Exposes an array only through the DLPack protocol (as a foreign tensor would)."""

    def __init__(self, array: np.ndarray) -> None:
        self._array = array

    def __dlpack__(self, **kwargs):
        return self._array.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._array.__dlpack_device__()


def test_dlpack_input(seg):
    image = photo_like(*SIZE, seed=5)
    wrapped = DLPackOnly(image)
    assert not isinstance(wrapped, np.ndarray)
    assert np.array_equal(seg.predict(wrapped), seg.predict(image))


@pytest.mark.parametrize("dtype", [np.uint8, np.int32])
def test_out_buffer_is_filled_and_returned(seg, dtype):
    image = photo_like(120, 160, seed=6)
    expected = seg.predict(image)
    out = np.full(expected.shape, 99, dtype=dtype)
    result = seg.predict(image, out=out)
    assert result is out
    assert np.array_equal(out, expected)


def test_out_buffer_for_engine_outputs(seg_noscale):
    feeds, _ = seg_noscale.feeds(photo_like(*SIZE, seed=7))
    expected = seg_noscale.run_feeds(feeds)["logits"]
    buffer = np.zeros_like(expected)
    result = seg_noscale.run_feeds(feeds, out={"logits": buffer})
    assert result["logits"] is buffer
    np.testing.assert_allclose(buffer, expected, rtol=0, atol=1e-5)


def test_out_buffer_of_wrong_shape_is_refused(seg):
    with pytest.raises(IsdnetError, match="out buffer"):
        seg.predict(photo_like(120, 160), out=np.empty((96, 128), np.uint8))


def test_test_scale_applied_and_labels_at_image_size(seg, seg_noscale):
    image = photo_like(120, 160, seed=8)
    logits = seg.logits(image)
    assert logits.shape[2:] == preprocess.scaled_size(120, 160, seg.contract.test_scale) == SIZE
    labels = seg.predict(image)
    assert labels.shape == (120, 160)
    assert np.array_equal(labels, preprocess.logits_to_labels(logits, (120, 160)))
    assert seg_noscale.logits(image).shape[2:] == (120, 160)


def test_external_pyramid_gives_graph_pyramid_labels(seg, seg_external):
    for seed in range(2):
        image = photo_like(120, 160, seed=10 + seed)
        graph_logits, external_logits = seg.logits(image), seg_external.logits(image)
        scale = float(np.abs(graph_logits).max())
        assert np.abs(graph_logits - external_logits).max() <= 1e-4 + 1e-5 * scale
        agreement = np.mean(seg.predict(image) == seg_external.predict(image))
        assert agreement >= 0.999


def test_pipeline_matches_sequential(seg_external, tmp_path):
    images = [photo_like(120, 160, seed=20 + i) for i in range(4)]
    paths = []
    for i, image in enumerate(images):
        paths.append(tmp_path / f"{i}.npy")
        np.save(paths[-1], image)
    pipeline = Pipeline(seg_external, loader=np.load)
    overlapped = list(pipeline(paths))
    sequential = list(pipeline.sequential(paths))
    assert len(overlapped) == len(sequential) == 4
    for a, b, image in zip(overlapped, sequential, images, strict=True):
        assert np.array_equal(a, b)
        assert np.array_equal(a, seg_external.predict(image))


def test_pipeline_passes_loader_errors_to_the_caller(seg_external):
    def loader(item):
        if item == "bad":
            raise IsdnetError("cannot decode image bad")
        return photo_like(*SIZE)

    with pytest.raises(IsdnetError, match="cannot decode image bad"):
        list(Pipeline(seg_external, loader=loader)(["ok", "bad", "ok"]))


# --- bad input ------------------------------------------------------------------------------

def test_unknown_file_type(tmp_path):
    path = tmp_path / "model.txt"
    path.write_text("not a model")
    with pytest.raises(IsdnetError, match="extension"):
        runtime.load(path)


def test_missing_file(tmp_path):
    with pytest.raises(IsdnetError, match="not found"):
        runtime.load(tmp_path / "absent.onnx")


def test_truncated_onnx(artifacts, tmp_path):
    data = artifacts["graph"].read_bytes()
    path = tmp_path / "truncated.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(IsdnetError, match="truncated, corrupt or not ONNX"):
        runtime.load(path)


def test_corrupt_onnx(tmp_path):
    path = tmp_path / "corrupt.onnx"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(IsdnetError, match="truncated, corrupt or not ONNX"):
        runtime.load(path)


def test_onnx_without_contract_refused_then_accepted_with_one(artifacts, seg, tmp_path):
    proto = onnx.load(str(artifacts["graph"]))
    del proto.metadata_props[:]
    path = tmp_path / "foreign.onnx"
    onnx.save(proto, str(path))
    with pytest.raises(IsdnetError, match="no isdnet-deploy contract") as info:
        runtime.load(path)
    assert "\n" not in str(info.value)
    foreign = runtime.load(path, contract=seg.contract)
    image = photo_like(120, 160, seed=30)
    assert np.array_equal(foreign.predict(image), seg.predict(image))


@pytest.mark.parametrize(("image", "message"), [
    (np.zeros((96, 128, 4), np.uint8), "4 channels"),
    (np.zeros((96, 128), np.uint8), "single-channel"),
    (np.zeros((96, 128, 3), np.float32), "unsupported image"),
    (np.zeros((96, 128, 3), np.uint16), "unsupported image"),
    (np.zeros((1, 4, 96, 128), np.float32), "1x3xHxW"),
    (np.zeros((16, 16, 3), np.uint8), "below the model's minimum"),
    (np.zeros((1, 3, 16, 16), np.float32), "below the model's minimum"),
])
def test_bad_images(seg_noscale, image, message):
    with pytest.raises(IsdnetError, match=message) as info:
        seg_noscale.predict(image)
    assert "\n" not in str(info.value)


def test_unreadable_object(seg):
    with pytest.raises(IsdnetError, match="cannot read an image"):
        seg.predict(object())


def test_unknown_color(seg):
    with pytest.raises(IsdnetError, match="color must be"):
        seg.predict(photo_like(*SIZE), color="gray")


def test_cuda_without_gpu_provider(artifacts):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has a CUDA provider; the test checks the error without one")
    with pytest.raises(MissingDependencyError, match="onnxruntime-gpu"):
        runtime.load(artifacts["graph"], device="cuda")


def test_unknown_backend_and_device(artifacts):
    with pytest.raises(IsdnetError, match="unknown backend 'nonesuch'"):
        runtime.load(artifacts["graph"], backend="nonesuch")
    with pytest.raises(IsdnetError, match="unknown device 'tpu'"):
        runtime.load(artifacts["graph"], device="tpu")


def test_memory_pattern_is_off_by_default_and_can_be_turned_on(artifacts):
    # Off: the pattern planner cost 1.4 GiB extra peak memory at 4000x4000 for no speed.
    default = runtime.load(artifacts["graph"], scale=False)
    assert default.backend.session.get_session_options().enable_mem_pattern is False
    planned = runtime.load(artifacts["graph"], scale=False, mem_pattern=True)
    assert planned.backend.session.get_session_options().enable_mem_pattern is True
    image = np.random.default_rng(3).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    np.testing.assert_array_equal(default.predict(image), planned.predict(image))
