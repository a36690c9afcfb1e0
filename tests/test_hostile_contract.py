"""Hostile contracts and graphs: every contract value is checked against a schema, a
duplicated contract is refused by every reader, the graph is compared with its contract at
load, and whatever fails in the runtime is an IsdnetError with its cause."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from hostile_helpers import tiny_contract, tiny_onnx, with_metadata

from isdnet_deploy import runtime
from isdnet_deploy.cli import main
from isdnet_deploy.contract import METADATA_KEY, Contract, scan_onnx_metadata
from isdnet_deploy.data.samples import photo_like
from isdnet_deploy.errors import IsdnetError


def contract_dict(**changes) -> dict:
    data = json.loads(tiny_contract().to_json())
    data.update(changes)
    return data


def inspect(path) -> object:
    return CliRunner().invoke(main, ["inspect", str(path)])


def test_a_sound_contract_round_trips():
    contract = tiny_contract()
    assert contract.problems() == []
    assert Contract.from_json(contract.to_json()) == contract
    assert Contract.from_json(contract.to_json().encode()) == contract


@pytest.mark.parametrize(("data", "fragment"), [
    ([], "is a JSON array, not an object"),
    (None, "is a JSON null, not an object"),
    ("text", "is a JSON string"),
])
def test_not_an_object(data, fragment):
    with pytest.raises(IsdnetError, match=fragment):
        Contract.from_dict(data)


@pytest.mark.parametrize(("changes", "fragment"), [
    ({"inputs": None}, "inputs null is not a list"),
    ({"outputs": []}, "outputs [] is not a list of 1..8 tensors"),
    ({"palette": [[300, 0, 0]]}, "palette"),
    ({"palette": [[0, 0]]}, "palette"),
    ({"palette": [[True, 0, 0]]}, "palette"),
    ({"mean": [1.0, 2.0]}, "mean"),
    ({"std": [0, 0, 0]}, "std [0, 0, 0] is not 3 finite numbers"),
    ({"std": [1.0, float("nan"), 1.0]}, "std"),
    ({"test_scale": 0}, "test_scale 0 is not a number in 0.1..2"),
    ({"test_scale": -1}, "test_scale -1"),
    ({"test_scale": 100}, "test_scale 100"),
    ({"test_scale": float("nan")}, "test_scale NaN"),
    ({"test_scale": "0.8"}, 'test_scale "0.8"'),
    ({"min_size": 0}, "min_size 0"),
    ({"min_size": 10**9}, "min_size"),
    ({"input_kind": "bogus"}, 'input_kind "bogus" is not one of float, uint8'),
    ({"output_kind": "scores"}, "output_kind"),
    ({"dynamic": False}, "fixed_size null is not [height, width]"),
    ({"fixed_size": [64, 64]}, "fixed_size [64, 64] is given for a dynamic model"),
    ({"classes": ["a", "b"]}, "output 'logits' has 7 channels but 2 classes are listed"),
    ({"classes": []}, "0 classes listed"),
    ({"classes": ["x"] * 300}, "300 classes listed"),
    ({"classes": ["\x1b[2Jclear"] + ["c"] * 6}, "without control characters"),
    ({"classes": ["\ud800"] + ["c"] * 6}, "without control characters"),
    ({"checkpoint_sha256": "zz"}, "checkpoint_sha256"),
    ({"extra": []}, "extra [] is not a JSON object"),
    ({"color": "cmyk"}, "color"),
])
def test_schema_refusals_name_the_key(changes, fragment):
    with pytest.raises(IsdnetError) as info:
        Contract.from_dict(contract_dict(**changes), where="m.onnx")
    message = str(info.value)
    assert fragment in message, message
    assert message.startswith("m.onnx's contract") and "\n" not in message
    assert "re-export" in message


@pytest.mark.parametrize(("spec", "fragment"), [
    ({"name": "image", "dtype": "float32", "layout": "NCHW", "shape": [1, 3, "h"]},
     "has 3 dimensions but layout 'NCHW'"),
    ({"name": "image", "dtype": "complex64", "layout": "NCHW", "shape": [1, 3, 4, 4]},
     "dtype"),
    ({"name": "image", "dtype": "float32", "layout": "NNHW", "shape": [1, 3, 4, 4]},
     "layout"),
    ({"name": "image", "dtype": "float32", "layout": "NCHW", "shape": [1, 3, 0, -4]},
     "shape"),
    ({"name": "image", "dtype": "float32", "layout": "NCHW", "shape": [1, 3, "a b", 4]},
     "shape"),
    ({"name": 5, "dtype": "float32", "layout": "NCHW", "shape": [1, 3, 4, 4]},
     "inputs[0].name 5 is not a string"),
])
def test_tensor_specs_are_checked(spec, fragment):
    with pytest.raises(IsdnetError, match="contract is invalid") as info:
        Contract.from_dict(contract_dict(inputs=[spec]))
    assert fragment in str(info.value)


def test_one_class_per_int32_label_up_to_65536():
    labels = [{"name": "labels", "dtype": "int32", "layout": "HW", "shape": ["h", "w"]}]
    wide = contract_dict(outputs=labels, output_kind="labels", palette=[],
                         classes=[f"c{i}" for i in range(1000)])
    assert Contract.from_dict(wide).num_classes == 1000
    wide["outputs"][0]["dtype"] = "uint8"
    with pytest.raises(IsdnetError, match=r"1000 classes listed; a model has 1\.\.256"):
        Contract.from_dict(wide)


def test_json_text_limits():
    with pytest.raises(IsdnetError, match="not valid UTF-8"):
        Contract.from_json(b"\xff\xfe{}")
    with pytest.raises(IsdnetError, match="not valid JSON"):
        Contract.from_json("[" * 100_000)
    with pytest.raises(IsdnetError, match="characters long"):
        Contract.from_json(" " * (2 << 20))


def test_problems_list_many_on_one_line():
    data = contract_dict(mean=[1], std=[0], test_scale=9, min_size=0, color="x", palette=7)
    with pytest.raises(IsdnetError, match=r"\(\+\d+ more\)") as info:
        Contract.from_dict(data)
    assert "\n" not in str(info.value)


# --- the ONNX file: duplicated keys, bytes that are not UTF-8, graph vs contract --------------

def test_duplicated_contract_is_refused_by_runtime_and_inspect(tmp_path):
    path = tiny_onnx(tmp_path / "m.onnx")
    good = tiny_contract().to_json()
    liar = tiny_contract(classes=[f"x{i}" for i in range(7)]).to_json()
    with_metadata(path, [(METADATA_KEY, good), ("other", "1"), (METADATA_KEY, liar)])
    assert [k for k, _ in scan_onnx_metadata(path)] == [METADATA_KEY, "other", METADATA_KEY]
    with pytest.raises(IsdnetError, match="holds 2 'isdnet_deploy' metadata entries"):
        runtime.load(path)
    result = inspect(path)
    assert result.exit_code == 1
    assert "holds 2 'isdnet_deploy' metadata entries" in result.stderr.splitlines()[-1]
    assert "graph inputs:" in result.stdout


def test_metadata_that_is_not_utf8(tmp_path):
    path = tiny_onnx(tmp_path / "m.onnx")
    with_metadata(path, [(METADATA_KEY, b"\xff\xfe{not utf-8}")])
    with pytest.raises(IsdnetError, match="not valid UTF-8"):
        runtime.load(path)
    result = inspect(path)
    assert result.exit_code == 1 and "not valid UTF-8" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize(("proto", "contract", "fragments"), [
    ({"output_name": "scores"}, {},
     ["graph output 'scores' is not in the contract",
      "contract output 'logits' is not in the graph"]),
    ({"channels": 3}, {}, ["output 'logits' has 3 class channels in the graph but the "
                           "contract lists 7 classes"]),
    ({}, {"inputs": [tiny_contract().inputs[0].__class__("image", "uint8", "NCHW",
                                                         [1, 3, "height", "width"])]},
     ["input 'image' is float32 in the graph but uint8 in the contract"]),
])
def test_graph_disagreeing_with_its_contract(tmp_path, proto, contract, fragments):
    path = tiny_onnx(tmp_path / "m.onnx", tiny_contract(**contract), **proto)
    with pytest.raises(IsdnetError, match="graph disagrees with its contract") as info:
        runtime.load(path)
    result = inspect(path)
    assert result.exit_code == 1
    for fragment in fragments:
        assert fragment in str(info.value)
        assert f"disagreement: {fragment}" in result.stderr  # inspect lists every one
    assert "runtime refuses this file" in result.stderr.splitlines()[-1]
    assert json.loads(CliRunner().invoke(main, ["inspect", str(path), "--json"]).stdout
                      )["disagreements"]


def test_output_at_half_resolution_is_caught_on_the_first_run(tmp_path):
    path = tiny_onnx(tmp_path / "m.onnx", half_resolution=True)
    segmenter = runtime.load(path, scale=False)  # symbolic dims: nothing to see at load
    with pytest.raises(IsdnetError, match=r"output 'logits' came back as float32 "
                                          r"1x7x48x64, the contract promises float32 "
                                          r"1x7x96x128"):
        segmenter.predict(photo_like(96, 128, seed=1))


def test_inspect_escapes_names_from_the_file(tmp_path):
    path = tiny_onnx(tmp_path / "m.onnx", output_name="logits\x1b[2J")
    result = inspect(path)
    assert "\x1b" not in result.output and "logits\\x1b[2J" in result.stdout


def test_contract_passed_by_hand_is_checked_too(tmp_path):
    path = tiny_onnx(tmp_path / "m.onnx")
    with pytest.raises(IsdnetError, match="the contract passed in's contract is invalid"):
        runtime.load(path, contract=tiny_contract(test_scale=50.0))


# --- one error type out of the runtime -------------------------------------------------------

def test_runtime_load_failures_are_isdnet_errors_with_the_cause(tmp_path):
    path = tiny_onnx(tmp_path / "m.onnx")
    with pytest.raises(IsdnetError, match=r"opening .*m\.onnx failed") as info:
        runtime.load(path, no_such_option=1)
    assert isinstance(info.value.__cause__, TypeError)


class _Failing:
    """A backend stand-in whose run raises what engines and libraries raise."""

    def __init__(self, error: BaseException) -> None:
        from isdnet_deploy.runtime.backend import Device

        self.contract, self.error = tiny_contract(), error
        self.device, self.name = Device(), "failing"

    def run(self, feeds, out=None):
        raise self.error

    def close(self) -> None:
        pass


@pytest.mark.parametrize("error", [KeyError("logits"), TypeError("bad"), ValueError("v"),
                                   MemoryError(), RuntimeError("[ONNXRuntimeError] Fail")])
def test_predict_failures_are_isdnet_errors_with_the_cause(error):
    segmenter = runtime.Segmenter(_Failing(error))
    with pytest.raises(IsdnetError) as info:
        segmenter.predict(photo_like(96, 128, seed=1))
    assert info.value.__cause__ is error
    assert "\n" not in str(info.value)
    if isinstance(error, MemoryError):
        assert "--max-size" in info.value.for_cli()


def test_opencv_failures_in_preprocessing_are_isdnet_errors(monkeypatch, tmp_path):
    import cv2

    segmenter = runtime.load(tiny_onnx(tmp_path / "m.onnx"))
    image = photo_like(96, 128, seed=1)

    def broken(*args, **kwargs):
        raise cv2.error("resize failed")

    monkeypatch.setattr(cv2, "resize", broken)
    with pytest.raises(IsdnetError, match=r"\(error: resize failed\)") as info:
        segmenter.predict(image)
    assert isinstance(info.value.__cause__, cv2.error)


def test_weights_only_refusal_keeps_its_reason(tmp_path):
    import torch

    from isdnet_deploy.model.checkpoint import load_model

    path = tmp_path / "objects.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "obj": np.random.default_rng(0)}, path)
    with pytest.raises(IsdnetError, match="holds Python objects") as info:
        load_model(path)
    assert "Unsupported global" in str(info.value) or "weights_only" in str(info.value)
    assert "\n" not in str(info.value)


def test_size_layout_only_for_the_output_size_input():
    """Labels exports that resize in the graph take ``output_size``, an int32 [2] vector
    whose layout is 'S'; no other tensor may claim that layout."""
    from isdnet_deploy.contract import OUTPUT_SIZE_INPUT, TensorSpec, _tensor_problems

    image = TensorSpec("image", "float32", "NCHW", [1, 3, "height", "width"])
    size = TensorSpec(OUTPUT_SIZE_INPUT, "int32", "S", [2])
    assert _tensor_problems("inputs", [image, size]) == []
    wrong = TensorSpec("mask", "int32", "S", [2])
    assert any("only the int32 [2] input" in p for p in _tensor_problems("inputs", [wrong]))
    assert _tensor_problems("outputs", [TensorSpec(OUTPUT_SIZE_INPUT, "int32", "S", [2])])
