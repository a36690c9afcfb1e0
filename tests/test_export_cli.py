"""``isdnet-deploy export`` / ``inspect``: each bad input gives one line and writes nothing;
the happy paths print a report and a contract that match the file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner, Result
from onnx import TensorProto, helper

from isdnet_deploy.cli import main
from isdnet_deploy.contract import read_onnx_contract


def run(*args: object) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_line_error(result: Result, *fragments: str) -> str:
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # handled, no crash
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


def assert_usage_error(result: Result, *fragments: str) -> None:
    """A wrong command line: click's usage message, exit code 2, no traceback."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "Error:" in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr


@pytest.fixture(scope="module")
def exported(official_checkpoint, tmp_path_factory) -> tuple[Path, dict]:
    """One export through the CLI with --json, shared by the inspect tests."""
    path = tmp_path_factory.mktemp("cli") / "isdnet.onnx"
    result = run("export", official_checkpoint, "-o", path, "--pyramid", "external",
                 "--input", "uint8", "--verify-size", "98x130", "--json")
    assert result.exit_code == 0, result.output
    return path, json.loads(result.stdout)


def test_export_json_report(exported):
    path, report = exported
    assert path.is_file() and sorted(p.name for p in path.parent.iterdir()) == [path.name]
    assert report["path"] == str(path) and report["file_bytes"] == path.stat().st_size
    assert report["parity"]["passed"] is True and report["parity"]["size"] == [98, 130]
    assert report["parity"]["max_abs_diff"] <= report["parity"]["tolerance"]
    assert report["contract"]["pyramid"] == "external"
    assert report["contract"]["input_kind"] == "uint8"
    assert report["source"].startswith("checkpoint ")
    assert report["seconds"] > 0


def test_export_json_report_has_figures_per_consumer(exported):
    """By default every installed consumer verifies (the test extra installs OpenVINO)."""
    pytest.importorskip("openvino", reason="OpenVINO is not installed: pip install "
                                           "'isdnet-deploy[openvino]'")
    _, report = exported
    assert list(report["verification"]) == ["onnxruntime", "openvino"]
    for consumer, parity in report["verification"].items():
        assert parity["consumer"] == consumer and parity["passed"] is True
        assert parity["decided_agreement"] == 1.0 and parity["size"] == [98, 130]
    assert report["parity"] == report["verification"]["onnxruntime"]


def test_export_verifies_on_the_consumers_named(official_checkpoint, tmp_path):
    pytest.importorskip("openvino", reason="OpenVINO is not installed: pip install "
                                           "'isdnet-deploy[openvino]'")
    path = tmp_path / "ov.onnx"
    result = run("export", official_checkpoint, "-o", path, "--pyramid", "external",
                 "--size", "98x130", "--verify-on", "openvino")
    assert result.exit_code == 0, result.output
    assert "verified on: openvino (each against PyTorch)" in result.stdout
    assert "parity at 98x130 on openvino" in result.stdout and "PASSED" in result.stdout
    assert "on onnxruntime" not in result.stdout and "OpenVINO CPU" in result.stdout


def test_consumer_that_rejects_the_graph_is_named_and_nothing_written(
        monkeypatch, official_checkpoint, tmp_path):
    ov = pytest.importorskip("openvino", reason="OpenVINO is not installed: pip install "
                                                "'isdnet-deploy[openvino]'")

    def refuse(self, *args, **kwargs):
        raise RuntimeError("Exception from src/plugins/intel_cpu: [CPU] node X: shape\n"
                           "inference failed")

    monkeypatch.setattr(ov.Core, "compile_model", refuse)
    result = run("export", official_checkpoint, "-o", tmp_path / "m.onnx", "--pyramid",
                 "external", "--size", "98x130")
    assert_one_line_error(result, "openvino cannot open the graph", "[CPU] node X: shape "
                          "inference failed", "external pyramid, float in, logits out, 98x130",
                          "nothing written")
    assert list(tmp_path.iterdir()) == []


