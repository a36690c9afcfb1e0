"""Adapters from the things we time (PyTorch model, runtime ``Segmenter``) to a ``Method``.

Every method times the engine forward only, on inputs prepared once from the protocol's
seeded random 1x3xHxW image, so all rows of a table measure the same work. For an
external-pyramid artifact that means the OpenCV pyramid runs *outside* the timed loop;
``include_pyramid=True`` gives the variant that recomputes it every forward.
torch is imported only inside the functions that need it. Torch methods (the reference and
its compiled / reduced-precision / channels-last / CUDA-graph variants) all go through the
torch backend's ``forward`` and are warmed until nothing compiles any more before timing.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import IsdnetError, MissingDependencyError, missing
from ..runtime import preprocess
from ..runtime.segmenter import Segmenter
from ..runtime.torch_backend import TorchBackend, TorchOptions
from .protocol import Method, random_input

TORCH_NAME = "pytorch eager"


def random_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Seeded HxWx3 uint8 RGB noise, the protocol input for raw-byte (uint8) artifacts."""
    if height < 1 or width < 1:
        raise IsdnetError(f"input size {height}x{width} is empty; pass a positive height and width")
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def torch_method(model: Any, size: tuple[int, int], *, device: str = "cpu",
                 name: str | None = None, seed: int = 0, flops: float | None = None,
                 options: TorchOptions | None = None) -> Method:
    """The PyTorch model under ``options`` (default: the eager fp32 reference), timed through
    the torch backend's device-resident forward; see ``torch_backend_method``."""
    backend = TorchBackend(None, device, model=model, **(options or TorchOptions()).as_kwargs())
    return torch_backend_method(backend, size, name=name, seed=seed, flops=flops)


def torch_name(options: TorchOptions) -> str:
    """'pytorch eager' for the reference, else e.g. 'pytorch compiled bf16 channels-last'."""
    return TORCH_NAME if options.is_reference else f"pytorch {options.label}"


def torch_backend_method(backend: TorchBackend, size: tuple[int, int], *,
                         name: str | None = None, seed: int = 0,
                         flops: float | None = None) -> Method:
    """``backend.forward(x)``: input already on the device, logits left there (no host
    copy), CUDA-synchronised, peak GPU memory on CUDA. Compilation and CUDA-graph capture
    happen here, before the protocol, and are reported as the method's compile time; a
    compile failure raises ``IsdnetError`` naming the cause."""
    import torch

    x = torch.from_numpy(random_input(*size, seed=seed)).to(backend.torch_device)
    warm = backend.warm_up(x)
    prepared = backend.options.compiled or backend.options.cuda_graphs
    return Method(
        name=name or torch_name(backend.options), forward=lambda: backend.forward(x),
        synchronize=backend.synchronize, device=backend.device.kind, flops=flops,
        cuda_peak_memory=backend.peak_device_memory if backend.device.is_cuda else None,
        cuda_reset_peak=backend.reset_peak_device_memory if backend.device.is_cuda else None,
        compile_s=warm.seconds if prepared else None,
        compile_calls=warm.calls if prepared else None,
    )


def protocol_feeds(segmenter: Segmenter, size: tuple[int, int], seed: int = 0
                   ) -> tuple[dict[str, np.ndarray], Callable[[], dict[str, np.ndarray]]]:
    """The artifact's feeds for the protocol input, and a callable that rebuilds them
    (normalisation + pyramid) as a real pipeline would for every frame."""
    contract = segmenter.contract
    if contract.input_kind == "float":
        x = random_input(*size, seed=seed)

        def build() -> dict[str, np.ndarray]:
            return preprocess.feeds_from_normalised(x, contract)
    else:
        image = random_image(*size, seed=seed)

        def build() -> dict[str, np.ndarray]:
            return preprocess.prepare_feeds(image, contract)
    return build(), build


