"""``isdnet-deploy deploy``: every shipped recipe run end to end at 64x64, the CPU ones for
real and the TensorRT ones against the TensorRT stand-ins (``trt_standins``); the manifest
tells the truth about the folder; a failed step leaves no manifest and the rerun resumes."""

from __future__ import annotations

import hashlib
import json
import shlex
import sys
from pathlib import Path

import pytest
from trt_standins import TRT10, FakeCuda, fake_tensorrt

from isdnet_deploy.deploy.chain import JOURNAL, MANIFEST, Journal, sha256_file
from isdnet_deploy.errors import IsdnetError
from isdnet_deploy.profiles import PROFILES
from isdnet_deploy.runtime import tensorrt_support as support

# A quick run: every size 64x64, one timed forward, two verification inputs, few synthetic
# calibration images.
QUICK = ("--size", "64x64", "--set", "benchmark.warmup=0", "--set", "benchmark.iters=1",
         "--set", "verify.inputs=2", "--set", "precision.synthetic_images=4", "--no-progress")
# The shipped gates (0.98-0.99 agreement with FP32) are for trained weights at the paper's
# sizes; random weights at 64x64 agree less (measured: FP16 71%, INT8 87%), so these runs
# lower the gate.
NO_GATE = ("--set", "precision.min_agreement=0")
CLASSIFIER = ("refine_head.conv_seg.conv_out.weight", "refine_head.conv_seg.conv_out.bias")


@pytest.fixture(scope="module")
def checkpoints(model, tmp_path_factory) -> dict[str, Path]:
    """A checkpoint per profile from the session's random-weight model, its classifier rows
    repeated (plus a little seeded noise, so no two classes tie) to the profile's class
    count: building a random model per class count would take ~15 s each."""
    import torch

    folder = tmp_path_factory.mktemp("deploy-checkpoints")
    state = model.state_dict()
    generator = torch.Generator().manual_seed(0)
    paths = {}
    for profile in PROFILES.values():
        rows = torch.arange(profile.num_classes) % model.num_classes
        derived = dict(state)
        for key in CLASSIFIER:
            picked = state[key][rows].clone()
            derived[key] = picked + 0.05 * torch.randn(picked.shape, generator=generator)
        paths[profile.name] = folder / f"{profile.name}.pth"
        torch.save(derived, paths[profile.name])
    return paths


def install_tensorrt(monkeypatch, classes: int = 7):
    """The TensorRT 10 stand-in importable as ``tensorrt`` (its engines output ``classes``
    logits), cuda-python's on one fake GPU."""
    cuda = FakeCuda()
    trt = fake_tensorrt(TRT10, cuda, classes=classes)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(support, "import_cudart", lambda: cuda)
    return trt


def deploy(cli, checkpoint: Path, recipe: str, folder: Path, *extra: str):
    return cli("deploy", checkpoint, "--recipe", recipe, "-o", folder, *QUICK, *extra)


