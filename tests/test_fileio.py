"""Atomic outputs: the target appears only when writing succeeded."""

from __future__ import annotations

import os

import pytest

from isdnet_deploy.errors import IsdnetError
from isdnet_deploy.fileio import atomic_output, atomic_write_bytes


def test_failed_write_leaves_nothing(tmp_path) -> None:
    with pytest.raises(RuntimeError), atomic_output(tmp_path / "model.onnx") as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_existing_file_kept_until_the_new_one_is_complete(tmp_path) -> None:
    target = tmp_path / "model.onnx"
    target.write_bytes(b"old")
    with atomic_output(target) as tmp:
        assert tmp.suffix == ".onnx" and tmp.parent == tmp_path
        tmp.write_bytes(b"new")
        assert target.read_bytes() == b"old"
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_file_mode_follows_umask_not_mkstemp(tmp_path) -> None:
    umask = os.umask(0o022)
    try:
        path = atomic_write_bytes(tmp_path / "a.json", b"{}")
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644


def test_missing_folder_is_an_error_unless_asked_to_create_it(tmp_path) -> None:
    with pytest.raises(IsdnetError, match="does not exist; create it first"):
        atomic_write_bytes(tmp_path / "no" / "a.json", b"{}", make_parents=False)
    assert atomic_write_bytes(tmp_path / "yes" / "a.json", b"{}").read_bytes() == b"{}"
