"""FastLaplacianPyramid equals the official pyramid, in PyTorch and exported (ORT, OpenVINO).

Run as a script (``OMP_WAIT_POLICY=PASSIVE python tests/test_fast_pyramid.py [size]``) it
times both forms side by side at 1958x1958, in eager PyTorch and in ONNX Runtime, 2 threads.
"""

from __future__ import annotations

import functools
import io
import statistics
import sys
import time
import warnings

import consumers
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from isdnet_deploy.export.fast_pyramid import (
    FastLaplacianPyramid,
    bilinear_enlarge,
    legacy_nearest_shrink,
)
from isdnet_deploy.pyramid.torch_ops import LaplacianPyramid

# Odd and even sizes at both levels, and two where legacy 'nearest' is not a crop (>= 3227).
SIZES = [(64, 64), (65, 63), (258, 202), (333, 257), (1000, 760), (31, 33), (1958, 1958)]
NOT_A_CROP = [(3229, 34), (34, 5205)]


def _image(h: int, w: int) -> torch.Tensor:
    return torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(h * 7919 + w))


@functools.cache
def _official(h: int, w: int) -> torch.Tensor:
    return LaplacianPyramid()(_image(h, w))


def export_bytes(module: torch.nn.Module, trace_size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (_image(*trace_size),), buffer, dynamo=False, opset_version=17,
                          input_names=["image"], output_names=["shallow"],
                          dynamic_axes={"image": {2: "h", 3: "w"}, "shallow": {2: "h", 3: "w"}})
    return buffer.getvalue()


