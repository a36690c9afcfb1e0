"""Tables, JSON and a bar chart for benchmark results, in trtexec's vocabulary.

Throughput is FPS (Algorithm 1: timed iterations / total time); latency is per forward with
min/mean/median/p90/p99 as trtexec prints them, so numbers read the same next to its logs.
Files are written to a temporary file in the target directory and moved into place, so an
interrupted run never leaves a half-written report.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from ..errors import IsdnetError
from ..fileio import atomic_output, atomic_write_bytes
from ..tables import grid, number
from .protocol import InterleaveResult, MethodResult, RewarmInfo

SCHEMA = "isdnet_deploy.benchmark/1"

_COLUMNS = (
    ("method", "<"), ("throughput FPS", ">"), ("speed-up", ">"), ("latency mean ms", ">"),
    ("median ms", ">"), ("p90 ms", ">"), ("p99 ms", ">"), ("peak host MiB", ">"),
    ("peak device MiB", ">"), ("GFLOP/s", ">"), ("% of peak", ">"),
)


def _machine_lines(machine: dict) -> list[str]:
    lines = [f"machine: {machine.get('cpu_model', '?')}, "
             f"{machine.get('physical_cores', '?')} physical / "
             f"{machine.get('logical_cores', '?')} logical cores, threads {machine.get('threads')}"]
    if machine.get("gpus"):
        lines.append(f"gpus: {'; '.join(machine['gpus'])}")
    if machine.get("matmul_gflops"):
        lines.append(f"peak (float32 matmul): {machine['matmul_gflops']:.1f} GFLOP/s")
    return lines


def _rewarm_line(name: str, info: RewarmInfo) -> str:
    runs = ", ".join(f"{f:.2f}" for f in info.fps_per_try)
    plural = "run" if info.tries == 1 else "runs"
    if info.came_back:
        return (f"re-warm before {name}: {info.reference} came back to {info.achieved_fps:.2f} "
                f"FPS (its first measurement {info.target_fps:.2f} FPS, needed within "
                f"±{info.tolerance:.0%}) after {info.tries} re-warm {plural}")
    return (f"re-warm before {name}: {info.reference} did NOT come back: its first measurement "
            f"was {info.target_fps:.2f} FPS, {info.tries} re-warm {plural} gave {runs} FPS "
            f"(needed within ±{info.tolerance:.0%}); the machine was busy or throttling, so "
            f"{name}'s speed-up is unreliable: run again, or use --interleave")


def unsteady(results: Sequence[MethodResult]) -> list[str]:
    """Names of methods timed after a re-warm in which the reference did not come back."""
    return [r.name for r in results if r.rewarm is not None and not r.rewarm.came_back]


def _peak_note(results: Sequence[MethodResult]) -> str | None:
    above = [r.name for r in results if (r.percent_of_peak or 0.0) > 100.0]
    if not above:
        return None
    return (f"% of peak above 100 ({', '.join(above)}): the peak is this machine's float32 "
            "matmul; integer (INT8) and 16-bit kernels do more work per cycle than float32, "
            "so such methods can exceed it (a float32 method above 100 would mean the peak "
            "was under-measured on a busy machine)")


def compile_note(results: Sequence[MethodResult]) -> str | None:
    """What the 'compile s' column holds, when a method compiled or captured graphs."""
    if all(r.compile_s is None for r in results):
        return None
    return ("compile s: wall time of the forwards that compiled (torch.compile) or captured "
            "CUDA graphs, run before the protocol until a forward compiled nothing new (one "
            "forward each included; inductor's on-disk cache can shorten a repeat run); "
            "never part of the timed forwards")


def format_table(results: Sequence[MethodResult], machine: dict | None = None) -> str:
    """One row per method, then the re-warm verdicts; speed-up is against the first method.
    A 'compile s' column appears when a method compiled before it was timed."""
    compiled = compile_note(results) is not None
    rows = [[
        r.name, number(r.fps), f"{r.speedup:.2f}x", number(r.mean_ms, 3), number(r.median_ms, 3),
        number(r.p90_ms, 3), number(r.p99_ms, 3), number(r.peak_host_mib, 1),
        number(r.peak_device_mib, 1), number(r.gflops_per_s, 1), number(r.percent_of_peak, 1),
    ] + ([number(r.compile_s, 1)] if compiled else []) for r in results]
    columns = _COLUMNS + ((("compile s", ">"),) if compiled else ())
    header = [c for c, _ in columns]
    lines = _machine_lines(machine) if machine else []
    if results:
        first = results[0]
        lines.append(f"protocol: {first.warmup} warm-up + {first.iters} timed forwards per method; "
                     f"reference: {first.name}")
    lines.append(grid(header, rows, [a for _, a in columns]))
    lines += [_rewarm_line(r.name, r.rewarm) for r in results if r.rewarm is not None]
    lines += [note for note in (_peak_note(results), compile_note(results)) if note]
    sources = {r.peak_host_source for r in results if r.peak_host_source}
    lines += [f"peak host memory: {s}" for s in sorted(sources)]
    return "\n".join(lines)


def format_interleave(result: InterleaveResult) -> str:
    """Per-round FPS and ratio to the reference, with the median ratio that should be trusted."""
    names = list(result.fps)
    others = [n for n in names if n != result.reference]
    header = ["round", *(f"{n} FPS" for n in names), *(f"{n}/{result.reference}" for n in others)]
    rows = [[str(i + 1), *(number(result.fps[n][i]) for n in names),
             *(f"{result.ratios[n][i]:.3f}" for n in others)] for i in range(result.rounds)]
    rows.append(["median", *("" for _ in names),
                 *(f"{result.median_ratio[n]:.3f}" for n in others)])
    intro = (f"interleaved: {result.rounds} rounds of {' '.join(names)}, each turn "
             f"{result.warmup} warm-up + {result.iters} timed forwards")
    return intro + "\n" + grid(header, rows)


def to_json(results: Sequence[MethodResult], interleave: InterleaveResult | None = None,
            machine: dict | None = None, settings: dict | None = None) -> dict:
    """A plain, JSON-serialisable dict of everything measured and the conditions it ran under."""
    return {
        "schema": SCHEMA,
        "settings": dict(settings or {}),
        "machine": dict(machine or {}),
        "results": [asdict(r) for r in results],
        "interleave": asdict(interleave) if interleave is not None else None,
    }


def from_json(data: dict) -> tuple[list[MethodResult], InterleaveResult | None]:
    """Rebuild the results from ``to_json``'s dict (e.g. to re-plot a saved run)."""
    if data.get("schema") != SCHEMA:
        raise IsdnetError(f"benchmark JSON has schema {data.get('schema')!r}, expected {SCHEMA!r}; "
                          "pass a file written by isdnet-deploy's benchmark")
    results = []
    for item in data["results"]:
        fields = dict(item)
        if fields.get("rewarm") is not None:
            fields["rewarm"] = RewarmInfo(**fields["rewarm"])
        results.append(MethodResult(**fields))
    inter = data.get("interleave")
    return results, InterleaveResult(**inter) if inter is not None else None


