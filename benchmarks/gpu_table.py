"""The README's GPU table from what benchmarks/gpu_checks.sh wrote into its folder.

    python benchmarks/gpu_table.py /tmp/isdnet-gpu -o /tmp/isdnet-gpu/gpu_table.md

Reads fps_<profile>.json (``isdnet-deploy benchmark --json``), parity_deepglobe.json
(``isdnet-deploy compare --json``) and gpu.txt, and writes one markdown file: FPS per
method and size with both speed-ups (protocol and interleaved median) and the compile time,
then each variant's parity with eager fp32, then the verdict on the issue's goal (an
optimised path >= 3x eager fp32 at 1958x1958 with >= 99.5 % argmax agreement).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from isdnet_deploy.data.images import atomic_write_bytes

GOAL_SIZE = [1958, 1958]
GOAL_SPEEDUP = 3.0
GOAL_AGREEMENT = 0.995
PROFILE_ORDER = ("cityscapes", "deepglobe", "inria")


def _fps_tables(folder: Path) -> list[dict[str, Any]]:
    files = sorted(folder.glob("fps_*.json"), key=lambda p: (
        PROFILE_ORDER.index(p.stem[4:]) if p.stem[4:] in PROFILE_ORDER else 99, p.name))
    return [json.loads(p.read_text()) for p in files]


def _fps_rows(run: dict[str, Any]) -> list[str]:
    settings = run["settings"]
    size = "x".join(str(s) for s in settings["size"])
    medians = (run.get("interleave") or {}).get("median_ratio", {})

    def num(value: float | None, digits: int) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    rows = [f"| {settings['profile']} {size} | {r['name']} | {r['fps']:.1f} | "
            f"{r['speedup']:.2f}x | {num(medians.get(r['name']), 2)}x | "
            f"{r['median_ms']:.2f} | {num(r.get('peak_device_mib'), 0)} | "
            f"{num(r.get('compile_s'), 0)} |" for r in run["results"]]
    rows += [f"| {settings['profile']} {size} | {s['method']} | skipped: {s['reason']} "
             "| | | | | |" for s in settings.get("skipped") or []]
    return rows


def _goal(runs: list[dict[str, Any]], parity: dict[str, Any] | None) -> str:
    at_goal = [r for r in runs if r["settings"]["size"] == GOAL_SIZE]
    if not at_goal or parity is None:
        return ("Goal (>= 3x eager fp32 at 1958x1958 with >= 99.5 % agreement): not judged, "
                "the 1958x1958 run or the parity run is missing.")
    run = at_goal[0]
    medians = (run.get("interleave") or {}).get("median_ratio", {})
    agreement = {c["name"]: c["agreement"] for c in parity["candidates"]}
    passing = [(name, ratio) for name, ratio in medians.items()
               if ratio >= GOAL_SPEEDUP and agreement.get(name, 0.0) >= GOAL_AGREEMENT]
    if passing:
        name, ratio = max(passing, key=lambda item: item[1])
        return (f"Goal met: {name} runs {ratio:.2f}x eager fp32 at 1958x1958 (interleaved "
                f"median) with {agreement[name]:.2%} argmax agreement.")
    best = max(((n, r) for n, r in medians.items() if n != run["results"][0]["name"]),
               key=lambda item: item[1], default=None)
    if best is None:
        return "Goal NOT met: no optimised variant was timed at 1958x1958."
    return (f"Goal NOT met: the fastest variant, {best[0]}, runs {best[1]:.2f}x eager fp32 "
            f"at 1958x1958 with {agreement.get(best[0], float('nan')):.2%} argmax agreement.")


def gpu_table(folder: Path) -> str:
    runs = _fps_tables(folder)
    parity_file = folder / "parity_deepglobe.json"
    parity = json.loads(parity_file.read_text()) if parity_file.is_file() else None
    gpu = (folder / "gpu.txt").read_text().strip() if (folder / "gpu.txt").is_file() else "?"
    lines = [f"GPU: {' / '.join(line for line in gpu.splitlines() if line)}", ""]
    if runs:
        first = runs[0]["settings"]
        lines += [f"Protocol: {first['warmup']} warm-up + {first['iters']} timed forwards per "
                  f"method, CUDA-synchronised, re-warm rule, then {first['rounds']} interleaved "
                  "rounds; random weights; compile s = compiling / capturing CUDA graphs "
                  "before timing (not timed).", "",
                  "| profile, size | method | FPS | speed-up (protocol) | speed-up "
                  "(interleaved median) | median ms | peak GPU MiB | compile s |",
                  "|---|---|---:|---:|---:|---:|---:|---:|"]
        for run in runs:
            lines += _fps_rows(run)
    if parity is not None:
        accuracy = (parity.get("accuracy") or {}).get("backends", {})
        lines += ["", f"Parity with {parity['reference']} on {parity['inputs']} (decided "
                  "pixels: reference top-2 margin > 2 x (1e-4 + 1e-5 max|logit|)):", "",
                  "| method | max abs logit diff | argmax agreement | decided agreement "
                  "| mIoU vs ground truth |", "|---|---:|---:|---:|---:|"]
        for c in parity["candidates"]:
            logits = c.get("logits") or {}
            decided = c.get("decided_agreement")
            miou = accuracy.get(c["name"], {}).get("miou")
            lines.append(f"| {c['name']} | {logits.get('max_abs_diff', float('nan')):.2e} | "
                         f"{c['agreement']:.3%} | "
                         f"{'-' if decided is None else f'{decided:.3%}'} | "
                         f"{'-' if miou is None else f'{miou:.3f}'} |")
        reference_miou = accuracy.get(parity["reference"], {}).get("miou")
        if reference_miou is not None:
            lines.append(f"| {parity['reference']} (reference) | | | | {reference_miou:.3f} |")
    lines += ["", _goal(runs, parity)]
    return "\n".join(lines) + "\n"


@click.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              required=True)
def main(folder: Path, output: Path) -> None:
    """Write the GPU table (markdown) from gpu_checks.sh's FOLDER."""
    atomic_write_bytes(output, gpu_table(folder).encode())
    click.echo(f"wrote {output}", err=True)


if __name__ == "__main__":
    main()
