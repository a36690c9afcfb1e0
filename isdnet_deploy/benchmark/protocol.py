"""The paper's FPS protocol (ISDNet supplementary, Algorithm 1), independent of any backend.

A ``Method`` is just a forward callable plus a synchronize callable, so the same loop times
PyTorch, ONNX Runtime and TensorRT alike and every number in a comparison was taken the same
way. Algorithm 1: warm-up forwards, then ``iters`` forwards each timed with
``time.perf_counter()`` between device synchronisations; FPS = ``iters`` / total time.

Two guards make a speed-up trustworthy on a shared or thermally throttled machine:
the re-warm rule (the reference is re-measured before each later method until it is back
within a tolerance of its first FPS) and the interleave mode (A B A B ... rounds, judged by
the median per-round ratio).
"""

from __future__ import annotations

import contextlib
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from ..errors import IsdnetError

PAPER_WARMUP = 20
PAPER_ITERS = 100
MIB = 1024.0 * 1024.0

_CLEAR_REFS = "/proc/self/clear_refs"
_STATUS = "/proc/self/status"
SOURCE_VMHWM = "VmHWM since reset"
SOURCE_RUSAGE = ("ru_maxrss: process-lifetime peak (/proc/self/clear_refs unavailable or "
                 "not resetting VmHWM)")


def _noop() -> None:
    return None


@dataclass
class Method:
    """One thing to time. ``forward`` must already hold its input (the protocol has none).

    ``compile_s``/``compile_calls``: the forwards that compiled (torch.compile) or captured
    CUDA graphs before the protocol started, reported apart from the timed forwards."""

    name: str
    forward: Callable[[], object]
    synchronize: Callable[[], None] = _noop
    context: Callable[[], AbstractContextManager] | None = None
    device: str = "cpu"
    flops: float | None = None
    cuda_peak_memory: Callable[[], int | None] | None = None
    cuda_reset_peak: Callable[[], None] | None = None
    compile_s: float | None = None
    compile_calls: int | None = None


@dataclass
class RewarmInfo:
    """Whether the reference came back to its first FPS before this method was timed."""

    reference: str
    target_fps: float
    achieved_fps: float
    came_back: bool
    tries: int
    tolerance: float
    fps_per_try: list[float] = field(default_factory=list)


@dataclass
class MethodResult:
    """Algorithm 1's FPS for one method plus trtexec-style latency statistics."""

    name: str
    device: str
    fps: float
    total_s: float
    warmup: int
    iters: int
    latencies: list[float]
    mean_ms: float
    median_ms: float
    p90_ms: float
    p99_ms: float
    min_ms: float
    max_ms: float
    speedup: float = 1.0
    peak_host_mib: float | None = None
    peak_host_source: str = ""
    peak_device_mib: float | None = None
    flops: float | None = None
    gflops_per_s: float | None = None
    percent_of_peak: float | None = None
    rewarm: RewarmInfo | None = None
    compile_s: float | None = None
    compile_calls: int | None = None


@dataclass
class InterleaveResult:
    """Per-round FPS of each method and its ratio to the reference (the first method)."""

    reference: str
    rounds: int
    warmup: int
    iters: int
    order: list[str]
    fps: dict[str, list[float]]
    ratios: dict[str, list[float]]
    median_ratio: dict[str, float]


def random_input(height: int, width: int, seed: int = 0) -> np.ndarray:
    """The protocol's 1x3xHxW float32 input; seeded so repeated runs feed identical data."""
    if height < 1 or width < 1:
        raise IsdnetError(f"input size {height}x{width} is empty; pass a positive height and width")
    rng = np.random.default_rng(seed)
    return rng.standard_normal((1, 3, height, width), dtype=np.float32)


def latency_stats(latencies: Sequence[float]) -> dict[str, float]:
    """mean/median/p90/p99/min/max in milliseconds, the figures trtexec reports."""
    ms = np.asarray(latencies, dtype=np.float64) * 1e3
    return {
        "mean_ms": float(ms.mean()),
        "median_ms": float(np.median(ms)),
        "p90_ms": float(np.percentile(ms, 90)),
        "p99_ms": float(np.percentile(ms, 99)),
        "min_ms": float(ms.min()),
        "max_ms": float(ms.max()),
    }