def method_name(segmenter: Segmenter, include_pyramid: bool = False) -> str:
    """E.g. 'onnxruntime fp32', 'tensorrt fp16 (pyramid outside)'."""
    contract = segmenter.contract
    backend = segmenter.backend
    if isinstance(backend, TorchBackend):
        return f"torch backend {backend.options.label}"
    name = f"{backend.name} {contract.precision}"
    if getattr(backend, "precision", None) == "bf16":  # OpenVINO's bf16 inference precision
        name = f"{backend.name} bf16" if contract.precision == "fp32" else f"{name} (bf16)"
    if backend.device.is_cuda and backend.name == "onnxruntime":
        name += f" {backend.device}"
    if contract.pyramid == "external":
        name += " (+OpenCV pyramid)" if include_pyramid else " (pyramid outside)"
    return name


def segmenter_method(segmenter: Segmenter, size: tuple[int, int], *, name: str | None = None,
                     seed: int = 0, include_pyramid: bool = False,
                     flops: float | None = None) -> Method:
    """The backend's forward on feeds prepared once (``include_pyramid``: rebuilt per call)."""
    if include_pyramid and segmenter.contract.pyramid != "external":
        raise IsdnetError("include_pyramid only applies to external-pyramid artifacts; the "
                          "graph-pyramid artifact computes it inside every forward already")
    feeds, build = protocol_feeds(segmenter, size, seed)
    backend = segmenter.backend
    warm = backend.warm_up(feeds["image"]) if isinstance(backend, TorchBackend) else None
    prepared = warm is not None and (backend.options.compiled or backend.options.cuda_graphs)
    if include_pyramid:
        def forward() -> object:
            return backend.run(build())
    else:
        def forward() -> object:
            return backend.run(feeds)
    return Method(name=name or method_name(segmenter, include_pyramid), forward=forward,
                  synchronize=backend.synchronize, device=backend.device.kind, flops=flops,
                  cuda_peak_memory=backend.peak_device_memory,
                  cuda_reset_peak=backend.reset_peak_device_memory,
                  compile_s=warm.seconds if prepared else None,
                  compile_calls=warm.calls if prepared else None)


def unique_names(names: Sequence[str], labels: Sequence[str]) -> list[str]:
    """Make repeated method names distinct by appending each one's label (file name)."""
    counts = defaultdict(int)
    for n in names:
        counts[n] += 1
    return [f"{n} [{label}]" if counts[n] > 1 else n for n, label in zip(names, labels,
                                                                          strict=True)]


def count_model_flops(model: Any, size: tuple[int, int]) -> float | None:
    """FLOPs of one reference forward at ``size``, or None where torch is unavailable."""
    from .flops import count_flops

    try:
        return count_flops(model, (1, 3, *size))
    except MissingDependencyError:
        return None


def measure_peak_gflops(device: str = "cpu") -> float:
    """The machine's sustained float32 matmul GFLOP/s on ``device`` (numpy on the CPU,
    torch on a CUDA GPU), the ceiling the '% of peak' column is measured against."""
    if device != "cuda":
        from .machine import measure_matmul_gflops

        return measure_matmul_gflops()
    try:
        import torch
    except ImportError:
        raise missing("torch", why="measuring the GPU's matmul peak") from None
    n, best = 8192, float("inf")
    a = torch.randn(n, n, device="cuda")
    b = torch.randn(n, n, device="cuda")
    torch.matmul(a, b)
    for _ in range(5):
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        torch.matmul(a, b)
        end.record()
        torch.cuda.synchronize()
        best = min(best, start.elapsed_time(end) / 1e3)
    return 2.0 * n**3 / best / 1e9


def _stage(node: str) -> str:
    """'/model/refine_head/lap_pyramid/Conv_3' -> 'refine_head/lap_pyramid'."""
    if not node.startswith("/"):
        return "(inserted by ONNX Runtime)"
    parts = [p for p in node.split("/") if p][:-1]
    if parts and parts[0] == "model":
        parts = parts[1:]
    return "/".join(parts[:2]) or "(top level)"


