"""What machine a benchmark ran on, and how fast it can multiply matrices at best.

FPS numbers mean little without the CPU, core counts, thread settings and library versions
beside them, so every report carries ``machine_info()``.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import time
from collections.abc import Mapping
from importlib import metadata

import numpy as np

from ..errors import IsdnetError

# Distribution names to report; several (opencv, onnxruntime) ship under alternative names.
_PACKAGES = {
    "numpy": ("numpy",),
    "onnx": ("onnx",),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu"),
    "opencv": ("opencv-python-headless", "opencv-python", "opencv-contrib-python"),
    "torch": ("torch",),
    "tensorrt": ("tensorrt",),
    "openvino": ("openvino",),
}
_ENV_VARS = ("OPENBLAS_CORETYPE", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
             "CUDA_VISIBLE_DEVICES")


def _cpuinfo() -> tuple[str, int | None]:
    """CPU model name and physical core count from /proc/cpuinfo (Linux only)."""
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return platform.processor() or platform.machine(), None
    model = ""
    cores: set[tuple[str, str]] = set()
    for block in text.split("\n\n"):
        entry = {}
        for line in block.splitlines():
            key, _, value = line.partition(":")
            entry[key.strip()] = value.strip()
        model = model or entry.get("model name", "")
        if "core id" in entry:
            cores.add((entry.get("physical id", "0"), entry["core id"]))
    return model or platform.processor() or platform.machine(), len(cores) or None


def _version(names: tuple[str, ...]) -> str | None:
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def _gpus() -> list[str]:
    """GPU names via nvidia-smi; an empty list when there is no NVIDIA driver."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run(
            [smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def machine_info(threads: Mapping[str, int] | None = None) -> dict:
    """CPU, cores, thread settings, OS and library versions, without importing torch.

    ``threads`` is what the caller configured, e.g. ``{"torch": 2, "onnxruntime_intra": 2}``;
    without it the report says the libraries were left to use ``os.cpu_count()`` threads.
    """
    model, physical = _cpuinfo()
    logical = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else logical
    return {
        "cpu_model": model,
        "physical_cores": physical,
        "logical_cores": logical,
        "usable_cores": usable,
        "threads": dict(threads) if threads else {"default (os.cpu_count)": logical},
        "os": platform.platform(),
        "python": platform.python_version(),
        "packages": {key: _version(names) for key, names in _PACKAGES.items()},
        "env": {var: os.environ[var] for var in _ENV_VARS if var in os.environ},
        "gpus": _gpus(),
    }


def measure_matmul_gflops(n: int = 2048, repeats: int = 7) -> float:
    """Sustained float32 GFLOP/s of this machine: 2*n^3 / best time of an n x n matmul run
    by ONNX Runtime (default threads, as the benchmark's ONNX Runtime sessions use).

    This is the "limit" each method's achieved GFLOP/s is compared against, so it must come
    from the widest kernels the machine has: ONNX Runtime's MLAS picks its GEMM kernel from
    the CPU's own flags (AVX-512 where present). numpy's OpenBLAS was used before, but here
    it runs under ``OPENBLAS_CORETYPE=Haswell`` (an AVX2 kernel on an AVX-512 CPU) and its
    figure swung from 153 to 263 GFLOP/s between runs, putting float32 rows above 100 %.
    The best of ``repeats`` runs is taken, since disturbances only ever slow a run down.
    """
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    if n < 1 or repeats < 1:
        raise IsdnetError(f"matmul size {n} / repeats {repeats} must be positive; pass e.g. 2048 7")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])], "peak",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, [n, n]) for name in "ab"],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, onnx.IR_VERSION)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {name: rng.standard_normal((n, n), dtype=np.float32) for name in "ab"}
    session.run(None, feeds)  # warm-up: thread pool start and the output arena
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, feeds)
        best = min(best, time.perf_counter() - start)
    return 2.0 * n**3 / best / 1e9