def export_session(module: torch.nn.Module, trace_size: tuple[int, int]):
    ort = pytest.importorskip("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    # Idle threads sleep instead of spinning, so process CPU time measures work done.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(export_bytes(module, trace_size), options,
                                providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module", params=[(96, 128), (65, 63)], ids=["traced-even", "traced-odd"])
def pyramid_onnx(request, tmp_path_factory):
    """One file per trace size: the graph must not depend on the size it was traced at."""
    path = tmp_path_factory.mktemp("pyramid") / "fast_pyramid.onnx"
    path.write_bytes(export_bytes(FastLaplacianPyramid(), request.param))
    return path


@pytest.mark.parametrize("h,w", SIZES + NOT_A_CROP)
def test_eager_equals_official(h: int, w: int) -> None:
    expected = _official(h, w)
    got = FastLaplacianPyramid()(_image(h, w))
    assert got.shape == expected.shape == (1, 6, h, w)
    assert (got - expected).abs().max().item() <= 1e-5


@pytest.mark.parametrize("consumer", consumers.CONSUMERS)
def test_exported_pyramid_equals_official_at_every_size(pyramid_onnx, consumer) -> None:
    for h, w in SIZES + NOT_A_CROP:
        expected = _official(h, w).numpy()
        got = consumers.run(consumer, pyramid_onnx, {"image": _image(h, w).numpy()})
        assert got.shape == expected.shape, (h, w)
        assert np.abs(got - expected).max() <= 1e-5, (h, w)


def test_exported_pyramid_is_int32_safe(pyramid_onnx) -> None:
    import onnx

    from isdnet_deploy.export.portability import ensure_int32_safe

    ensure_int32_safe(onnx.load(str(pyramid_onnx)))


def test_exported_graph_avoids_slow_ops() -> None:
    """No DepthToSpace/ScatterND/Resize and no Gather along the width of an image tensor."""
    onnx = pytest.importorskip("onnx")
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(FastLaplacianPyramid(), (_image(96, 128),), buffer, dynamo=False,
                          opset_version=17, input_names=["image"],
                          dynamic_axes={"image": {2: "h", 3: "w"}})
    graph = onnx.shape_inference.infer_shapes(onnx.load_from_string(buffer.getvalue())).graph
    ranks = {v.name: len(v.type.tensor_type.shape.dim)
             for v in [*graph.input, *graph.value_info, *graph.output]}
    ops = {node.op_type for node in graph.node}
    assert not ops & {"DepthToSpace", "ScatterND", "ScatterElements", "Resize"}
    for node in graph.node:
        if node.op_type == "Gather" and ranks.get(node.input[0]) == 4:
            axis = next(a.i for a in node.attribute if a.name == "axis")
            assert axis == 2, f"{node.name} gathers along axis {axis}"


def test_legacy_nearest_shrink_equals_interpolate():
    """The column form relies on the picks being 'keep, then skip one' (checked for every
    size in test_exact_index); here the whole function, on every size up to 300 and a spread
    of larger ones across the tail that starts at 3227."""
    sizes = [*range(2, 301), *range(301, 16385, 409), 3226, 3227, 3229, 8193, 16383, 16384]
    for size in sizes:
        for length in {size, 2 * ((size + 1) // 2)}:
            x = torch.arange(length, dtype=torch.float32).view(1, 1, 1, length)
            expected = F.interpolate(x, size=(1, size))
            assert torch.equal(legacy_nearest_shrink(x, 3, size), expected), (length, size)


@pytest.mark.parametrize("length,size", [(3230, 3229), (5206, 5205), (1002, 1001), (64, 64)])
def test_legacy_nearest_shrink_rows_equal_interpolate(length: int, size: int) -> None:
    x = torch.randn(1, 2, length, 3)
    assert torch.equal(legacy_nearest_shrink(x, 2, size), F.interpolate(x, size=(size, 3)))


@pytest.mark.parametrize("small,large", [((167, 129), (333, 257)), ((979, 12), (1958, 23)),
                                         ((1615, 9), (3229, 17)), ((4097, 3), (8193, 5))])
def test_bilinear_enlarge_matches_pytorch_rounding(small: tuple[int, int],
                                                   large: tuple[int, int]) -> None:
    """Resize in ONNX Runtime differs by ~3e-4 at 3229; the written-out form by one rounding."""
    x = torch.randn(1, 3, *small, generator=torch.Generator().manual_seed(5))
    expected = F.interpolate(x, size=large, mode="bilinear", align_corners=False)
    assert (bilinear_enlarge(x, large) - expected).abs().max().item() <= 1e-6


def test_kernels_are_not_checkpoint_state() -> None:
    """Swapping it into a loaded model must not add or expect state-dict keys."""
    assert FastLaplacianPyramid().state_dict() == {}


def _timings(runs: dict, repeats: int) -> dict[str, tuple[float, float]]:
    """Median wall and process-CPU milliseconds per callable, runs interleaved.

    CPU time is the steadier figure on a shared machine: other load stretches wall time.
    """
    wall: dict[str, list[float]] = {name: [] for name in runs}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    for run in runs.values():
        run()
    for _ in range(repeats):
        for name, run in runs.items():
            start_cpu, start = time.process_time(), time.perf_counter()
            run()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    return {name: (statistics.median(wall[name]) * 1e3, statistics.median(cpu[name]) * 1e3)
            for name in runs}


def benchmark(size: int = 1958, repeats: int = 7) -> None:
    torch.set_num_threads(2)
    image = _image(size, size)
    feed = {"image": image.numpy()}
    official, fast = LaplacianPyramid(), FastLaplacianPyramid()
    # Traced at an odd size: traced at an even one, the official graph lacks the odd-size
    # fallback and fails at sizes like 1958 (level 1 is 979).
    official_session = export_session(official, (65, 63))
    fast_session = export_session(fast, (96, 128))
    with torch.inference_mode():
        times = _timings({"eager official": lambda: official(image),
                          "eager fast": lambda: fast(image),
                          "ORT official": lambda: official_session.run(None, feed),
                          "ORT fast": lambda: fast_session.run(None, feed)}, repeats)
    print(f"Laplacian pyramid at {size}x{size}, 2 threads, median of {repeats} interleaved runs")
    for kind in ("eager", "ORT"):
        (slow_wall, slow_cpu), (fast_wall, fast_cpu) = (times[f"{kind} official"],
                                                        times[f"{kind} fast"])
        print(f"{kind:5s} wall: official {slow_wall:7.1f} ms  fast {fast_wall:7.1f} ms  "
              f"{slow_wall / fast_wall:4.2f}x | CPU: official {slow_cpu:7.1f} ms  "
              f"fast {fast_cpu:7.1f} ms  {slow_cpu / fast_cpu:4.2f}x")


if __name__ == "__main__":
    benchmark(*(int(a) for a in sys.argv[1:]))
