"""Signals and terminals: SIGTERM unwinds like Ctrl-C (no temporary file left, exit 143),
and file names holding control characters are printed escaped, never executed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from hostile_helpers import ROOT, tiny_onnx

from isdnet_deploy.data.samples import photo_like

CLEAR_SCREEN = "\x1b[2J"


def test_sigterm_during_export_leaves_no_temporary_file(official_checkpoint, tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    process = subprocess.Popen(
        [sys.executable, "-m", "isdnet_deploy", "export", str(official_checkpoint),
         "-o", str(out / "model.onnx"), "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 600
    temporary = []
    while time.monotonic() < deadline and process.poll() is None:
        temporary = list(out.glob(".model.*.tmp.onnx")) if out.is_dir() else []
        if temporary:
            break
        time.sleep(0.05)
    assert temporary, "the export never created its temporary file"
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 143, stderr
    assert "terminated: nothing half-written was left behind" in stderr
    assert "Traceback" not in stderr
    assert list(out.iterdir()) == []


def test_file_names_with_escape_sequences_are_printed_escaped(cli, tmp_path):
    from PIL import Image

    folder = tmp_path / f"in{CLEAR_SCREEN}"
    folder.mkdir()
    Image.fromarray(photo_like(96, 96, seed=1)).save(folder / f"good{CLEAR_SCREEN}.png")
    (folder / f"bad{CLEAR_SCREEN}.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    model = tiny_onnx(tmp_path / "tiny.onnx")
    out = tmp_path / f"out{CLEAR_SCREEN}"
    result = cli("infer", model, folder, "-o", out, "--no-progress")
    assert result.exit_code == 1
    assert "\x1b" not in result.output, result.output
    assert "bad\\x1b[2J.jpg" in result.stderr and "good\\x1b[2J.png" not in result.stderr
    assert "out\\x1b[2J" in result.stdout  # the 'segmented into' line
    assert (out / f"good{CLEAR_SCREEN}_labels.png").is_file()
    evaluated = cli("evaluate", model, "--images", folder, "--labels", folder,
                    "--profile", "cityscapes", "--no-progress")
    assert "\x1b" not in evaluated.output


def test_escaped_names_in_a_real_terminal_session(tmp_path):
    """Outside CliRunner: the installed entry point prints the error line escaped."""
    bad = tmp_path / f"x{CLEAR_SCREEN}.jpg"
    bad.write_bytes(b"\xff\xd8 not a jpeg")
    model = tiny_onnx(tmp_path / "tiny.onnx")
    done = subprocess.run([sys.executable, "-m", "isdnet_deploy", "infer", str(model),
                           str(bad), "-o", str(tmp_path / "o"), "--no-progress"],
                          capture_output=True, text=True, env=dict(os.environ,
                                                                   PYTHONPATH=str(ROOT)))
    assert done.returncode == 1
    assert "\x1b" not in done.stderr + done.stdout
    assert "x\\x1b[2J.jpg" in done.stderr
    assert Path(tmp_path / "o").is_dir()
