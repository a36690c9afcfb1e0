"""The GStreamer element isdnetseg (c/gstreamer), built and installed by c/'s CMake with
libisdnet (the session fixture c_build: the README's commands), in real pipelines.

Frames read by filesrc ! rawvideoparse come out of isdnetseg with exactly the labels of
runtime.load(model).predict(frame); overlays equal `isdnet-deploy infer --overlay`; a
videotestsrc run reports frames per second; bad input gives one GStreamer error naming the
problem, never a crash or a hang (every run has a timeout).

Pipelines that must succeed run in gst-launch-1.0, as a user runs them. Pipelines that must
fail run in c/gstreamer/tests/run_pipeline.c, except those that fail while starting:
gst-launch-1.0 1.22 can miss an error posted by a streaming thread before its main loop
runs, and then waits forever (see run_pipeline.c).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from c_support import MISSING_TOOLS, CBuild, readme_blocks, run

from isdnet_deploy.data.samples import photo_like

ROOT = Path(__file__).resolve().parents[1]
GST_MODULES = ["gstreamer-1.0", "gstreamer-base-1.0", "gstreamer-video-1.0"]
INSTALL = ("apt-get install libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev "
           "gstreamer1.0-tools gstreamer1.0-plugins-base, as .ci/run does")


def _gstreamer_dev_missing() -> str | None:
    if MISSING_TOOLS:
        return f"{' and '.join(MISSING_TOOLS)} not found: c/ cannot be built here"
    if shutil.which("pkg-config") is None:
        return f"pkg-config not found, so GStreamer's development files cannot be ({INSTALL})"
    found = subprocess.run(["pkg-config", "--exists", *GST_MODULES])
    if found.returncode != 0:
        return f"GStreamer's development files not found by pkg-config ({INSTALL})"
    return None


pytestmark = pytest.mark.skipif(_gstreamer_dev_missing() is not None,
                                reason=str(_gstreamer_dev_missing()))

# Odd and even sides: rows of 393 bytes (RGB) and 131 class ids (GRAY8) are not multiples
# of GStreamer's default 4-byte row alignment, so strides are exercised both ways.
SIZES = [(97, 131), (120, 160)]
TIMEOUT = 300


class Gst:
    """The installed plugin and the tools, with a registry of this test session only."""

    def __init__(self, c_build: CBuild, registry: Path) -> None:
        for tool in ("gst-launch-1.0", "gst-inspect-1.0"):
            if shutil.which(tool) is None:
                pytest.fail(f"{tool} not found although GStreamer's development files are "
                            f"installed: {INSTALL}")
        self.c_build = c_build
        self.plugin_dir = c_build.prefix / "lib" / "gstreamer-1.0"
        self.driver = c_build.programs / "gstreamer" / "run_pipeline"
        self.env = {"GST_PLUGIN_PATH": str(self.plugin_dir), "GST_REGISTRY": str(registry),
                    "GST_DEBUG_NO_COLOR": "1"}

    def launch(self, pipeline: str, cwd: Path, check: bool = True, debug: str | None = None
               ) -> subprocess.CompletedProcess:
        env = dict(self.env, GST_DEBUG=debug) if debug else self.env
        return run(f"gst-launch-1.0 {pipeline}", cwd, timeout=TIMEOUT, check=check, env=env)

    def fail(self, pipeline: str, cwd: Path) -> str:
        """The error run_pipeline prints for a pipeline that must fail (exit 1)."""
        result = run([str(self.driver), str(TIMEOUT), pipeline], cwd, timeout=TIMEOUT + 60,
                     check=False, env=self.env)
        assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
        return result.stderr


@pytest.fixture(scope="module")
def gst(c_build, tmp_path_factory) -> Gst:
    return Gst(c_build, tmp_path_factory.mktemp("gst") / "registry.bin")


def stride(row_bytes: int) -> int:
    """GStreamer's default row stride: rows padded to 4 bytes."""
    return (row_bytes + 3) // 4 * 4


def read_frames(path: Path, count: int, height: int, width: int, channels: int
                ) -> np.ndarray:
    """Frames written by filesink: rows of `width * channels` bytes, padded to 4 with
    zeros."""
    row = stride(width * channels)
    data = np.frombuffer(path.read_bytes(), np.uint8)
    assert data.size == count * height * row, (data.size, count, height, row)
    assert not data.reshape(count, height, row)[:, :, width * channels:].any()
    frames = data.reshape(count, height, row)[:, :, :width * channels]
    return frames.reshape((count, height, width, channels)[:4 if channels > 1 else 3])


