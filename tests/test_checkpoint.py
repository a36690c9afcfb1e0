"""Loading official checkpoints: the mmseg key layout, aliases, and every bad-file case."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
import torch
from helpers import official_state_dict

from isdnet_deploy.errors import IsdnetError
from isdnet_deploy.model.checkpoint import load_model


def test_official_key_checkpoint_loads_strictly(official_checkpoint) -> None:
    model = load_model(official_checkpoint)
    state = official_state_dict()
    assert model.num_classes == 7
    assert not model.training
    for key in ("backbone.stem.0.weight", "decode_head.bottleneck.conv.weight",
                "refine_head.stdc_net.features.4.avd_layer.0.weight",
                "refine_head.fuse8.g1", "refine_head.conv_seg.conv_out.bias"):
        assert torch.equal(model.state_dict()[key], state[key])
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 7, 64, 64)


def test_training_only_keys_reported_once_at_info(official_checkpoint, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="isdnet_deploy"):
        load_model(official_checkpoint)
    messages = [r.getMessage() for r in caplog.records if "training-only" in r.getMessage()]
    assert messages == ["ignoring 52 training-only keys (auxiliary heads, SR decoder)"]


@pytest.mark.parametrize("variant", ["bare", "module_prefix", "features_only", "aliases_only"])
def test_accepted_layouts(tmp_path, variant: str) -> None:
    state = official_state_dict()
    expected = state["refine_head.stdc_net.features.2.conv_list.1.conv.weight"]
    if variant == "module_prefix":
        state = {f"module.{k}": v for k, v in state.items()}
    elif variant == "features_only":
        state = {k: v for k, v in state.items() if ".stdc_net.x" not in k}
    elif variant == "aliases_only":
        state = {k: v for k, v in state.items() if ".stdc_net.features." not in k}
    path = tmp_path / "ckpt.pth"
    torch.save(state, path)
    model = load_model(path)
    got = model.state_dict()["refine_head.stdc_net.features.2.conv_list.1.conv.weight"]
    assert torch.equal(got, expected)


def test_number_of_classes_comes_from_checkpoint(tmp_path) -> None:
    path = tmp_path / "inria.pth"
    torch.save({"state_dict": official_state_dict(num_classes=2)}, path)
    assert load_model(path).num_classes == 2
    with pytest.raises(IsdnetError, match="has 2 classes, but 7 were asked for"):
        load_model(path, num_classes=7)


def test_missing_file(tmp_path) -> None:
    with pytest.raises(IsdnetError, match="checkpoint not found"):
        load_model(tmp_path / "nope.pth")


def test_not_a_torch_file(tmp_path) -> None:
    path = tmp_path / "notes.pth"
    path.write_text("hello, I am text")
    with pytest.raises(IsdnetError, match="is not a PyTorch checkpoint"):
        load_model(path)


def test_truncated_file(tmp_path, official_checkpoint) -> None:
    data = official_checkpoint.read_bytes()
    path = tmp_path / "cut.pth"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(IsdnetError, match="truncated or corrupt"):
        load_model(path)


def test_checkpoint_of_another_model_lists_keys(tmp_path) -> None:
    path = tmp_path / "resnet.pth"
    torch.save(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3)).state_dict(), path)
    with pytest.raises(IsdnetError, match=r"not an ISDNet checkpoint.*first keys: 0\.weight"):
        load_model(path)


def test_missing_and_unexpected_keys_are_listed(tmp_path) -> None:
    state = official_state_dict()
    del state["backbone.layer1.0.conv1.weight"]
    state["backbone.extra.weight"] = torch.zeros(1)
    path = tmp_path / "ckpt.pth"
    torch.save(state, path)
    with pytest.raises(IsdnetError) as info:
        load_model(path)
    message = str(info.value)
    assert "1 missing (e.g. backbone.layer1.0.conv1.weight)" in message
    assert "1 unexpected (e.g. backbone.extra.weight)" in message


def test_shape_mismatch_names_key_and_shapes(tmp_path) -> None:
    state = official_state_dict()
    state["decode_head.bottleneck.conv.weight"] = torch.zeros(128, 640, 1, 1)
    path = tmp_path / "ckpt.pth"
    torch.save(state, path)
    with pytest.raises(IsdnetError, match=r"decode_head\.bottleneck\.conv\.weight: model "
                                          r"expects \(128, 640, 3, 3\), checkpoint has "
                                          r"\(128, 640, 1, 1\)"):
        load_model(path)


def test_disagreeing_aliases(tmp_path) -> None:
    state = official_state_dict()
    state["refine_head.stdc_net.x8.0.3.conv_list.0.conv.weight"] += 1.0
    path = tmp_path / "ckpt.pth"
    torch.save(state, path)
    with pytest.raises(IsdnetError,
                       match=r"aliased keys disagree: refine_head\.stdc_net\.x8\.0\.3"):
        load_model(path)


def test_cli_reports_bad_checkpoint_in_one_line(tmp_path) -> None:
    path = tmp_path / "notes.pth"
    path.write_text("not a checkpoint")
    result = subprocess.run([sys.executable, "-m", "isdnet_deploy", "demo", "--checkpoint",
                             str(path), "--size", "64x64"], capture_output=True, text=True)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        f"error: {path} is not a PyTorch checkpoint (expected a .pth/.pt file written by "
        f"torch.save)"]
