"""Writing outputs atomically: a temporary file beside the target, renamed on success.

Every command that writes a file (ONNX models, engines, sidecars, label maps, reports)
goes through here, so an interrupted or failed run never leaves a half-written file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import IsdnetError


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], make_parents: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it replaces ``path`` only if the block succeeds.

    The temporary name keeps the suffix, so libraries that pick a format from the extension
    (OpenCV, GDAL, ONNX) still work. Without ``make_parents`` a missing folder is an error.
    The file gets the usual 0666 & ~umask mode rather than mkstemp's private 0600.
    """
    target = Path(path)
    if make_parents:
        target.parent.mkdir(parents=True, exist_ok=True)
    elif not target.parent.is_dir():
        raise IsdnetError(f"output directory {target.parent} does not exist; create it first")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f".tmp{target.suffix}",
                               dir=target.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes,
                       make_parents: bool = True) -> Path:
    with atomic_output(path, make_parents) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def check_writable_dir(folder: str | os.PathLike[str]) -> Path:
    """Make sure files can be created in ``folder``, now rather than after a long run.

    The rule of every command: a missing output folder is created, parents included.
    Writability is tried for real (a temporary file is created and removed): permission
    bits alone do not tell, e.g. for root, read-only mounts or ACLs.
    """
    folder = Path(folder) if str(folder) else Path(".")
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise IsdnetError(f"output folder {folder} cannot be created: {existing} is a file, "
                          "not a folder; choose another output location")
    try:
        fd, probe = tempfile.mkstemp(prefix=".isdnet-write-test.", dir=existing)
        os.close(fd)
        os.unlink(probe)
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise IsdnetError(f"output folder {folder} is not writable ({exc.strerror or exc}); "
                          "choose another output location") from None
    return folder


def check_output_path(path: str | os.PathLike[str], suffix: str | None = None) -> Path:
    """An output file's path, checked before any work: its suffix (when one is required),
    no folder in its place, and a folder that takes new files (created when missing)."""
    target = Path(path)
    if suffix is not None and target.suffix.lower() != suffix:
        raise IsdnetError(f"output {target} should end with {suffix}")
    if target.is_dir():
        raise IsdnetError(f"output {target} is a folder; give a file name"
                          + (f" ending in {suffix}" if suffix else ""))
    check_writable_dir(target.parent)
    return target