def write_frames(path: Path, frames: list[np.ndarray]) -> Path:
    path.write_bytes(b"".join(np.ascontiguousarray(f).tobytes() for f in frames))
    return path


def raw_source(path: Path, height: int, width: int, order: str) -> str:
    """filesrc ! rawvideoparse for tightly packed frames (plane-strides: no row padding)."""
    return (f"filesrc location={path} ! rawvideoparse width={width} height={height} "
            f"format={order} framerate=1/1 plane-strides='<{3 * width}>'")


# --- build, install, inspection ----------------------------------------------------------


def test_plugin_installed_beside_libisdnet_and_inspectable(gst, tmp_path):
    plugin = gst.plugin_dir / "libgstisdnet.so"
    assert plugin.is_file()
    dynamic = run(["readelf", "-d", str(plugin)], tmp_path).stdout
    assert "Shared library: [libisdnet.so.0]" in dynamic
    assert "Library runpath: [$ORIGIN/..]" in dynamic
    info = run(["gst-inspect-1.0", "isdnetseg"], tmp_path, env=gst.env).stdout
    assert re.search(r"Filename\s+" + re.escape(str(plugin)), info)
    assert re.search(r"License\s+Apache 2.0", info)
    for prop in ("model", "output", "alpha", "threads"):
        assert re.search(rf"^  {prop}\s+:", info, flags=re.M), prop
    assert re.search(r"\(0\): labels .*\n.*\(1\): overlay ", info)
    sink, src = info.split("SINK template")[1].split("SRC template")
    assert "RGB" in sink and "BGR" in sink and "GRAY8" not in sink and "NV12" not in sink
    assert "GRAY8" in src.split("Element has")[0]


def test_cmake_option_auto_on_off(c_build, tmp_path):
    """AUTO builds the plugin when pkg-config finds GStreamer and says how to get it when
    not; ON fails the configuration without it; OFF skips it. (Configure only: the ONNX
    Runtime header of the session build is reused, nothing is downloaded.)"""
    header = c_build.programs / "onnxruntime" / "include"
    no_gstreamer = {"PKG_CONFIG_LIBDIR": str(tmp_path / "empty"),
                    "PKG_CONFIG_PATH": str(tmp_path / "empty")}

    def configure(name: str, option: str | None, env: dict[str, str] | None = None
                  ) -> subprocess.CompletedProcess:
        args = ["cmake", "-S", str(ROOT / "c"), "-B", str(tmp_path / name),
                f"-DONNXRUNTIME_INCLUDE_DIR={header}"]
        return run(args + ([f"-DISDNET_GSTREAMER={option}"] if option else []), tmp_path,
                   check=False, env=env or {})

    found = configure("auto", None)
    assert found.returncode == 0 and "GStreamer plugin: building libgstisdnet.so" in \
        found.stdout, found.stdout + found.stderr
    missing = configure("auto-missing", "AUTO", no_gstreamer)
    assert missing.returncode == 0, missing.stderr
    assert "GStreamer plugin: not built (pkg-config finds no gstreamer-1.0" in missing.stdout
    assert "libgstreamer1.0-dev" in missing.stdout
    required = configure("on-missing", "ON", no_gstreamer)
    assert required.returncode != 0
    assert "ISDNET_GSTREAMER=ON requires it" in required.stderr
    off = configure("off", "OFF")
    assert off.returncode == 0 and "GStreamer plugin: not built (ISDNET_GSTREAMER=OFF)" in \
        off.stdout


# --- frames through a pipeline equal the Python runtime ----------------------------------


@pytest.mark.parametrize("order", ["rgb", "bgr"])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_labels_equal_python_runtime(gst, onnx_model, size, order, tmp_path):
    """The issue's pipeline, frame by frame: labels byte-equal to
    runtime.load(model).predict(frame, color=order)."""
    from isdnet_deploy import runtime

    height, width = size
    images = [photo_like(height, width, seed=s) for s in range(3)]
    frames = [image if order == "rgb" else image[:, :, ::-1] for image in images]
    source = write_frames(tmp_path / f"frames.{order}", frames)
    gst.launch(f"{raw_source(source, height, width, order)} ! isdnetseg model={onnx_model} "
               f"! filesink location=labels.raw", tmp_path)
    labels = read_frames(tmp_path / "labels.raw", len(frames), height, width, 1)
    seg = runtime.load(onnx_model)
    for i, frame in enumerate(frames):
        expected = seg.predict(np.ascontiguousarray(frame), color=order)
        np.testing.assert_array_equal(labels[i], expected, err_msg=f"frame {i}")
    assert len({labels[i].tobytes() for i in range(3)}) == 3  # three different frames


