"""The benchmark, compare and demo commands end to end on tiny sizes, and their one-line
errors."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from isdnet_deploy.cli import main
from isdnet_deploy.runtime.registry import installed_consumers

TINY = "64x64"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def cli():
    return main


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    """Exports of the conftest model, which is the same random-weights model the word
    'reference' builds (same seed)."""
    from isdnet_deploy.export.onnx_export import export_onnx

    folder = tmp_path_factory.mktemp("cli")
    paths = {"graph": folder / "graph.onnx", "external": folder / "external.onnx"}
    export_onnx(model, paths["graph"], verify_size=(96, 128))
    export_onnx(model, paths["external"], pyramid="external", verify_size=(96, 128))
    return paths


def invoke(cli, args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_benchmark_writes_json_and_plot(cli, exported, official_checkpoint, tmp_path):
    out_json, out_png = tmp_path / "bench.json", tmp_path / "fps.png"
    result = invoke(cli, ["benchmark", exported["graph"], "--checkpoint", official_checkpoint,
                          "--size", TINY, "--warmup", 1, "--iters", 2, "--no-peak",
                          "--json", out_json, "--plot", out_png])
    assert result.exit_code == 0, result.output
    data = json.loads(out_json.read_text())
    names = [r["name"] for r in data["results"]]
    assert names == ["pytorch eager", "onnxruntime fp32"]
    for row in data["results"]:
        assert (row["warmup"], row["iters"], len(row["latencies"])) == (1, 2, 2)
        assert row["fps"] == pytest.approx(2 / sum(row["latencies"]))
    torch_row, ort_row = data["results"]
    assert ort_row["speedup"] == pytest.approx(ort_row["fps"] / torch_row["fps"])
    assert data["settings"]["size"] == [64, 64]
    assert data["settings"]["reference"] == str(official_checkpoint)
    assert data["settings"]["flops_per_forward"] > 0
    assert ort_row["gflops_per_s"] == pytest.approx(
        data["settings"]["flops_per_forward"] * ort_row["fps"] / 1e9)
    assert out_png.read_bytes().startswith(PNG_MAGIC)
    table = result.stdout
    assert "pytorch eager" in table and "onnxruntime fp32" in table
    assert "speed-up" in table


def test_benchmark_external_pyramid_interleave_and_ort_profile(cli, exported):
    result = invoke(cli, ["benchmark", exported["external"], exported["graph"], "--no-reference",
                          "--include-pyramid", "--size", TINY, "--warmup", 0, "--iters", 1,
                          "--interleave", "--rounds", 2, "--no-peak", "--no-flops",
                          "--ort-profile"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "onnxruntime fp32 (pyramid outside)" in out
    assert "onnxruntime fp32 (+OpenCV pyramid)" in out
    assert "the OpenCV pyramid runs outside" in out
    assert "interleaved: 2 rounds" in out
    assert out.count("top op types:") == 2
    assert "Conv" in out


def test_compare_random_inputs(cli, exported, tmp_path):
    heatmap, out_json = tmp_path / "diff.png", tmp_path / "compare.json"
    result = invoke(cli, ["compare", "reference", exported["graph"], "--random", 1,
                          "--size", "64x96", "--heatmap", heatmap, "--json", out_json])
    assert result.exit_code == 0, result.output
    report = json.loads(out_json.read_text())
    assert report["verified_on"] == list(installed_consumers())  # the default
    assert [c["backend"] for c in report["candidates"]] == report["verified_on"]
    for index, cand in enumerate(report["candidates"]):
        assert cand["name"] == f"graph.onnx ({cand['backend']} fp32)"
        assert cand["pixels"] == 64 * 96
        assert cand["agreement"] >= 0.999
        assert cand["logits"]["max_abs_diff"] < 1e-3 * max(
            1.0, cand["logits"]["reference_max_abs"])
        assert cand["logits"]["min_cosine_similarity"] > 0.9999
        one = len(report["candidates"]) == 1
        path = heatmap if one else heatmap.with_name(f"diff-{index + 1}-graph_"
                                                     f"{cand['backend']}.png")
        picture = cv2.imread(str(path))
        assert picture is not None and picture.shape == (64, 96, 3)
    assert "argmax agreement" in result.stdout and "graph.onnx" in result.stdout
    assert f".onnx candidates run on: {', '.join(report['verified_on'])}" in result.stdout


def test_compare_on_the_consumers_named(cli, exported, tmp_path):
    pytest.importorskip("openvino", reason="OpenVINO is not installed: pip install "
                                           "'isdnet-deploy[openvino]'")
    out_json = tmp_path / "compare.json"
    result = invoke(cli, ["compare", exported["graph"], exported["external"], "--random", 1,
                          "--size", "64x64", "--verify-on", "openvino", "--json", out_json])
    assert result.exit_code == 0, result.output
    report = json.loads(out_json.read_text())
    # the reference runs on the first consumer named, each candidate on each
    assert report["reference"] == "graph.onnx (openvino fp32)"
    (cand,) = report["candidates"]
    assert cand["name"] == "external.onnx (openvino fp32)" and cand["agreement"] >= 0.999


@pytest.mark.parametrize(("args", "fragment"), [
    (["--verify-on", "tvm"], "'tvm' is not an ONNX consumer"),
    (["--verify-on", "openvino", "--device", "cuda"], "OpenVINO runs on the CPU"),
])
def test_compare_bad_verify_on_is_a_usage_error(cli, exported, args, fragment):
    result = invoke(cli, ["compare", "reference", exported["graph"], *args])
    assert result.exit_code == 2 and fragment in result.stderr, result.output


def test_compare_with_ground_truth(cli, exported, tmp_path):
    from isdnet_deploy.data.samples import generate_sample_set

    generate_sample_set(tmp_path / "set", "deepglobe", count=1, size=(80, 80))
    out_json = tmp_path / "compare.json"
    result = invoke(cli, ["compare", exported["graph"], exported["external"],
                          "--images", tmp_path / "set", "--labels", tmp_path / "set",
                          "--json", out_json, "--verify-on", "onnxruntime"])
    assert result.exit_code == 0, result.output
    # an artifact as reference needs no torch model; the random exports are warned once
    (warning,) = [line for line in result.stderr.splitlines() if "RANDOM" in line]
    assert "graph.onnx" in warning and "external.onnx" in warning
    assert "PyTorch reference" not in warning
    accuracy = json.loads(out_json.read_text())["accuracy"]
    assert len(accuracy["backends"]) == 2
    (delta,) = accuracy["delta_vs_reference"].values()
    assert abs(delta["miou"]) < 0.01
    assert "unknown" not in next(iter(accuracy["backends"].values()))["evaluated"]
    assert "mIoU" in result.stdout and "class IoU" in result.stdout


def _cuda_provider() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


@pytest.mark.parametrize(("args", "message"), [
    (["benchmark", "{graph}", "--device", "cuda", "--json", "{tmp}/never.json"],
     "onnxruntime-gpu"),
    (["benchmark", "{tmp}/model.txt"], "cannot tell what"),
    (["compare", "reference", "{tmp}/model.txt"], "cannot tell what"),
    (["benchmark", "--no-reference"], "nothing to benchmark"),
    (["benchmark", "{graph}", "--json", "{tmp}/model.txt/out.json"], "is a file, not a folder"),
])
def test_bad_input_is_one_line(cli, exported, tmp_path, args, message):
    if "cuda" in args and _cuda_provider():
        pytest.skip("this onnxruntime has a CUDA provider; the test checks the error without one")
    (tmp_path / "model.txt").write_text("not a model")
    args = [a.format(graph=exported["graph"], tmp=tmp_path) for a in args]
    result = invoke(cli, args)
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert message in lines[0]
    assert "Traceback" not in result.output
    assert not (tmp_path / "never.json").exists()


def test_demo_end_to_end(cli, tmp_path):
    out = tmp_path / "demo"
    result = invoke(cli, ["demo", "--size", TINY, "--warmup", 1, "--iters", 2, "--no-peak",
                          "-o", out])
    assert result.exit_code == 0, result.output
    assert (out / "isdnet_deepglobe.onnx").stat().st_size > 1_000_000
    data = json.loads((out / "benchmark.json").read_text())
    assert [r["name"] for r in data["results"]] == ["pytorch eager", "onnxruntime fp32"]
    assert [r["iters"] for r in data["results"]] == [2, 2]
    assert data["settings"]["size"] == [64, 64]
    assert data["settings"]["export"]["parity"]["passed"] is True
    assert (out / "fps.png").read_bytes().startswith(PNG_MAGIC)
    assert "RANDOM weights" in result.stderr
    assert "[2/3] exported" in result.stdout and "x at 64x64" in result.stdout
    speedup = data["results"][1]["speedup"]
    assert f"{speedup:.2f}x at 64x64" in result.stdout
    assert np.isfinite(speedup)
