"""One set of command-line conventions, held by every command: output checks before any
work, exit codes (usage 2, failure 1, Ctrl-C 130, SIGTERM 143), one --json spelling,
--no-progress, masks never taken for images, conversions and random weights announced,
CLI advice in the CLI, and report wording that says what was measured."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner, Result

from isdnet_deploy.benchmark import report
from isdnet_deploy.benchmark.protocol import MethodResult, RewarmInfo
from isdnet_deploy.cli import main
from isdnet_deploy.data.samples import generate_sample_set, photo_like


def invoke(*args: object) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def cli_process(*args: object, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "isdnet_deploy", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def one_line_error(result: Result | subprocess.CompletedProcess, *fragments: str) -> str:
    code = result.exit_code if isinstance(result, Result) else result.returncode
    assert code == 1, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("samples")
    generate_sample_set(folder, "deepglobe", count=2, size=(80, 80))
    return folder


# --- every output location is checked before the work starts ------------------------------

def _read_only_run(args: list[object], cwd: Path) -> subprocess.CompletedProcess:
    """Run the CLI as root without CAP_DAC_OVERRIDE, so a 0o500 folder really is read-only
    (root otherwise writes anywhere); as another user, permissions apply anyway."""
    command = [sys.executable, "-m", "isdnet_deploy", *map(str, args)]
    if os.geteuid() == 0:
        command = ["setpriv", "--inh-caps=-dac_override", "--bounding-set=-dac_override",
                   *command]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("args", [
    ["quantize", "{model}", "--precision", "fp16", "-o", "{ro}/m.fp16.onnx"],
    ["quantize", "{model}", "--precision", "fp16", "--json", "{ro}/report.json"],
    ["benchmark", "{model}", "--size", "64", "--json", "{ro}/bench.json"],
    ["benchmark", "{model}", "--size", "64", "--plot", "{ro}/fps.png"],
    ["compare", "{model}", "{model}", "--json", "{ro}/compare.json"],
    ["evaluate", "{model}", "--images", "{samples}", "--json", "{ro}/eval.json"],
    ["infer", "{model}", "{samples}", "-o", "{ro}/sub"],
    ["samples", "-o", "{ro}/samples"],
    ["demo", "-o", "{ro}/demo"],
    ["export", "-o", "{ro}/m.onnx"],
    ["deploy", "--recipe", "deepglobe-onnxruntime-cpu-fp32", "-o", "{ro}/deployed"],
    ["deploy", "--recipe", "deepglobe-onnxruntime-cpu-fp32", "-o", "{tmp}/deployed", "--json",
     "{ro}/manifest.json"],
])
def test_unwritable_output_is_one_line_before_any_work(args, onnx_model, samples, tmp_path):
    if os.geteuid() == 0 and subprocess.run(["setpriv", "--version"],
                                            capture_output=True).returncode != 0:
        pytest.skip("running as root without setpriv: a read-only folder cannot be made")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        args = [a.format(model=onnx_model, ro=ro, samples=samples, tmp=tmp_path) for a in args]
        started = time.perf_counter()
        done = _read_only_run(args, tmp_path)
        one_line_error(done, "not writable", str(ro))
        assert time.perf_counter() - started < 60  # failed before benchmarking or exporting
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o700)


def test_missing_output_folders_are_created(samples, tmp_path):
    result = invoke("samples", "-o", tmp_path / "a" / "b", "--count", 1, "--size", 40)
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "a" / "b").iterdir())) == 2


# --- exit codes ---------------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ["export", "-o", "m.onnx", "--size", "abc"],
    ["benchmark", "--size", "abc"],
    ["compare", "reference", "m.onnx", "--size", "abc"],
    ["infer", "m.onnx", "x.png", "-o", "out", "--tile", "abc"],
    ["samples", "-o", "s", "--size", "abc"],
    ["quantize", "m.onnx", "--precision", "fp16", "--size", "abc"],
    ["demo", "--size", "abc"],
    ["benchmark", "--device", "gpu"],
    ["infer", "m.onnx", "x.png", "-o", "out", "--device", "gpu"],
    ["evaluate", "m.onnx", "--images", ".", "--profile", "ade20k"],
    ["deploy", "--recipe", "deepglobe-onnxruntime-cpu-fp32", "-o", "out", "--size", "abc"],
])
def test_usage_errors_exit_2(args, tmp_path):
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert "Error: Invalid value" in result.stderr and "Traceback" not in result.output


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupted_export_exits_conventionally_and_leaves_no_file(signum, code, tmp_path):
    process = cli_process("export", "-o", tmp_path / "m.onnx", "--no-verify", cwd=tmp_path)
    time.sleep(4)  # importing torch and building the model take longer than this
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == code, stderr
    assert "Traceback" not in stderr and "nothing half-written" in stderr
    assert list(tmp_path.iterdir()) == []


# --- one --json spelling, --no-progress ---------------------------------------------------

COMMANDS = ("export", "inspect", "quantize", "benchmark", "compare", "evaluate")


@pytest.mark.parametrize("command", COMMANDS)
def test_every_json_option_is_file_or_stdout(command):
    result = invoke(command, "--help")
    assert "--json FILE|-" in result.output


@pytest.mark.parametrize("command", ("export", "quantize", "build", "benchmark", "compare",
                                     "infer", "evaluate", "demo", "deploy"))
def test_every_long_command_has_no_progress(command):
    assert "--no-progress" in invoke(command, "--help").output


def test_bare_json_prints_to_stdout(onnx_model):
    result = invoke("inspect", onnx_model, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["contract"]["format"] == "isdnet-deploy/1"
    assert json.loads(invoke("inspect", onnx_model, "--json", "-").stdout) == json.loads(
        result.stdout)


# --- inputs: masks, conversions, sizes, random weights ------------------------------------

def test_infer_skips_masks_in_a_folder_and_says_so(onnx_model, samples, tmp_path):
    result = invoke("infer", onnx_model, samples, "-o", tmp_path / "out", "--no-progress")
    assert result.exit_code == 0, result.output
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["synth000_sat_labels.png", "synth001_sat_labels.png"]
    assert "skipped 2 mask file(s)" in result.stdout and "synth000_mask.png" in result.stdout


def test_grayscale_and_rgba_images_are_converted_with_a_note(onnx_model, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    gray = photo_like(64, 64, seed=1)[:, :, 0]
    cv2.imwrite(str(folder / "gray.png"), gray)
    rgba = np.dstack([photo_like(64, 64, seed=2), np.full((64, 64), 255, np.uint8)])
    cv2.imwrite(str(folder / "rgba.png"), rgba)
    result = invoke("infer", onnx_model, folder, "-o", tmp_path / "out", "--no-progress")
    assert result.exit_code == 0, result.output
    assert "2 image(s) were converted to 3-channel RGB" in result.stdout
    assert "gray.png: grayscale" in result.stdout and "rgba.png: RGBA, alpha dropped" in \
        result.stdout


def test_too_small_names_the_images_own_size(onnx_model, tmp_path):
    cv2.imwrite(str(tmp_path / "tiny.png"), photo_like(36, 36))
    result = invoke("infer", onnx_model, tmp_path / "tiny.png", "-o", tmp_path / "out")
    assert result.exit_code == 1 and "Traceback" not in result.output
    (line,) = [line for line in result.stderr.splitlines() if "tiny.png:" in line]
    for fragment in ("image is 36x36", "makes it 29x29", "at least 40x40", "--no-scale"):
        assert fragment in line
    assert "scale=False" not in line


def test_random_weights_are_warned_once_wherever_used(onnx_model, samples, tmp_path):
    result = invoke("infer", onnx_model, samples, "-o", tmp_path / "out", "--no-progress")
    assert result.stderr.count("RANDOM weights") == 1 and onnx_model.name in result.stderr
    result = invoke("evaluate", "reference", onnx_model, "--images", samples, "--no-progress")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if "RANDOM" in line]
    assert len(warnings) == 1 and onnx_model.name in warnings[0] and "reference" in warnings[0]


def test_cli_advice_is_for_the_cli(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "foreign",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
              tmp_path / "foreign.onnx")
    cv2.imwrite(str(tmp_path / "a.png"), photo_like(64, 64))
    line = one_line_error(invoke("infer", tmp_path / "foreign.onnx", tmp_path / "a.png", "-o",
                                 tmp_path / "out"), "isdnet-deploy export")
    assert "contract=Contract" not in line


# --- report wording -----------------------------------------------------------------------

def _result(name: str, fps: float, percent: float | None = None, rewarm=None) -> MethodResult:
    return MethodResult(name=name, device="cpu", fps=fps, total_s=1 / fps, warmup=1, iters=1,
                        latencies=[1 / fps], mean_ms=1e3 / fps, median_ms=1e3 / fps,
                        min_ms=1e3 / fps, max_ms=1e3 / fps, p90_ms=1e3 / fps, p99_ms=1e3 / fps,
                        percent_of_peak=percent, rewarm=rewarm, speedup=fps / 2.21)


def test_rewarm_line_says_what_was_measured_and_the_target():
    info = RewarmInfo(reference="pytorch eager", target_fps=2.21, achieved_fps=1.26,
                      came_back=False, tries=3, tolerance=0.1, fps_per_try=[1.55, 1.18, 1.26])
    table = report.format_table([_result("pytorch eager", 2.21), _result("ort", 4.0,
                                                                         rewarm=info)])
    assert ("pytorch eager did NOT come back: its first measurement was 2.21 FPS, 3 re-warm "
            "runs gave 1.55, 1.18, 1.26 FPS (needed within ±10%)") in table
    assert "ort's speed-up is unreliable" in table
    assert report.unsteady([_result("a", 1.0), _result("b", 1.0, rewarm=info)]) == ["b"]


def test_percent_of_peak_above_100_is_explained():
    table = report.format_table([_result("fp32", 1.0, 84.0), _result("int8", 2.0, 166.0)])
    assert "% of peak above 100 (int8)" in table
    assert "% of peak above 100" not in report.format_table([_result("fp32", 1.0, 84.0)])


def test_chart_shows_fps_the_subtitle_and_the_unsteady_caveat():
    info = RewarmInfo("ref", 2.0, 1.0, False, 3, 0.1, [1.0, 1.0, 1.0])
    figure = report.fps_figure([_result("ref", 2.0), _result("ort", 4.0, rewarm=info)],
                               "ISDNet 64x64, random weights", "Some CPU, 2 logical cores")
    figure.canvas.draw()  # tick labels exist once drawn
    texts = [t.get_text() for t in figure.findobj(lambda o: hasattr(o, "get_text"))]
    assert any("4.00 FPS" in t for t in texts) and any("2.00 FPS" in t for t in texts)
    assert any("random weights" in t and "Some CPU" in t for t in texts)
    assert any("speed-up unreliable" in t for t in texts)
    assert any(t.endswith("(†)") for t in texts)