def test_embedding_artifact_labels_equal_python_runtime(gst, embedding_onnx_model, tmp_path):
    """The embedding export (uint8 in, labels resized in the graph) through the element."""
    from isdnet_deploy import runtime

    height, width = SIZES[0]
    frames = [photo_like(height, width, seed=10 + s) for s in range(2)]
    source = write_frames(tmp_path / "frames.rgb", frames)
    gst.launch(f"{raw_source(source, height, width, 'rgb')} ! isdnetseg "
               f"model={embedding_onnx_model} ! filesink location=labels.raw", tmp_path)
    labels = read_frames(tmp_path / "labels.raw", len(frames), height, width, 1)
    seg = runtime.load(embedding_onnx_model)
    for i, frame in enumerate(frames):
        np.testing.assert_array_equal(labels[i], seg.predict(frame), err_msg=f"frame {i}")


def test_overlay_equals_infer_overlay(gst, onnx_model, cli, tmp_path):
    """output=overlay with the default alpha gives the bytes of the PNG that
    `isdnet-deploy infer --overlay` writes for the same image."""
    import cv2

    height, width = SIZES[0]
    image = photo_like(height, width, seed=20)
    (tmp_path / "images").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "frame.png"), image[:, :, ::-1])
    result = cli("infer", onnx_model, tmp_path / "images", "-o", tmp_path / "out", "--overlay",
                 "--no-progress")
    assert result.exit_code == 0, result.output
    expected = cv2.imread(str(tmp_path / "out" / "frame_overlay.png"))[:, :, ::-1]
    source = write_frames(tmp_path / "frames.rgb", [image])
    gst.launch(f"{raw_source(source, height, width, 'rgb')} ! isdnetseg model={onnx_model} "
               "output=overlay ! filesink location=overlay.raw", tmp_path)
    overlay = read_frames(tmp_path / "overlay.raw", 1, height, width, 3)[0]
    np.testing.assert_array_equal(overlay, expected)
    assert not np.array_equal(overlay, image)


@pytest.mark.parametrize(("order", "alpha"), [("bgr", 0.3), ("rgb", 1.0), ("rgb", 0.0)])
def test_overlay_equals_python_overlay_for_any_alpha(gst, onnx_model, order, alpha,
                                                     tmp_path):
    """BGR frames stay BGR; alpha 1 gives the palette colours, alpha 0 the frame itself."""
    from isdnet_deploy import runtime
    from isdnet_deploy.data.images import overlay

    height, width = SIZES[1]
    images = [photo_like(height, width, seed=30 + s) for s in range(2)]
    frames = [image if order == "rgb" else image[:, :, ::-1] for image in images]
    source = write_frames(tmp_path / "frames.raw", frames)
    gst.launch(f"{raw_source(source, height, width, order)} ! isdnetseg model={onnx_model} "
               f"output=overlay alpha={alpha} ! filesink location=overlay.raw", tmp_path)
    got = read_frames(tmp_path / "overlay.raw", len(frames), height, width, 3)
    seg = runtime.load(onnx_model)
    palette = seg.contract.display_palette()
    for i, image in enumerate(images):
        expected = overlay(image, seg.predict(image), palette, alpha=alpha)
        if order == "bgr":
            expected = expected[:, :, ::-1]
        np.testing.assert_array_equal(got[i], expected, err_msg=f"frame {i}")
    if alpha == 0.0:
        np.testing.assert_array_equal(got, np.stack(frames))


def frame_log(stderr: str) -> list[tuple[float, float]]:
    """(seconds since start, ms in isd_predict) of each 'frame N done' debug line."""
    found = re.findall(r"^(\d+):(\d\d):(\d\d\.\d+) .*isdnetseg.* frame (\d+) done: \S+, "
                       r"([\d.]+) ms in isd_predict", stderr, flags=re.M)
    return [(int(h) * 3600 + int(m) * 60 + float(s), float(ms)) for h, m, s, _, ms in found]


