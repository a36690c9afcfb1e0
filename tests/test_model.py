"""The reference ISDNet: structure as in the official code, shapes, and input checks."""

from __future__ import annotations

import pytest
import torch

from isdnet_deploy.errors import IsdnetError
from isdnet_deploy.model.isdnet import ISDNet


@pytest.mark.parametrize("h,w", [(512, 512), (258, 202), (100, 76), (32, 32)])
def test_forward_returns_full_resolution_logits(model, h: int, w: int) -> None:
    with torch.no_grad():
        logits = model(torch.randn(1, 3, h, w))
    assert logits.shape == (1, 7, h, w)
    assert torch.isfinite(logits).all()


def test_parameter_count_matches_official_inference_model() -> None:
    # The official DeepGlobe model uses 17.22 M parameters at inference.
    count = sum(p.numel() for p in ISDNet(7).parameters())
    assert 17.20e6 < count < 17.24e6


def test_backbone_dilations_follow_contract_dilation() -> None:
    backbone = ISDNet(7).backbone
    dilations = {name: m.dilation[0] for name, m in backbone.named_modules()
                 if isinstance(m, torch.nn.Conv2d) and name.endswith("conv1")}
    assert dilations == {"layer1.0.conv1": 1, "layer1.1.conv1": 1, "layer2.0.conv1": 1,
                         "layer2.1.conv1": 1, "layer3.0.conv1": 1, "layer3.1.conv1": 2,
                         "layer4.0.conv1": 2, "layer4.1.conv1": 4}
    assert all(m.dilation == (1, 1) for n, m in backbone.named_modules() if n.endswith("conv2"))


def test_aspp_dilations_and_padding() -> None:
    head = ISDNet(7).decode_head
    convs = [m.conv for m in head.aspp_modules]
    assert [c.kernel_size[0] for c in convs] == [1, 3, 3, 3]
    assert [c.dilation[0] for c in convs] == [1, 12, 24, 36]
    assert [c.padding[0] for c in convs] == [0, 12, 24, 36]


def test_deep_branch_sees_quarter_size_legacy_nearest(model) -> None:
    seen = {}

    def record(module, args) -> None:
        seen["shape"] = tuple(args[0].shape)

    handle = model.backbone.register_forward_pre_hook(record)
    with torch.no_grad():
        image = torch.randn(1, 3, 258, 202)
        model(image)
    handle.remove()
    assert seen["shape"] == (1, 3, 64, 50)


def test_external_shallow_input_gives_same_logits(model) -> None:
    image = torch.randn(1, 3, 96, 80)
    with torch.no_grad():
        inside = model(image)
        outside = model(image, shallow_input=model.refine_head.lap_pyramid(image))
    assert torch.equal(inside, outside)


@pytest.mark.parametrize("shape,message", [((1, 4, 64, 64), "3-channel"),
                                           ((3, 64, 64), "3-channel"),
                                           ((1, 3, 16, 64), "minimum of 32x32")])
def test_bad_image_gives_clear_error(model, shape, message) -> None:
    with pytest.raises(IsdnetError, match=message):
        model(torch.randn(*shape))


def test_integer_image_is_refused(model) -> None:
    with pytest.raises(IsdnetError, match="float"):
        model(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
