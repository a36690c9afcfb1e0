"""Shared fixtures: a random-weight reference model and a checkpoint with official keys."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from helpers import official_state_dict

DATA = Path(__file__).parent / "data"
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