def finished(result, folder: Path) -> dict:
    """The manifest of a successful run, checked against the folder it describes."""
    assert result.exit_code == 0, result.output
    manifest = json.loads((folder / MANIFEST).read_text())
    for artifact in manifest["artifacts"]:
        data = (folder / artifact["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == artifact["sha256"]
        assert len(data) == artifact["bytes"]
    steps = manifest["steps"]
    assert list(steps) == ["export", "precision", "engine", "benchmark"]
    assert steps["export"]["parity"]["passed"]
    assert manifest["recipe"]["resolved"]["verify"]["size"] == "64x64"
    assert manifest["machine"]["packages"]["onnxruntime"]
    assert manifest["command"].startswith("isdnet-deploy deploy ")
    reference, artifact = steps["benchmark"]["methods"]
    assert reference["name"] == "pytorch eager" and artifact["fps"] > 0
    return manifest


def files(manifest: dict) -> dict[str, str]:
    return {a["file"]: a["step"] for a in manifest["artifacts"]}


# --- CPU recipes, for real ------------------------------------------------------------------

def test_cpu_fp32_recipe_and_its_rerun_command(cli, checkpoints, tmp_path) -> None:
    out = tmp_path / "fp32"
    manifest = finished(deploy(cli, checkpoints["deepglobe"], "deepglobe-onnxruntime-cpu-fp32",
                               out), out)
    assert files(manifest) == {"model.onnx": "export"}
    steps = manifest["steps"]
    assert steps["precision"]["status"] == steps["engine"]["status"] == "not asked"
    assert steps["benchmark"]["methods"][1]["name"] == "onnxruntime fp32"
    parity = steps["benchmark"]["parity_with_pytorch"]  # the final artifact, on its own input
    assert parity["decided_agreement"] == 1.0 and parity["max_abs_diff"] < 1e-3
    assert manifest["weights"]["sha256"] == sha256_file(checkpoints["deepglobe"])

    words = shlex.split(manifest["command"])  # the recorded command reruns the deployment
    again = cli(*words[1:], "--no-progress")
    assert again.exit_code == 0, again.output
    assert again.output.count("reused from the last run") == 2  # export and benchmark
    assert json.loads((out / MANIFEST).read_text())["artifacts"] == manifest["artifacts"]


def test_c_embedding_recipe(cli, checkpoints, tmp_path) -> None:
    from isdnet_deploy import runtime

    out = tmp_path / "embed"
    manifest = finished(deploy(cli, checkpoints["deepglobe"], "deepglobe-c-embedding", out),
                        out)
    with runtime.load(out / "model.onnx") as segmenter:
        contract = segmenter.contract
    assert (contract.input_kind, contract.output_kind, contract.output_resize) == (
        "uint8", "labels", "graph")
    assert contract.outputs[0].dtype == "uint8"
    assert manifest["steps"]["export"]["parity"]["max_abs_diff"] is None  # judged on labels


def test_int8_recipe_resumes_after_a_failure_in_the_precision_step(
        cli, checkpoints, tmp_path, monkeypatch) -> None:
    from isdnet_deploy.engine import int8
    from isdnet_deploy.export import onnx_export

    def broken(*args, **kwargs):
        raise IsdnetError("injected failure: calibration broke")

    out = tmp_path / "int8"
    args = (cli, checkpoints["deepglobe"], "deepglobe-onnxruntime-cpu-int8", out, *NO_GATE)
    with monkeypatch.context() as patch:
        patch.setattr(int8, "quantize_int8", broken)
        failed = deploy(*args)
    assert failed.exit_code == 1
    assert failed.output.strip().splitlines()[-1] == (
        "error: deploy step precision failed: injected failure: calibration broke; no "
        "manifest was written; rerunning the same command reuses export")
    assert not (out / MANIFEST).exists()
    journal = json.loads((out / JOURNAL).read_text())
    assert list(journal["steps"]) == ["export"]
    exported = sha256_file(out / "model.onnx")
    assert journal["steps"]["export"]["artifacts"] == {"model.onnx": exported}

    exports = []
    real_export = onnx_export.export_onnx
    monkeypatch.setattr(onnx_export, "export_onnx",
                        lambda *a, **k: exports.append(a) or real_export(*a, **k))
    resumed = deploy(*args)
    manifest = finished(resumed, out)
    assert exports == [] and "export: reused from the last run" in resumed.output
    assert files(manifest) == {"model.onnx": "export", "model.int8.onnx": "precision"}
    assert sha256_file(out / "model.onnx") == exported
    precision = manifest["steps"]["precision"]
    assert precision["status"] == "ran" and precision["precision"] == "int8"
    assert 0 < precision["agreement"] <= 1 and precision["num_verify"] == 2
    assert any("synthetic" in note for note in precision["warnings"])  # no --calib given
    assert "WARNING: no calibration images given" in resumed.output


def test_without_a_checkpoint_random_weights_are_warned_when_work_starts(
        cli, tmp_path, monkeypatch) -> None:
    from isdnet_deploy.model import checkpoint

    built = []

    def build_model(num_classes):
        built.append(num_classes)
        raise IsdnetError("stopped here")

    monkeypatch.setattr(checkpoint, "build_model", build_model)
    empty = tmp_path / "empty"
    empty.mkdir()
    refused = cli("deploy", "--recipe", "inria-tensorrt-fp16", "-o", tmp_path / "a",
                  "--calib", empty)
    assert refused.exit_code == 1 and "RANDOM" not in refused.output  # inputs first
    assert "holds no images" in refused.output and built == []
    started = cli("deploy", "--recipe", "inria-tensorrt-fp16", "-o", tmp_path / "b")
    assert started.exit_code == 1 and built == [2]  # Inria's class count
    lines = started.output.strip().splitlines()
    assert lines[0].startswith("WARNING: no CHECKPOINT given: deploying RANDOM weights")
    assert lines[-1] == ("error: deploy step export failed: stopped here; no manifest was "
                         "written")


def test_journal_reuses_nothing_whose_file_changed(tmp_path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"exported")
    journal = Journal(tmp_path)
    journal.record("export", {"fingerprint": "f", "artifacts": {
        "model.onnx": sha256_file(tmp_path / "model.onnx")}, "result": {}, "seconds": 1.0})
    assert Journal(tmp_path).reusable("export", "f") is not None
    assert Journal(tmp_path).reusable("export", "other settings") is None
    (tmp_path / "model.onnx").write_bytes(b"exported, then edited")
    assert Journal(tmp_path).reusable("export", "f") is None
    (tmp_path / JOURNAL).write_text("{not json")
    assert Journal(tmp_path).steps == {}


# --- TensorRT recipes, against the stand-ins ----------------------------------------------

def built_engine(trt, manifest: dict, mode: str) -> dict:
    """The engine step as the stand-in saw it: built strongly typed from the ONNX the
    precision step wrote, with the 64x64 profile."""
    engine = manifest["steps"]["engine"]
    assert engine["status"] == "ran" and engine["precision"] == mode
    assert files(manifest) == {"model.onnx": "export", f"model.{mode}.onnx": "precision",
                               "model.engine": "engine", "model.engine.json": "engine"}
    (parsed,) = [c for c in trt.calls if c[0] == "parse_from_file"]
    assert Path(parsed[1]).name == f"model.{mode}.onnx" and parsed[2] == mode
    (build,) = [c for c in trt.calls if c[0] == "build_serialized_network"]
    assert build[2] is True  # strongly typed: the graph fixes each layer's precision
    shapes = [c for c in trt.calls if c[0] == "set_shape"]
    assert shapes == [("set_shape", "image", [1, 3, 64, 64], [1, 3, 64, 64], [1, 3, 64, 64])]
    bench = manifest["steps"]["benchmark"]
    assert bench["artifact"] == "model.engine"
    assert bench["methods"][1]["name"].startswith("tensorrt ")
    # The stand-in engine computes channel sums, not ISDNet: only the figure's presence.
    assert 0 <= bench["parity_with_pytorch"]["agreement"] <= 1
    return engine


@pytest.mark.parametrize("recipe, profile, mode", [
    ("deepglobe-tensorrt-int8", "deepglobe", "int8"),
    ("inria-tensorrt-fp16", "inria", "fp16"),
    ("cityscapes-tensorrt-fp16", "cityscapes", "fp16"),
])
def test_tensorrt_recipe_with_the_stand_in(cli, checkpoints, tmp_path, monkeypatch, recipe,
                                           profile, mode) -> None:
    tensorrt = install_tensorrt(monkeypatch, PROFILES[profile].num_classes)
    out = tmp_path / recipe
    manifest = finished(deploy(cli, checkpoints[profile], recipe, out, *NO_GATE), out)
    built_engine(tensorrt, manifest, mode)
    sidecar = json.loads((out / "model.engine.json").read_text())
    assert sidecar["contract"]["profile"] == profile
    assert sidecar["contract"]["precision"] == mode


def test_tensorrt_recipe_without_tensorrt_then_on_a_tensorrt_machine(
        cli, checkpoints, tmp_path, monkeypatch) -> None:
    """Without TensorRT the engine step is skipped, said so, and the FP16 ONNX is timed on
    the CPU; the same command where TensorRT imports reuses export and precision, builds the
    engine and times it."""
    import torch

    out = tmp_path / "fp16"
    args = (cli, checkpoints["deepglobe"], "deepglobe-tensorrt-fp16", out, *NO_GATE)
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "tensorrt", None)
        without = deploy(*args)
    manifest = finished(without, out)
    assert (f"engine step skipped: TensorRT not installed; the ONNX in {out} is ready for "
            "`isdnet-deploy build`") in without.output
    assert manifest["steps"]["engine"]["status"] == "skipped"
    assert manifest["steps"]["benchmark"]["artifact"] == "model.fp16.onnx"
    assert set(files(manifest)) == {"model.onnx", "model.fp16.onnx"}

    trt = install_tensorrt(monkeypatch)
    with_trt = deploy(*args)
    manifest = finished(with_trt, out)
    assert with_trt.output.count("reused from the last run") == 2  # export, precision
    built_engine(trt, manifest, "fp16")
    bench = manifest["steps"]["benchmark"]
    if not torch.cuda.is_available():
        assert bench["reference_device"] == "cpu"
        assert "compares two devices" in bench["note"] and "WARNING: this torch has no CUDA" \
            in with_trt.output