def write_json(path: str | os.PathLike, data: dict) -> None:
    """Write ``data`` as JSON atomically; NaN/inf are refused as strict JSON has none."""
    try:
        text = json.dumps(data, indent=2, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise IsdnetError(f"benchmark data is not JSON-serialisable ({exc}); "
                          "pass the dict from report.to_json") from exc
    with atomic_output(path, make_parents=False) as tmp:
        tmp.write_text(text + "\n")


def fps_figure(results: Sequence[MethodResult], title: str = "ISDNet throughput",
               subtitle: str | None = None) -> Any:
    """A matplotlib Figure: one FPS bar per method, labelled with its FPS and speed-up over
    the reference; methods timed after an unsteady reference are marked, with the caveat
    under the chart."""
    if not results:
        raise IsdnetError("no results to plot; run the benchmark with at least one method")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    shaky = set(unsteady(results))
    fig = Figure(figsize=(max(5.0, 1.6 * len(results) + 2.0), 4.4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    names = [r.name + (" (†)" if r.name in shaky else "") for r in results]
    fps = [r.fps for r in results]
    bars = ax.bar(names, fps, color=["#7f7f7f"] + ["#1f77b4"] * (len(results) - 1))
    ax.bar_label(bars, labels=[f"{r.fps:.2f} FPS\n{r.speedup:.2f}x" for r in results],
                 padding=3)
    ax.set_ylim(0, max(fps) * 1.3)
    ax.set_ylabel("throughput (FPS)")
    ax.set_title(title if subtitle is None else f"{title}\n{subtitle}", fontsize=10)
    ax.tick_params(axis="x", labelrotation=15 if len(results) > 3 else 0)
    if shaky:
        fig.supxlabel("† the reference did not come back to its FPS before this method: "
                      "speed-up unreliable (busy machine)", fontsize=8, color="#b22222")
    return fig


def plot_fps(results: Sequence[MethodResult], path: str | os.PathLike,
             title: str = "ISDNet throughput", subtitle: str | None = None) -> None:
    """``fps_figure`` as a PNG, written atomically."""
    buffer = io.BytesIO()
    fps_figure(results, title, subtitle).savefig(buffer, format="png", dpi=120)
    atomic_write_bytes(path, buffer.getvalue(), make_parents=False)