def process_memory_kib(*fields: str) -> dict[str, int]:
    """Fields of /proc/self/status in KiB (e.g. "VmRSS", "VmHWM"); empty where unreadable."""
    found: dict[str, int] = {}
    try:
        with open(_STATUS) as f:
            for line in f:
                key = line.split(":", 1)[0]
                if key in fields:
                    found[key] = int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return {}
    return found


def _reset_host_peak() -> bool:
    """Reset VmHWM to the current RSS so the next reading is this method's own peak.

    Some kernels accept the write but keep the old peak (seen on a Firecracker VM), so the
    reset only counts when VmHWM has come down to VmRSS afterwards.
    """
    try:
        with open(_CLEAR_REFS, "w") as f:
            f.write("5")
    except OSError:
        return False
    status = process_memory_kib("VmHWM", "VmRSS")
    if len(status) < 2:
        return False
    return status["VmHWM"] - status["VmRSS"] <= 4096  # KiB: pages touched since the write


def _read_host_peak_mib(reset_ok: bool) -> tuple[float | None, str]:
    if reset_ok:
        hwm = process_memory_kib("VmHWM").get("VmHWM")
        if hwm is not None:
            return hwm / 1024.0, SOURCE_VMHWM
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is in bytes on macOS and in KiB elsewhere.
    mib = peak / MIB if sys.platform == "darwin" else peak / 1024.0
    return mib, SOURCE_RUSAGE


def _timed_round(method: Method, warmup: int, iters: int, desc: str,
                 progress: bool) -> list[float]:
    """Algorithm 1 for one method: warm-up, then per-forward times between synchronisations."""
    latencies: list[float] = []
    context = method.context() if method.context is not None else contextlib.nullcontext()
    with context, tqdm(total=warmup + iters, desc=desc, file=sys.stderr, disable=not progress,
                       leave=False, unit="fwd") as bar:
        for _ in range(warmup):
            method.forward()
            bar.update()
        method.synchronize()
        for _ in range(iters):
            method.synchronize()
            start = time.perf_counter()
            method.forward()
            method.synchronize()
            latencies.append(time.perf_counter() - start)
            bar.update()
    return latencies


def _check_counts(warmup: int, iters: int) -> None:
    if warmup < 0:
        raise IsdnetError(f"warm-up count {warmup} is negative; pass 0 or more (paper: 20)")
    if iters < 1:
        raise IsdnetError(f"timed iteration count {iters} is below 1; pass 1 or more (paper: 100)")


def _check_methods(methods: Sequence[Method]) -> None:
    if not methods:
        raise IsdnetError("no methods to benchmark; pass at least one")
    names = [m.name for m in methods]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise IsdnetError(f"duplicate method names {duplicates}; give each method its own name")


def _measure(method: Method, warmup: int, iters: int, progress: bool,
             peak_gflops: float | None) -> MethodResult:
    reset_ok = _reset_host_peak()
    if method.cuda_reset_peak is not None:
        method.cuda_reset_peak()
    latencies = _timed_round(method, warmup, iters, method.name, progress)
    host_mib, host_source = _read_host_peak_mib(reset_ok)
    device_mib = None
    if method.cuda_peak_memory is not None:
        peak_bytes = method.cuda_peak_memory()
        device_mib = None if peak_bytes is None else peak_bytes / MIB
    total = sum(latencies)
    fps = iters / total
    gflops = None if method.flops is None else method.flops * fps / 1e9
    percent = None if gflops is None or not peak_gflops else 100.0 * gflops / peak_gflops
    return MethodResult(
        name=method.name, device=method.device, fps=fps, total_s=total, warmup=warmup,
        iters=iters, latencies=latencies, **latency_stats(latencies),
        peak_host_mib=host_mib, peak_host_source=host_source, peak_device_mib=device_mib,
        flops=method.flops, gflops_per_s=gflops, percent_of_peak=percent,
        compile_s=method.compile_s, compile_calls=method.compile_calls,
    )


