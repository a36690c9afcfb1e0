"""Building c/ for the tests: the README's commands in a temporary folder, programs run
with a clean loader environment. The session fixture ``c_build`` (tests/conftest.py) is
shared by tests/test_c_library.py and tests/test_gstreamer.py, so c/ is built once."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MISSING_TOOLS = [tool for tool in ("cmake", "cc") if shutil.which(tool) is None]


@dataclass
class CBuild:
    work: Path  # the README's current folder: c/ linked in, build/c, isdnet-c
    prefix: Path
    programs: Path


def readme_blocks(title: str = "Embedding in C") -> list[tuple[str, str]]:
    """(language, code) of the fenced blocks of one README section, in order."""
    text = (ROOT / "README.md").read_text()
    section = text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```(\w+)\n(.*?)```", section, flags=re.S)


def run(command: list[str] | str, cwd: Path, timeout: float = 600, check: bool = True,
        **kwargs) -> subprocess.CompletedProcess:
    """A program with a clean loader environment (no LD_LIBRARY_PATH)."""
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    env.update(kwargs.pop("env", {}))
    shell = ["bash", "-euo", "pipefail", "-c", command] if isinstance(command, str) else command
    result = subprocess.run(shell, cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=timeout, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"{command} failed ({result.returncode}):\n{result.stdout}\n"
                             f"{result.stderr}")
    return result


def build_c(work: Path) -> CBuild:
    """c/ built and installed exactly as the README says, then built again with its test
    programs (-DISDNET_BUILD_TESTS=ON) in the same build folder."""
    (work / "c").symlink_to(ROOT / "c")
    (language, build_command), *_ = readme_blocks()
    assert language == "bash" and build_command.startswith("cmake -S c -B ")
    run(build_command, work)
    run("cmake -S c -B build/c -DISDNET_BUILD_TESTS=ON && cmake --build build/c -j2", work)
    return CBuild(work, work / "isdnet-c", work / "build" / "c")
