"""The artifact contract and the dataset profiles: plain data that must round-trip."""

from __future__ import annotations

import pytest

from isdnet_deploy.contract import Contract, TensorSpec
from isdnet_deploy.errors import IsdnetError
from isdnet_deploy.profiles import PROFILES, get_profile, parse_size


def _contract() -> Contract:
    return Contract(inputs=[TensorSpec("image", "uint8", "NHWC", [1, "height", "width", 3])],
                    outputs=[TensorSpec("labels", "uint8", "HW", ["height", "width"])],
                    input_kind="uint8", output_kind="labels", classes=["a", "b"],
                    palette=[[0, 0, 0], [255, 255, 255]], extra={"tensorrt": "10.3"})


def test_contract_json_round_trip() -> None:
    contract = _contract()
    assert Contract.from_json(contract.to_json()) == contract


def test_contract_of_another_format_is_refused() -> None:
    text = _contract().to_json().replace("isdnet-deploy/1", "isdnet-deploy/99")
    with pytest.raises(IsdnetError, match="re-export"):
        Contract.from_json(text)


def test_contract_that_is_not_json() -> None:
    with pytest.raises(IsdnetError, match="not valid JSON"):
        Contract.from_json("{nope")


def test_profiles_test_sizes_follow_the_paper() -> None:
    assert get_profile("deepglobe").test_size == (1958, 1958)
    assert get_profile("inria").test_size == (4000, 4000)
    assert get_profile("cityscapes").test_size == (1024, 2048)
    for profile in PROFILES.values():
        assert len(profile.palette) == profile.num_classes


def test_unknown_profile_lists_choices() -> None:
    with pytest.raises(IsdnetError, match="deepglobe, inria, cityscapes"):
        get_profile("ade20k")


@pytest.mark.parametrize("text,expected", [("1958x1958", (1958, 1958)), ("512", (512, 512)),
                                           ("1000X760", (1000, 760))])
def test_parse_size(text: str, expected: tuple[int, int]) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["big", "10x10", "1x2x3"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(IsdnetError):
        parse_size(text)


def test_cli_lists_every_command() -> None:
    from isdnet_deploy.cli import main

    assert set(main.commands) == {"demo", "export", "inspect", "quantize", "build", "deploy",
                                  "recipes", "benchmark", "compare", "infer", "evaluate",
                                  "samples", "serve"}
