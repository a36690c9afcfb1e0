"""Shared fixtures: a random-weight reference model, a checkpoint with official keys, ONNX
exports, the C build."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from c_support import CBuild, build_c
from helpers import official_state_dict

os.environ.setdefault("OMP_NUM_THREADS", "2")


def pytest_configure(config: pytest.Config) -> None:
    logging.getLogger("isdnet_deploy").setLevel(logging.ERROR)


@pytest.fixture(scope="session")
def model():
    from isdnet_deploy.model.checkpoint import build_model

    return build_model(num_classes=7, seed=0)


@pytest.fixture(scope="session")
def official_checkpoint(tmp_path_factory) -> Path:
    import torch

    path = tmp_path_factory.mktemp("ckpt") / "isdnet_deepglobe_random.pth"
    torch.save({"state_dict": official_state_dict(), "meta": {"CLASSES": ["a"] * 7}}, path)
    return path


@pytest.fixture(scope="session")
def onnx_model(model, tmp_path_factory) -> Path:
    """A small dynamic ONNX export (pyramid in graph, float in, logits out) shared by the
    tests that need some artifact rather than a particular variant."""
    from isdnet_deploy.export.onnx_export import export_onnx

    path = tmp_path_factory.mktemp("onnx") / "isdnet.onnx"
    export_onnx(model, path, verify_size=(96, 128))
    return path


@pytest.fixture(scope="session")
def embedding_onnx_model(model, tmp_path_factory) -> Path:
    """The embedding export (uint8 RGB in, labels out, logits resized in the graph to the
    'output_size' input), dynamic; shared by the label-resize and C library tests."""
    from isdnet_deploy.export.onnx_export import export_onnx

    path = tmp_path_factory.mktemp("onnx") / "isdnet_u8_labels.onnx"
    export_onnx(model, path, input="uint8", output="labels", verify_size=(96, 128))
    return path


@pytest.fixture(scope="session")
def c_build(tmp_path_factory) -> CBuild:
    """c/ built and installed once per session as the README says, plus its test programs
    (tests/c_support.py); used by the C library and GStreamer tests."""
    return build_c(tmp_path_factory.mktemp("c"))


@pytest.fixture(scope="session")
def cli():
    """Invoke ``isdnet-deploy ARGS...`` in-process; returns click's Result."""
    from click.testing import CliRunner

    from isdnet_deploy.cli import main

    runner = CliRunner()
    return lambda *args: runner.invoke(main, [str(a) for a in args], catch_exceptions=False)