def test_videotestsrc_run_reports_frames_per_second(gst, onnx_model, tmp_path):
    """videotestsrc ! videoconvert ! isdnetseg ! fakesink: every frame is segmented; the
    element's debug log gives the time of each, hence frames per second (printed; speed
    is measured by benchmarks/gstreamer_fps.py, not asserted)."""
    frames = 6
    result = gst.launch(f"videotestsrc num-buffers={frames} ! video/x-raw,width=160,height=120 "
                        f"! videoconvert ! isdnetseg model={onnx_model} ! fakesink sync=false",
                        tmp_path, debug="isdnetseg:5")
    assert "Got EOS from element" in result.stdout
    log = frame_log(result.stderr)
    assert len(log) == frames, result.stderr[-3000:]
    fps = (frames - 1) / (log[-1][0] - log[0][0])
    mean_ms = sum(ms for _, ms in log) / frames
    assert fps > 0 and mean_ms > 0
    assert re.search(rf"closing the model after {frames} frames", result.stderr)
    print(f"\nisdnetseg, 160x120 videotestsrc frames: {fps:.2f} frames/s through the "
          f"pipeline, {mean_ms:.1f} ms per frame in isd_predict")


# --- bad input: one error naming the problem, no crash, no hang ----------------------------


def test_no_model_fails_to_start_with_an_error(gst, tmp_path):
    result = gst.launch("videotestsrc num-buffers=1 ! videoconvert ! isdnetseg ! fakesink",
                        tmp_path, check=False)
    assert result.returncode not in (0, -11, 134, 139), result.returncode
    output = result.stdout + result.stderr
    assert "ERROR: from element /GstPipeline:pipeline0/GstIsdnetSeg:isdnetseg0: No model " \
           "given: set the 'model' property" in output
    assert "Failed to set pipeline to PAUSED" in output


def test_unusable_models_fail_to_start_naming_the_file_and_the_reason(gst, onnx_model,
                                                                     tmp_path):
    from test_c_library import tiny_artifact

    (tmp_path / "folder").mkdir()
    (tmp_path / "notes.txt").write_text("not a model\n")
    (tmp_path / "truncated.onnx").write_bytes(onnx_model.read_bytes()[:1_000_000])
    cases = {
        tmp_path / "absent.onnx": "file not found",
        tmp_path / "folder": "is a directory, not an ONNX file",
        tmp_path / "notes.txt": "truncated, corrupt or not ONNX",
        tmp_path / "truncated.onnx": "truncated, corrupt or not ONNX",
        tiny_artifact(tmp_path / "plain.onnx", None): "has no isdnet-deploy contract",
    }
    for path, reason in cases.items():
        result = gst.launch(f"videotestsrc num-buffers=1 ! videoconvert ! isdnetseg "
                            f"model={path} ! fakesink", tmp_path, check=False)
        assert result.returncode not in (0, -11, 134, 139), (path, result.returncode)
        errors = [line for line in (result.stdout + result.stderr).splitlines()
                  if line.startswith("ERROR: from element")]
        assert len(errors) == 1, (path, result.stdout + result.stderr)
        assert "GstIsdnetSeg:isdnetseg0: Cannot use the model" in errors[0]
        assert str(path) in errors[0] and reason in errors[0], errors[0]
        # The same through an application that pops the bus.
        assert str(path) in gst.fail(f"videotestsrc num-buffers=1 ! videoconvert ! "
                                     f"isdnetseg model={path} ! fakesink", tmp_path)


def test_unsupported_caps_are_not_negotiated(gst, onnx_model, tmp_path):
    """NV12 straight into isdnetseg: refused when linking (gst-launch-1.0) and, from a
    parser that can only tell at run time, a not-negotiated stream error."""
    result = gst.launch(f"videotestsrc num-buffers=1 ! video/x-raw,format=NV12 ! isdnetseg "
                        f"model={onnx_model} ! fakesink", tmp_path, check=False)
    assert result.returncode == 1
    assert "isdnetseg0 can't handle caps video/x-raw, format=(string)NV12" in result.stderr
    write_frames(tmp_path / "frames.nv12", [np.zeros((72, 64), np.uint8)])
    error = gst.fail(f"filesrc location=frames.nv12 ! rawvideoparse width=64 height=48 "
                     f"format=nv12 ! isdnetseg model={onnx_model} ! fakesink", tmp_path)
    assert "streaming stopped, reason not-negotiated" in error, error


