"""The C library against the Python runtime: time per predict, the C library's added
memory, and the cost of the Python runtime's exact logits resize.

    python benchmarks/c_vs_python.py --model isdnet.onnx --size 1024x1024 --rounds 5

Builds libisdnet with its test programs (c/, CMake) into --build, then measures on one
image (the gradient c/tests/predict_repeat.c makes, recreated here):

- time: --rounds interleaved rounds. In each, the C program opens the model and calls
  isd_predict() 1 + --calls times, and this process calls runtime.load(model).predict()
  1 + --calls times; the first call of each is a warm-up. The ratio is the median Python
  call over the median C call of the round; the median ratio over rounds is the one to
  trust on a shared machine. Both use ONNX Runtime's default thread count unless
  --threads is given (then both use it).
- memory: peak resident memory (VmHWM of /proc/<pid>/status, read by each process at its
  end) of a C program that opens the model and predicts once, of a C program that runs
  only the ONNX Runtime session with the same settings once at the network's input size
  (c/tests/ort_session_only.c), and of a fresh Python process that loads the runtime and
  predicts once. The C library's added memory is the first minus the second.
- logits -> labels: runtime.preprocess.logits_to_labels against the cv2.resize + argmax it
  replaced, on random 7-class logits from --postprocess-size x 0.8, interleaved.

Prints a summary and writes JSON with every measurement to -o.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def gradient_image(height: int, width: int) -> np.ndarray:
    """predict_repeat.c's image, byte for byte."""
    y, x = np.mgrid[0:height, 0:width].astype(np.int64)
    image = np.stack([255 * x // width, 255 * y // height, (x * y // 7 + x // 3) & 0xFF], 2)
    return image.astype(np.uint8)


def build_programs(build: Path) -> Path:
    """Configures and builds c/ with its test programs (incremental when done before)."""
    subprocess.run(["cmake", "-S", str(ROOT / "c"), "-B", str(build),
                    "-DISDNET_BUILD_TESTS=ON"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", str(build), "-j2"], check=True,
                   stdout=subprocess.DEVNULL)
    return build


def _run(command: list[str]) -> dict[str, Any]:
    """Runs a program that prints call times (ms) on one line and 'peak_rss_kib N'."""
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout.split("\n")
    lines = [line for line in out if line.strip()]
    peak = int(lines[-1].split()[1])
    times = [float(t) for t in lines[0].split()] if len(lines) > 1 else []
    return {"ms": times, "peak_rss_kib": peak}


PYTHON_PEAK = """
import sys
import numpy as np
sys.path.insert(0, {root!r})
from isdnet_deploy import runtime
from benchmarks.c_vs_python import gradient_image
seg = runtime.load({model!r}, threads={threads!r})
seg.predict(gradient_image({h}, {w}))
for line in open("/proc/self/status"):
    if line.startswith("VmHWM:"):
        print("peak_rss_kib", int(line.split()[1]))
"""


def python_peak_kib(model: str, size: tuple[int, int], threads: int | None) -> int:
    code = PYTHON_PEAK.format(root=str(ROOT), model=model, threads=threads, h=size[0],
                              w=size[1])
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True).stdout
    return int(out.split()[-1])


def measure_time(model: str, size: tuple[int, int], rounds: int, calls: int,
                 threads: int | None, build: Path) -> dict[str, Any]:
    from isdnet_deploy import runtime

    seg = runtime.load(model, threads=threads)
    image = gradient_image(*size)
    command = [str(build / "predict_repeat"), model, str(size[0]), str(size[1]),
               str(calls + 1), str(threads or 0)]
    result: dict[str, Any] = {"c_ms": [], "python_ms": [], "ratios": []}
    for r in range(rounds):
        order = ("c", "python") if r % 2 == 0 else ("python", "c")
        medians = {}
        for side in order:
            if side == "c":
                times = _run(command)["ms"][1:]
            else:
                times = []
                for i in range(calls + 1):
                    start = time.perf_counter()
                    seg.predict(image)
                    if i:
                        times.append(1000 * (time.perf_counter() - start))
            result[f"{side}_ms"].append(times)
            medians[side] = statistics.median(times)
        result["ratios"].append(medians["python"] / medians["c"])
        print(f"  round {r + 1}: C {medians['c']:.0f} ms, Python {medians['python']:.0f} ms, "
              f"Python / C {result['ratios'][-1]:.3f}", flush=True)
    seg.close()
    result["c_median_ms"] = statistics.median(t for ts in result["c_ms"] for t in ts)
    result["python_median_ms"] = statistics.median(t for ts in result["python_ms"] for t in ts)
    result["median_ratio"] = statistics.median(result["ratios"])
    return result


def measure_memory(model: str, size: tuple[int, int], threads: int | None, build: Path,
                   runs: int) -> dict[str, Any]:
    from isdnet_deploy import runtime
    from isdnet_deploy.runtime.preprocess import scaled_size

    contract = runtime.load(model).contract
    net = scaled_size(*size, contract.test_scale) if contract.test_scale != 1.0 else size
    library = [str(build / "predict_repeat"), model, str(size[0]), str(size[1]), "1",
               str(threads or 0)]
    baseline = [str(build / "ort_session_only"), model, str(net[0]), str(net[1])]
    found: dict[str, list[int]] = {"c_library": [], "ort_session_only": [], "python": []}
    for _ in range(runs):
        found["c_library"].append(_run(library)["peak_rss_kib"])
        found["ort_session_only"].append(_run(baseline)["peak_rss_kib"])
        found["python"].append(python_peak_kib(model, size, threads))
    peaks = {k: statistics.median(v) for k, v in found.items()}
    return {"runs": found, "median_peak_kib": peaks, "network_size": list(net),
            "added_by_c_library_kib": peaks["c_library"] - peaks["ort_session_only"]}


def cv2_logits_to_labels(logits: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The runtime's logits -> labels before the exact resize: cv2's float bilinear."""
    import cv2

    scores = np.ascontiguousarray(logits[0].transpose(1, 2, 0))
    resized = cv2.resize(scores, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    return resized.argmax(axis=2).astype(np.uint8)


def measure_postprocess(size: tuple[int, int], rounds: int) -> dict[str, Any]:
    from isdnet_deploy.runtime.preprocess import logits_to_labels, scaled_size

    net = scaled_size(*size, 0.8)
    logits = (np.random.default_rng(0).standard_normal((1, 7, *net)) * 3).astype(np.float32)
    found: dict[str, list[float]] = {"cv2": [], "exact": []}
    for r in range(rounds):
        for name in (("cv2", "exact") if r % 2 == 0 else ("exact", "cv2")):
            function = cv2_logits_to_labels if name == "cv2" else logits_to_labels
            start = time.perf_counter()
            function(logits, size)
            found[name].append(1000 * (time.perf_counter() - start))
    return {"from": list(net), "to": list(size), "classes": 7, "ms": found,
            "median_ms": {k: statistics.median(v) for k, v in found.items()}}


def _size(text: str) -> tuple[int, int]:
    from isdnet_deploy.profiles import parse_size

    return parse_size(text)


@click.command()
@click.option("--model", required=True, type=click.Path(exists=True, dir_okay=False),
              help="ONNX artifact (the default export: float in, logits out).")
@click.option("--size", "size_text", default="1024x1024", show_default=True,
              help="Image size HxW for time and memory.")
@click.option("--rounds", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--calls", type=click.IntRange(min=1), default=3, show_default=True,
              help="Timed calls per side and round (after one warm-up call).")
@click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
              help="ONNX Runtime intra-op threads for both (0: its default).")
@click.option("--memory-runs", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--postprocess-size", default="2448x2448", show_default=True,
              help="Image size HxW of the logits -> labels comparison ('none' skips it).")
@click.option("--build", "build_dir", default=str(ROOT / "build" / "c-bench"),
              show_default=True, help="CMake build folder for c/ and its test programs.")
@click.option("-o", "--output", default=None, help="Write every measurement as JSON here.")
def main(model: str, size_text: str, rounds: int, calls: int, threads: int, memory_runs: int,
         postprocess_size: str, build_dir: str, output: str | None) -> None:
    size = _size(size_text)
    model = os.path.abspath(model)
    build = build_programs(Path(build_dir))
    results: dict[str, Any] = {"model": model, "size": list(size), "threads": threads,
                               "cpus": os.cpu_count()}
    print(f"time per predict at {size[0]}x{size[1]} ({rounds} interleaved rounds):")
    results["time"] = measure_time(model, size, rounds, calls, threads or None, build)
    t = results["time"]
    print(f"C isd_predict {t['c_median_ms']:.0f} ms, Python predict "
          f"{t['python_median_ms']:.0f} ms; Python / C median ratio {t['median_ratio']:.3f}")
    results["memory"] = measure_memory(model, size, threads or None, build, memory_runs)
    m = results["memory"]
    peaks = m["median_peak_kib"]
    print(f"peak memory: C library {peaks['c_library'] / 1024:.1f} MiB, ONNX Runtime session "
          f"only {peaks['ort_session_only'] / 1024:.1f} MiB (added by libisdnet "
          f"{m['added_by_c_library_kib'] / 1024:.1f} MiB), Python runtime "
          f"{peaks['python'] / 1024:.1f} MiB")
    if postprocess_size != "none":
        results["postprocess"] = measure_postprocess(_size(postprocess_size), rounds)
        p = results["postprocess"]
        print(f"logits -> labels {p['from'][0]}x{p['from'][1]} -> {p['to'][0]}x{p['to'][1]}, "
              f"7 classes: cv2 {p['median_ms']['cv2']:.0f} ms, exact "
              f"{p['median_ms']['exact']:.0f} ms")
    if output:
        Path(output).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
