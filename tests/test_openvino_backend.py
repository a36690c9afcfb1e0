"""The OpenVINO backend beyond the shared conformance cases: the same labels as ONNX Runtime,
one compiled model for every size, bf16 only where the CPU has it, and one-line errors
(OpenVINO missing, a GPU asked for, an unknown precision)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from isdnet_deploy import runtime
from isdnet_deploy.errors import IsdnetError, MissingDependencyError
from isdnet_deploy.export.onnx_export import sample_inputs
from isdnet_deploy.metrics.parity import decided_agreement

ov = pytest.importorskip("openvino", reason="OpenVINO is not installed: pip install "
                                            "'isdnet-deploy[openvino]'")
from isdnet_deploy.runtime.openvino_backend import OpenVinoBackend, native_bf16  # noqa: E402

NATIVE_BF16 = native_bf16(ov.Core())


def test_registered_but_never_chosen_by_auto() -> None:
    assert "openvino" in runtime.BACKENDS
    assert runtime.backend_for("model.onnx") == "onnxruntime"  # ONNX Runtime stays the default
    assert runtime.backend_for("model.onnx", "openvino") == "openvino"


def test_one_compiled_model_runs_every_size_like_onnx_runtime(monkeypatch, onnx_model) -> None:
    compiled = []
    real = ov.Core.compile_model

    def counting(self, *args, **kwargs):
        compiled.append(args[1:])
        return real(self, *args, **kwargs)

    monkeypatch.setattr(ov.Core, "compile_model", counting)
    with runtime.open_backend(onnx_model, "openvino") as opened, \
            runtime.open_backend(onnx_model) as reference:
        contract = opened.contract
        for size in [(64, 96), (130, 98), (97, 161)]:  # odd sides, both orientations
            feeds, _ = sample_inputs(contract, size, seed=3)
            got = opened.run(feeds)["logits"]
            want = reference.run(feeds)["logits"]
            assert got.shape == want.shape == (1, contract.num_classes, *size)
            tolerance = 2 * (1e-4 + 1e-5 * float(np.abs(want).max()))
            agreement, _ = decided_agreement(want, got.argmax(axis=1)[0], tolerance)
            assert agreement == 1.0 and np.abs(got - want).max() <= tolerance, size
    assert compiled == [("CPU", {"INFERENCE_PRECISION_HINT": "f32",
                                 "PERFORMANCE_HINT": "LATENCY"})]


def test_runtime_load_predicts_and_fills_caller_buffers(onnx_model) -> None:
    from isdnet_deploy.data.samples import photo_like

    image = photo_like(120, 90, seed=4)
    with runtime.load(onnx_model, backend="openvino", threads=1) as seg, \
            runtime.load(onnx_model) as reference:
        assert seg.backend.name == "openvino" and seg.backend.threads == 1
        assert seg.backend.compiled.get_property("INFERENCE_NUM_THREADS") == 1
        labels = seg.predict(image)
        assert labels.shape == (120, 90) and (labels == reference.predict(image)).mean() > 0.999
        buffer = np.empty((120, 90), np.uint8)
        seg.predict(image, out=buffer)
        assert (buffer == labels).all()


@pytest.mark.skipif(NATIVE_BF16, reason="this CPU has native BF16: nothing to refuse")
def test_bf16_without_native_bf16_is_refused_not_silently_f32(onnx_model) -> None:
    with pytest.raises(IsdnetError) as info:
        runtime.open_backend(onnx_model, "openvino", precision="bf16")
    assert "no native BF16 (AVX-512 BF16 or AMX), so OpenVINO would run f32 instead" in str(
        info.value)
    assert "\n" not in str(info.value) and "precision='f32'" in str(info.value)
    assert "precision=" not in info.value.for_cli()


@pytest.mark.skipif(not NATIVE_BF16, reason="this CPU has no native BF16 (AVX-512 BF16 or "
                                            "AMX): bf16 is refused here, tested above")
def test_bf16_where_native_runs_in_bf16_close_to_f32(onnx_model) -> None:
    with runtime.open_backend(onnx_model, "openvino", precision="bf16") as bf16, \
            runtime.open_backend(onnx_model, "openvino") as f32:
        assert bf16.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name() == "bf16"
        feeds, _ = sample_inputs(bf16.contract, (130, 98), seed=2)
        low, full = bf16.run(feeds)["logits"], f32.run(feeds)["logits"]
        assert (low.argmax(axis=1) == full.argmax(axis=1)).mean() >= 0.95  # random weights


@pytest.mark.parametrize(("options", "message"), [
    ({"precision": "fp16"}, "unknown OpenVINO precision 'fp16'; choose one of: f32, bf16"),
    ({"device": "cuda"}, "the OpenVINO backend runs on the CPU"),
])
def test_impossible_options_are_one_line(onnx_model, options, message) -> None:
    with pytest.raises(IsdnetError, match=message):
        runtime.open_backend(onnx_model, "openvino", **options)


def test_not_onnx_is_one_line(tmp_path) -> None:
    path = tmp_path / "garbage.onnx"
    path.write_bytes(b"\x08\x07not an onnx file at all")
    with pytest.raises(IsdnetError) as info:
        runtime.open_backend(path, "openvino")
    assert "\n" not in str(info.value) and "Traceback" not in str(info.value)


def test_openvino_missing_says_how_to_install(monkeypatch, onnx_model) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now fails
    with pytest.raises(MissingDependencyError) as info:
        runtime.open_backend(onnx_model, "openvino")
    assert str(info.value) == ("openvino is not installed; install it with: pip install "
                               "'isdnet-deploy[openvino]'")


def test_backend_shares_nothing_between_instances(onnx_model) -> None:
    """Two backends on one file run independently; closing one leaves the other working."""
    first = OpenVinoBackend(onnx_model)
    second = OpenVinoBackend(onnx_model)
    feeds, _ = sample_inputs(first.contract, (64, 64))
    expected = first.run(feeds)["logits"]
    first.close()
    np.testing.assert_array_equal(second.run(feeds)["logits"], expected)
    second.close()


# --- the command line: --backend openvino wherever artifacts are opened ----------------------

def test_benchmark_times_the_openvino_backend(cli, onnx_model) -> None:
    result = cli("benchmark", onnx_model, "--backend", "openvino", "--no-reference",
                 "--size", "64x64", "--warmup", 0, "--iters", 1, "--no-peak", "--no-flops",
                 "--threads", 1)
    assert result.exit_code == 0, result.output
    assert "openvino fp32" in result.stdout


def test_infer_and_evaluate_on_openvino_label_as_onnx_runtime(cli, onnx_model, tmp_path) -> None:
    import cv2

    from isdnet_deploy.data.samples import generate_sample_set

    generate_sample_set(tmp_path / "set", "deepglobe", count=1, size=(80, 80))
    for backend, name in (("openvino", "openvino"), ("auto", "onnxruntime")):
        result = cli("infer", onnx_model, tmp_path / "set", "-o", tmp_path / backend,
                     "--backend", backend, "--no-progress")
        assert result.exit_code == 0, result.output
        assert f"({name})" in result.stdout
    (written,) = sorted((tmp_path / "openvino").glob("*_labels.png"))
    ov_labels = cv2.imread(str(written), cv2.IMREAD_UNCHANGED)
    ort_labels = cv2.imread(str(tmp_path / "auto" / written.name), cv2.IMREAD_UNCHANGED)
    assert (ov_labels == ort_labels).mean() > 0.999
    result = cli("evaluate", onnx_model, "--images", tmp_path / "set", "--backend", "openvino",
                 "--no-progress")
    assert result.exit_code == 0, result.output
    assert "(openvino)" in result.stdout


@pytest.mark.parametrize(("args", "fragment"), [
    (["--backend", "tvm"], "'tvm' is not one of 'auto', 'onnxruntime', 'tensorrt', "
                           "'openvino', 'torch'"),
    (["--openvino-precision", "bf16"], "add --backend openvino"),
])
def test_bad_backend_options_are_usage_errors(cli, onnx_model, args, fragment) -> None:
    result = cli("benchmark", onnx_model, "--no-reference", *args)
    assert result.exit_code == 2 and fragment in result.stderr, result.output


@pytest.mark.skipif(NATIVE_BF16, reason="this CPU has native BF16: nothing to refuse")
def test_bf16_on_the_command_line_without_native_bf16_is_one_line(cli, onnx_model) -> None:
    result = cli("benchmark", onnx_model, "--no-reference", "--backend", "openvino",
                 "--openvino-precision", "bf16", "--size", "64x64")
    assert result.exit_code == 1, result.output
    (line,) = result.stderr.strip().splitlines()
    assert "no native BF16" in line and line.endswith("use f32")