def test_verify_on_a_consumer_not_installed_is_one_line(monkeypatch, tmp_path):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "openvino" else real(name, *a))
    result = run("export", "-o", tmp_path / "m.onnx", "--verify-on", "onnxruntime,openvino")
    assert_one_line_error(result, "openvino is not installed",
                          "pip install 'isdnet-deploy[openvino]'")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("args", "fragment"), [
    (["--verify-on", "tensorrt"], "'tensorrt' is not an ONNX consumer"),
    (["--verify-on", ","], "is not an ONNX consumer"),
    (["--verify-on", "openvino", "--no-verify"], "give one of them"),
])
def test_bad_verify_on_is_a_usage_error(tmp_path, args, fragment):
    assert_usage_error(run("export", "-o", tmp_path / "m.onnx", *args), fragment)
    assert list(tmp_path.iterdir()) == []


def test_inspect_json_shows_contract_and_graph(exported):
    path, report = exported
    result = run("inspect", path, "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["contract"] == report["contract"]
    assert read_onnx_contract(onnx.load(path, load_external_data=False)).to_json() == \
        json.dumps(info["contract"])
    assert [(v["name"], v["dtype"]) for v in info["inputs"]] == [("image", "uint8"),
                                                                  ("residual", "float32")]
    assert info["inputs"][0]["shape"] == [1, "height", "width", 3]
    assert info["outputs"][0]["name"] == "logits"
    assert info["external_data"] == [] and info["nodes"] > 100
    assert result.stderr == ""


def test_inspect_human_readable(exported):
    path, _ = exported
    result = run("inspect", path)
    assert result.exit_code == 0, result.output
    out = result.stdout
    for fragment in ("contract (metadata key 'isdnet_deploy')", "pyramid", "external",
                     "input kind", "uint8", "deepglobe", "graph inputs:", "residual",
                     "[1, height, width, 3]", "graph outputs:", "weights embedded"):
        assert fragment in out


def test_export_human_report_static(official_checkpoint, tmp_path):
    path = tmp_path / "static.onnx"
    result = run("export", official_checkpoint, "-o", path, "--size", "130x98",
                 "--output-kind", "labels")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"wrote {path} (" in out and " MiB)" in out
    assert "static 130x98" in out and "output labels uint8" in out
    assert "parity at 130x98" in out and "PASSED" in out and "ONNX Runtime CPU" in out
    assert read_onnx_contract(onnx.load(path, load_external_data=False)).fixed_size == [130, 98]


def test_static_size_with_simplify_passes_its_own_verification(official_checkpoint, tmp_path):
    """The documented ``--size HxW --simplify`` combination: onnxslim folded the old fast
    pyramid's index arithmetic into values that failed verification (max |diff| 0.037 on
    these weights); the integer index form survives the folding."""
    path = tmp_path / "slim.onnx"
    result = run("export", official_checkpoint, "-o", path, "--size", "258x202", "--simplify")
    assert result.exit_code == 0, result.output
    assert "PASSED" in result.stdout and path.exists()


def test_export_without_checkpoint_warns(monkeypatch, official_checkpoint, tmp_path):
    from isdnet_deploy.model.checkpoint import load_model

    asked = []

    def fake_build_model(num_classes: int = 7, seed: int = 0):
        asked.append(num_classes)
        return load_model(official_checkpoint)  # as good as random and much quicker

    monkeypatch.setattr("isdnet_deploy.model.checkpoint.build_model", fake_build_model)
    path = tmp_path / "random.onnx"
    result = run("export", "-o", path, "--pyramid", "external", "--no-verify")
    assert result.exit_code == 0, result.output
    assert asked == [7]
    assert "WARNING" in result.stderr and "RANDOM weights" in result.stderr
    assert "NOT verified" in result.stdout and path.is_file()


def test_failed_verification_one_line_no_file(official_checkpoint, tmp_path):
    result = run("export", official_checkpoint, "-o", tmp_path / "m.onnx", "--pyramid",
                 "external", "--verify-size", "98x130", "--atol", "0", "--rtol", "0")
    assert_one_line_error(result, "disagrees with the PyTorch reference", "nothing written")
    assert list(tmp_path.iterdir()) == []


def test_old_spellings_still_work_with_a_deprecation_line(monkeypatch, official_checkpoint,
                                                         tmp_path):
    from isdnet_deploy.model.checkpoint import load_model

    monkeypatch.setattr("isdnet_deploy.model.checkpoint.build_model",
                        lambda num_classes=7, seed=0: load_model(official_checkpoint))
    path = tmp_path / "new" / "sub" / "m.onnx"  # missing folders are created
    result = run("export", "--out", path, "--output", "labels", "--no-verify")
    assert result.exit_code == 0, result.output
    assert "--out FILE is now -o/--output FILE" in result.stderr
    assert "--output labels is now --output-kind labels" in result.stderr
    assert read_onnx_contract(onnx.load(path, load_external_data=False)).output_kind == "labels"


def test_output_parent_is_a_file(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    result = run("export", "-o", blocker / "m.onnx")
    assert_one_line_error(result, str(blocker))
    assert list(tmp_path.iterdir()) == [blocker] and blocker.read_text() == "not a folder"


def test_output_directory_not_writable(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as root: directory permissions are not enforced "
                        "(test_output_parent_is_a_file covers an unusable directory)")
        result = run("export", "-o", locked / "m.onnx")
        assert_one_line_error(result, "not writable")
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o700)


def test_output_without_onnx_suffix(tmp_path):
    result = run("export", "-o", tmp_path / "model.pth")
    assert_one_line_error(result, "should end with .onnx")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, fragment", [
    (["--profile", "ade20k"], "'ade20k' is not one of"),
    (["--size", "130x98", "--dynamic"], "give one of them"),
    (["--size", "12x"], "is not HxW"),
    (["--size", "16x16"], "both sides >= 32"),
    (["--size", "130x98", "--verify-size", "98x130"], "only runs at that size"),
    (["--opset", "99"], "pick a lower --opset"),
])
def test_bad_options_are_usage_errors(tmp_path, args, fragment):
    result = run("export", "-o", tmp_path / "m.onnx", *args)
    assert_usage_error(result, fragment)
    assert list(tmp_path.iterdir()) == []