def test_frame_below_the_minimum_is_an_element_error_naming_its_size(gst, onnx_model,
                                                                     tmp_path):
    error = gst.fail(f"videotestsrc num-buffers=2 ! video/x-raw,width=24,height=20 ! "
                     f"videoconvert ! isdnetseg model={onnx_model} ! fakesink", tmp_path)
    first = error.splitlines()[0]
    assert first.startswith("ERROR from /GstPipeline:pipeline0/GstIsdnetSeg:isdnetseg0: "
                            "Frames of width 24 and height 20 cannot be segmented"), error
    assert "below the model's minimum of 32x32" in first


# --- README, benchmark, valgrind -----------------------------------------------------------


def test_readme_gstreamer_commands_run(gst, c_build, onnx_model):
    """The README's "In a GStreamer pipeline" commands, verbatim, in the README's folder
    (where the session build installed isdnet-c)."""
    blocks = readme_blocks("In a GStreamer pipeline")
    assert blocks and all(language == "bash" for language, _ in blocks)
    model = c_build.work / "model.onnx"
    if not model.exists():
        model.symlink_to(onnx_model)
    for name in ("labels.gray", "overlay.rgb"):
        (c_build.work / name).unlink(missing_ok=True)
    env = {"GST_REGISTRY": gst.env["GST_REGISTRY"]}
    for _, commands in blocks:
        result = run(commands, c_build.work, timeout=TIMEOUT, env=env)
        assert "Got EOS from element" in result.stdout, result.stdout + result.stderr
    assert (c_build.work / "labels.gray").stat().st_size == 10 * 240 * 320
    assert (c_build.work / "overlay.rgb").stat().st_size == 10 * 240 * 320 * 3


def test_benchmark_script_runs(c_build, onnx_model, tmp_path):
    """benchmarks/gstreamer_fps.py (the README's figures), at a toy size."""
    import json

    output = tmp_path / "fps.json"
    run([sys.executable, str(ROOT / "benchmarks" / "gstreamer_fps.py"), "--model",
         str(onnx_model), "--size", "64x80", "--frames", "3", "--rounds", "1", "--prefix",
         str(c_build.prefix), "-o", str(output)], ROOT, timeout=TIMEOUT,
        env={"PYTHONPATH": str(ROOT)})
    results = json.loads(output.read_text())
    assert results["labels_equal"] is True
    assert results["median_fps"]["gstreamer"] > 0 and results["median_fps"]["python"] > 0
    assert results["median_ratio"] > 0


def test_valgrind_short_runs(gst, tmp_path):
    """Under valgrind, with a tiny model: two elements (labels and overlay) behind a tee for
    three frames, then a frame size the model refuses. No memory error, nothing definitely
    lost. Suppressed: the library's one ONNX Runtime error (c/tests/onnxruntime.supp) and
    the dynamic loader's word-wise strncmp over run paths (c/gstreamer/tests/loader.supp)."""
    from test_c_library import tiny_model

    from isdnet_deploy.export.onnx_export import export_onnx

    if shutil.which("valgrind") is None:
        pytest.fail("valgrind not found; install it (apt-get install valgrind, as .ci/run does)")
    model = tmp_path / "tiny.onnx"
    export_onnx(tiny_model(), model, fast_pyramid=False, verify_size=(40, 48))
    both = (f"videotestsrc num-buffers=3 ! video/x-raw,width=64,height=48 ! videoconvert ! "
            f"tee name=t ! queue ! isdnetseg model={model} ! fakesink t. ! queue ! "
            f"isdnetseg model={model} output=overlay ! fakesink")
    too_small = (f"videotestsrc num-buffers=1 ! video/x-raw,width=20,height=20 ! videoconvert "
                 f"! isdnetseg model={model} ! fakesink")
    run([str(gst.driver), "60", both], tmp_path, env=gst.env)  # fills the registry
    options = ["--leak-check=full", "--error-exitcode=99", "--errors-for-leak-kinds=definite",
               f"--suppressions={ROOT / 'c' / 'tests' / 'onnxruntime.supp'}",
               f"--suppressions={ROOT / 'c' / 'gstreamer' / 'tests' / 'loader.supp'}"]
    for pipeline, status in ((both, 0), (too_small, 1)):
        result = run(["valgrind", *options, str(gst.driver), "600", pipeline], tmp_path,
                     check=False, timeout=900, env=gst.env)
        assert result.returncode == status, result.stderr[-3000:]
        assert "ERROR SUMMARY: 0 errors" in result.stderr
        assert "definitely lost: 0 bytes" in result.stderr or "no leaks are possible" in \
            result.stderr
    assert "Frames of width 20 and height 20" in result.stderr
