"""Bounded fuzzing: contract values (hypothesis strategies over the schema), mutated ONNX
metadata and files, mutated checkpoints and mutated images, each case ending in success or
a refusal (IsdnetError, or one CLI error line) and never past a fixed memory bound.

Each category runs in a fresh process whose address space is capped (``RLIMIT_AS``), for
a fixed time with fixed seeds (tests/fuzz_cases.py): about two minutes in all.
"""

from __future__ import annotations

import pytest
from hostile_helpers import ROOT, run_capped

SECONDS = 25  # per category
# Address-space caps: the interpreter with NumPy, OpenCV, ONNX Runtime (and torch for the
# checkpoints) maps 0.5-0.7 GiB before any case runs; every legitimate case here needs
# far less than the rest.
CAPS_MIB = {"contracts": 2048, "onnx": 2048, "checkpoints": 3072, "images": 2048}
MINIMUM_CASES = {"contracts": 100, "onnx": 40, "checkpoints": 40, "images": 100}


@pytest.mark.parametrize("category", list(CAPS_MIB))
def test_fuzz(category):
    code = f"""
        import runpy, sys
        sys.argv = ["fuzz_cases.py", {category!r}, "{SECONDS}"]
        runpy.run_path({str(ROOT / "tests" / "fuzz_cases.py")!r}, run_name="__main__")
    """
    result = run_capped(code, CAPS_MIB[category], timeout=SECONDS * 8 + 120)
    assert result["returncode"] == 0, result["stderr"][-3000:]
    cases = result["success"] + result["refused"] + result["failed"]
    summary = (f"{category}: {cases} cases in {result['seconds']} s: {result['success']} "
               f"succeeded, {result['refused']} refused, {result['failed']} failed")
    print(summary)
    assert result["failed"] == 0, summary + "\n" + "\n".join(result["failures"])
    assert cases >= MINIMUM_CASES[category], summary