def test_checkpoint_missing(tmp_path):
    result = run("export", tmp_path / "absent.pth", "-o", tmp_path / "m.onnx")
    assert_one_line_error(result, "checkpoint not found")
    assert list(tmp_path.iterdir()) == []


def test_checkpoint_not_a_torch_file(tmp_path):
    notes = tmp_path / "notes.pth"
    notes.write_text("these are not weights\n")
    result = run("export", notes, "-o", tmp_path / "m.onnx")
    assert_one_line_error(result, "is not a PyTorch checkpoint")
    assert list(tmp_path.iterdir()) == [notes]


@pytest.mark.parametrize("content, fragment", [
    (b"name,value\n1,2\n", "is not a readable ONNX model"),
    (b"", "is not an ONNX model"),
])
def test_inspect_non_onnx_file(tmp_path, content, fragment):
    path = tmp_path / "model.onnx"
    path.write_bytes(content)
    assert_one_line_error(run("inspect", path), fragment)


def test_inspect_missing_file(tmp_path):
    assert_one_line_error(run("inspect", tmp_path / "nothing.onnx"), "file not found")


@pytest.fixture
def foreign_model(tmp_path) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "other", [x], [y])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(proto)
    path = tmp_path / "other.onnx"
    onnx.save(proto, path)
    return path


def test_inspect_foreign_onnx(foreign_model):
    result = run("inspect", foreign_model)
    assert_one_line_error(result, "has no isdnet-deploy contract", "'isdnet_deploy'")
    assert "graph inputs:" in result.stdout and "graph outputs:" in result.stdout
    assert "x  float32  [N, 3]" in result.stdout and "y  float32  [N, 3]" in result.stdout
    assert "contract (" not in result.stdout


def test_inspect_foreign_onnx_json(foreign_model):
    result = run("inspect", foreign_model, "--json")
    assert_one_line_error(result, "has no isdnet-deploy contract")
    info = json.loads(result.stdout)
    assert info["contract"] is None
    assert info["inputs"] == [{"name": "x", "dtype": "float32", "shape": ["N", 3]}]


def test_real_process_one_line(tmp_path):
    """Outside CliRunner: the installed entry point, its logging and its exit status."""
    path = tmp_path / "model.onnx"
    path.write_text("not onnx")
    proc = subprocess.run([sys.executable, "-m", "isdnet_deploy", "inspect", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "is not a readable ONNX model" in proc.stderr and proc.stdout == ""