def _rewarm(reference: Method, target_fps: float, warmup: int, iters: int, tolerance: float,
            tries: int, progress: bool) -> RewarmInfo:
    """Re-run the reference until its FPS is back within ``tolerance`` of its first FPS."""
    fps_per_try: list[float] = []
    came_back = False
    for attempt in range(1, tries + 1):
        desc = f"{reference.name} re-warm {attempt}/{tries}"
        fps = iters / sum(_timed_round(reference, warmup, iters, desc, progress))
        fps_per_try.append(fps)
        if abs(fps - target_fps) <= tolerance * target_fps:
            came_back = True
            break
    return RewarmInfo(reference=reference.name, target_fps=target_fps,
                      achieved_fps=fps_per_try[-1], came_back=came_back,
                      tries=len(fps_per_try), tolerance=tolerance, fps_per_try=fps_per_try)


def run_protocol(methods: Sequence[Method], warmup: int = PAPER_WARMUP,
                 iters: int = PAPER_ITERS, rewarm_tolerance: float = 0.10,
                 rewarm_tries: int = 3, progress: bool = True, *,
                 peak_gflops: float | None = None) -> list[MethodResult]:
    """Time each method with Algorithm 1; the first is the reference for speed-up and re-warm.

    ``peak_gflops`` (e.g. from ``machine.measure_matmul_gflops``) turns each method's achieved
    GFLOP/s into a percentage of what this machine can sustain.
    """
    _check_methods(methods)
    _check_counts(warmup, iters)
    if rewarm_tolerance < 0:
        raise IsdnetError(f"re-warm tolerance {rewarm_tolerance} is negative; pass e.g. 0.10")
    if rewarm_tries < 1:
        raise IsdnetError(f"re-warm tries {rewarm_tries} is below 1; pass 1 or more (default 3)")
    reference = methods[0]
    results = [_measure(reference, warmup, iters, progress, peak_gflops)]
    target = results[0].fps
    for method in methods[1:]:
        info = _rewarm(reference, target, warmup, iters, rewarm_tolerance, rewarm_tries, progress)
        result = _measure(method, warmup, iters, progress, peak_gflops)
        result.rewarm = info
        result.speedup = result.fps / target
        results.append(result)
    return results


def run_interleaved(methods: Sequence[Method], rounds: int = 5, iters: int = PAPER_ITERS,
                    warmup: int = PAPER_WARMUP, progress: bool = True) -> InterleaveResult:
    """Alternate A B A B ... so slow drift of the machine hits every method alike.

    Each turn is a full Algorithm 1 measurement (``warmup`` forwards, then ``iters`` timed),
    so a per-round FPS is comparable with ``run_protocol``'s; the median of the per-round
    ratios to the reference is robust to a few disturbed rounds.
    """
    _check_methods(methods)
    _check_counts(warmup, iters)
    if rounds < 1:
        raise IsdnetError(f"interleave rounds {rounds} is below 1; pass 1 or more (default 5)")
    names = [m.name for m in methods]
    fps: dict[str, list[float]] = {n: [] for n in names}
    order: list[str] = []
    for r in range(1, rounds + 1):
        for method in methods:
            desc = f"round {r}/{rounds} {method.name}"
            fps[method.name].append(iters / sum(_timed_round(method, warmup, iters, desc,
                                                             progress)))
            order.append(method.name)
    reference = names[0]
    ratios = {n: [f / ref for f, ref in zip(fps[n], fps[reference], strict=True)] for n in names}
    median_ratio = {n: float(statistics.median(ratios[n])) for n in names}
    return InterleaveResult(reference=reference, rounds=rounds, warmup=warmup, iters=iters,
                            order=order, fps=fps, ratios=ratios, median_ratio=median_ratio)
