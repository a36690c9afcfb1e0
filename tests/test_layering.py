"""The embeddable runtime stays small: nothing under ``runtime/`` imports the batch, metrics
or build-time packages, nor torch at module level."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import isdnet_deploy

PACKAGE = Path(isdnet_deploy.__file__).parent
FORBIDDEN = ("data", "metrics", "engine", "apps", "export", "benchmark", "cli")
# The torch backend opens the reference model, so it may import it, but only when opened.
NOT_AT_IMPORT = (*FORBIDDEN, "model")


def _imported_modules(path: Path) -> list[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ["isdnet_deploy", *path.relative_to(PACKAGE).parent.parts]
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, node.module] if node.module else base)
            names.append(module)
            names += [f"{module}.{alias.name}" for alias in node.names]
    return names


def test_no_runtime_module_imports_application_packages() -> None:
    offenders = []
    for path in sorted((PACKAGE / "runtime").glob("*.py")):
        for name in _imported_modules(path):
            parts = name.split(".")
            if parts[0] == "isdnet_deploy" and len(parts) > 1 and parts[1] in FORBIDDEN:
                offenders.append(f"{path.name} imports {name}")
    assert not offenders, offenders


def test_importing_every_runtime_module_loads_no_torch_and_no_application_code() -> None:
    modules = [f"isdnet_deploy.runtime.{p.stem}" for p in (PACKAGE / "runtime").glob("*.py")
               if p.stem != "__init__"]
    banned = [f"isdnet_deploy.{name}" for name in NOT_AT_IMPORT]
    script = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'\n"
        f"             or '.'.join(m.split('.')[:2]) in {banned!r}))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
