"""benchmarks/run_benchmarks.py writes results.md, which is committed: it must not carry
this machine's folders."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("run_benchmarks",
                                                  ROOT / "benchmarks" / "run_benchmarks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_results_markdown_names_files_without_their_folders():
    text = _script()._without_folders(
        "calibration: 16 image(s) from /work/scratch/artifacts/calibration; verified on "
        "4 image(s) from /tmp/x/calibration held out (model: /data/ckpt/isdnet.pth): "
        "1/2 of 3.5/4 stays")
    assert "/work" not in text and "/tmp" not in text and "/data" not in text
    assert "from calibration;" in text and "(model: isdnet.pth)" in text
    assert "1/2 of 3.5/4 stays" in text


def test_committed_results_carry_no_absolute_paths():
    markdown = (ROOT / "benchmarks" / "results" / "results.md").read_text()
    assert "/work/" not in markdown and "/tmp/" not in markdown and "/root/" not in markdown