def summarise_ort_profile(path: str | os.PathLike, top: int = 10,
                          skip_first: bool = False) -> dict[str, Any]:
    """Per op type, per stage and per node time from ONNX Runtime's profiler JSON, in ms
    per run, each with its share of all node time. ``skip_first`` leaves out the first run
    (it allocates the arena and is slower than the rest)."""
    try:
        with open(path) as f:
            events = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise IsdnetError(f"cannot read ONNX Runtime profile {path} ({exc})") from None
    model_runs = sorted((e for e in events
                         if e.get("cat") == "Session" and e.get("name") == "model_run"),
                        key=lambda e: e["ts"])
    if skip_first and len(model_runs) > 1:
        cut = model_runs[1]["ts"]
        model_runs = model_runs[1:]
        events = [e for e in events if e.get("cat") != "Node" or e["ts"] >= cut]
    runs = [e["dur"] for e in model_runs]
    if not runs:
        raise IsdnetError(f"ONNX Runtime profile {path} has no model runs; run the session "
                          "at least once before ending profiling")
    by_type: dict[str, float] = defaultdict(float)
    by_stage: dict[str, float] = defaultdict(float)
    by_node: dict[str, float] = defaultdict(float)
    for event in events:
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time"):
            continue
        node = event["name"][: -len("_kernel_time")]
        by_type[event.get("args", {}).get("op_name", "?")] += event["dur"]
        by_stage[_stage(node)] += event["dur"]
        by_node[node] += event["dur"]
    total = sum(by_node.values()) or 1.0

    def ranked(table: dict[str, float], limit: int | None) -> list[dict[str, Any]]:
        rows = sorted(table.items(), key=lambda kv: -kv[1])[:limit]
        return [{"name": k, "ms_per_run": v / len(runs) / 1e3, "share": v / total}
                for k, v in rows]

    return {"runs": len(runs), "skipped_first": skip_first, "run_ms": float(np.mean(runs)) / 1e3,
            "node_ms_per_run": total / len(runs) / 1e3,
            "op_types": ranked(by_type, top), "stages": ranked(by_stage, top),
            "nodes": ranked(by_node, top)}


def profile_onnxruntime(path: str | os.PathLike, size: tuple[int, int], *, runs: int = 3,
                        threads: int | None = None, device: str = "cpu", seed: int = 0,
                        top: int = 10) -> dict[str, Any]:
    """Profile a few forwards in a separate session (profiling slows the engine, so the
    timed protocol never runs with it on); the raw JSON is deleted after summarising."""
    from ..runtime.onnxruntime_backend import OnnxRuntimeBackend

    if runs < 1:
        raise IsdnetError(f"profile runs {runs} is below 1; pass 1 or more")
    with tempfile.TemporaryDirectory(prefix="isdnet-ort-profile-") as work:
        backend = OnnxRuntimeBackend(path, device, threads=threads,
                                     profile_prefix=str(Path(work, "ort")))
        feeds, _ = protocol_feeds(Segmenter(backend, scale=False), size, seed)
        for _ in range(runs + 1):
            backend.run(feeds)
        summary = summarise_ort_profile(backend.end_profiling(), top, skip_first=True)
        backend.close()
    return summary


def format_ort_profile(summary: dict[str, Any], title: str = "ONNX Runtime profile") -> str:
    def rows(items: list[dict[str, Any]]) -> list[str]:
        width = max((len(i["name"]) for i in items), default=4)
        return [f"  {i['name']:<{width}}  {i['ms_per_run']:9.2f} ms  {i['share']:6.1%}"
                for i in items]

    return "\n".join([
        f"{title}: {summary['run_ms']:.1f} ms per run (mean of {summary['runs']} runs"
        f"{' after a first one' if summary.get('skipped_first') else ''}; node time "
        f"{summary['node_ms_per_run']:.1f} ms/run)",
        "top op types:", *rows(summary["op_types"]),
        "stages:", *rows(summary["stages"]),
        "top nodes:", *rows(summary["nodes"]),
    ])
