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
