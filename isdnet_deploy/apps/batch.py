"""Running work over many items: per-item failures recorded, timings kept, progress shown.

A batch never stops at a bad file: the error is recorded against the file, the rest run,
and the caller reports every failure at the end.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from ..errors import IsdnetError
from ..runtime.predictor import engine_error

T = TypeVar("T")


@dataclass
class Failure:
    item: str
    message: str
    cli: str | None = None  # the command-line wording, where it differs (IsdnetError.cli)

    @classmethod
    def of(cls, item: str, error: IsdnetError) -> Failure:
        return cls(item, str(error), error.cli)


def timing_summary(seconds: Sequence[float]) -> dict[str, float | int]:
    """Count, mean/median/min/max in ms and the total in s of per-image times."""
    if not seconds:
        return {"count": 0, "mean_ms": 0.0, "median_ms": 0.0, "min_ms": 0.0, "max_ms": 0.0,
                "total_s": 0.0}
    return {"count": len(seconds), "mean_ms": 1000 * statistics.fmean(seconds),
            "median_ms": 1000 * statistics.median(seconds), "min_ms": 1000 * min(seconds),
            "max_ms": 1000 * max(seconds), "total_s": float(sum(seconds))}


@dataclass
class BatchReport:
    total: int = 0
    done: int = 0
    skipped: int = 0  # outputs already complete (resume)
    failures: list[Failure] = field(default_factory=list)
    # name -> per-image seconds of inference (pre/post-processing and tiling included,
    # reading and writing files excluded), for the images that succeeded
    timings: dict[str, list[float]] = field(default_factory=dict)
    tiled: int = 0
    wall_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def timing(self, name: str) -> dict[str, float | int]:
        return timing_summary(self.timings.get(name, []))

    def failure_lines(self) -> list[str]:
        """One indented line per failure, in command-line wording."""
        return [f"  {f.item}: {f.cli or f.message}" for f in self.failures]


def failure_of(item: str, exc: Exception) -> Failure | None:
    """The failure to record against one item for an error that should not stop a batch:
    a user-fixable error (``IsdnetError``), an OS error (unreadable or unwritable file) or
    an engine failure; None for anything else (a bug, which should stop it)."""
    if isinstance(exc, IsdnetError):
        return Failure.of(item, exc)
    if isinstance(exc, OSError):
        return Failure(item, f"{exc.strerror or exc} ({exc.filename or 'file'})")
    error = engine_error(exc)
    return None if error is None else Failure.of(item, error)


def run_batch(items: Sequence[T], work: Callable[[T], Mapping[str, float]], *,
              label: Callable[[T], str] = str, progress: bool = True, desc: str = "images",
              report: BatchReport | None = None) -> BatchReport:
    """Call ``work`` on every item; ``work`` returns {name: inference seconds}.

    A failure that ``failure_of`` recognises is recorded against the item and the batch
    goes on.
    """
    from tqdm.auto import tqdm

    report = report or BatchReport()
    report.total += len(items)
    start = time.perf_counter()
    bar = tqdm(items, desc=desc, unit="image", disable=not progress, file=sys.stderr,
               dynamic_ncols=True)
    for item in bar:
        try:
            seconds = work(item)
        except Exception as exc:
            failure = failure_of(label(item), exc)
            if failure is None:
                raise
            report.failures.append(failure)
        else:
            report.done += 1
            for name, value in seconds.items():
                report.timings.setdefault(name, []).append(value)
        if report.failures:
            bar.set_postfix(failed=len(report.failures), refresh=False)
    report.wall_seconds += time.perf_counter() - start
    return report
