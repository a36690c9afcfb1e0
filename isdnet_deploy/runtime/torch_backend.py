"""The PyTorch reference as a backend (imports torch only when opened), and the optimised
paths a PyTorch user reaches for instead of an exported engine.

    runtime.load("model.pth", backend="torch", compile="inductor", precision="bf16",
                 channels_last=True, cuda_graphs=False)

Defaults are the reference: eager, float32, NCHW memory, no graphs. The options:

- ``compile``: ``"none"``, ``"inductor"`` or ``"inductor:MODE"`` with MODE one of
  torch.compile's modes (``default``, ``reduce-overhead``, ``max-autotune``,
  ``max-autotune-no-cudagraphs``). The whole forward is one graph (``fullgraph=True``: a
  graph break is an error, never a silent partial fallback to eager). Compilation happens
  on the first forward at a new input size (torch.compile is lazy) and is specialised to
  that size; other sizes recompile, torch.compile's automatic dynamic shapes turning sizes
  symbolic after the first. Measured on 2 CPU cores: 64x64, 96x64 and 128x96 each compiled
  (48 to 104 s, inductor's on-disk cache warm), after which 160x128 reused the symbolic
  graph. So compiling suits a fixed size (tiles, video frames, the benchmark); past
  torch.compile's recompile limit (8 per backend) a new size is a one-line error.
- ``precision``: ``"fp32"``, ``"fp16"`` or ``"bf16"``: the forward runs under
  ``torch.autocast``; logits come back as float32 all the same (the contract's output).
  fp16 needs a CUDA GPU: PyTorch's CPU path has no fast fp16 convolutions, so asking for
  it on the CPU is refused rather than quietly run slower (bf16 is the CPU's 16-bit type).
- ``channels_last``: weights and input in NHWC memory order (cuDNN's and oneDNN's
  preferred convolution layout); the model is copied first, so a caller's model is left
  as it was.
- ``cuda_graphs``: CUDA only. The whole forward is recorded once per input size and
  replayed, removing the per-kernel Python launch cost that bounds the eager reference on
  a fast GPU (119.5 FPS at 1958x1958 and 120.7 FPS at 1024x2048 on an H200: the same
  latency at two pixel counts). A graph is static: one is captured per input shape, after
  3 warm-up forwards on a side stream (which also compile, when compiling), and at most
  ``GRAPH_CACHE`` shapes are kept; a new shape beyond that drops the least recently used
  graph and its memory. Outputs of ``forward`` then live in the graph's memory and are
  overwritten by the next call at that shape (``run`` copies them out at once).

Compilation failures (no C++ compiler for inductor's CPU code, an operator it cannot
lower) become one ``IsdnetError`` naming the cause; the backend remembers it and refuses
further forwards instead of recompiling for minutes per call.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..contract import Contract, TensorSpec
from ..errors import IsdnetError, missing
from ..profiles import MIN_SIZE, profile_for_classes
from .backend import Backend, Device

COMPILERS = ("none", "inductor")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# Modes in which inductor records CUDA graphs itself (its "cudagraph trees").
INDUCTOR_GRAPH_MODES = ("reduce-overhead", "max-autotune")
PRECISIONS = ("fp32", "fp16", "bf16")
GRAPH_CACHE = 4
GRAPH_WARMUP = 3
# Calls allowed to keep compiling at one input size before warm_up gives up.
MAX_WARMUP_CALLS = 6


def _flag(value: Any, what: str) -> bool:
    if isinstance(value, bool):
        return value
    raise IsdnetError(f"{what} must be True or False, not {value!r}")


@dataclass(frozen=True)
class TorchOptions:
    """How the torch backend runs the network; checked on creation, importing no torch."""

    compile: str = "none"
    precision: str = "fp32"
    channels_last: bool = False
    cuda_graphs: bool = False

    def __post_init__(self) -> None:
        compiler, _, mode = str(self.compile).partition(":")
        if compiler not in COMPILERS or (compiler == "none" and mode):
            raise IsdnetError(f"unknown compile setting {self.compile!r}; use 'none', "
                              f"'inductor' or 'inductor:MODE' (MODE: {', '.join(COMPILE_MODES)})")
        if mode and mode not in COMPILE_MODES:
            raise IsdnetError(f"unknown torch.compile mode {mode!r}; use one of "
                              f"{', '.join(COMPILE_MODES)}")
        if self.precision not in PRECISIONS:
            raise IsdnetError(f"unknown precision {self.precision!r}; use 'fp32', 'fp16' or "
                              "'bf16'")
        _flag(self.channels_last, "channels_last")
        _flag(self.cuda_graphs, "cuda_graphs")
        if self.cuda_graphs and self.compile_mode in INDUCTOR_GRAPH_MODES:
            raise IsdnetError(
                f"compile mode {self.compile_mode!r} records CUDA graphs inside inductor "
                "already; with cuda_graphs=True use 'inductor' or "
                "'inductor:max-autotune-no-cudagraphs'",
                cli=f"compile mode {self.compile_mode!r} records CUDA graphs inside inductor "
                    "already; with cuda_graphs use inductor or "
                    "inductor:max-autotune-no-cudagraphs")

    @property
    def compiled(self) -> bool:
        return self.compile != "none"

    @property
    def compile_mode(self) -> str | None:
        """torch.compile's mode (None when not compiling)."""
        if not self.compiled:
            return None
        return self.compile.partition(":")[2] or "default"

    @property
    def is_reference(self) -> bool:
        return self == TorchOptions()

    @property
    def label(self) -> str:
        """E.g. 'eager fp32', 'compiled bf16 channels-last', 'compiled max-autotune fp16
        cuda-graphs'."""
        words = ["compiled" if self.compiled else "eager"]
        if self.compile_mode not in (None, "default"):
            words.append(self.compile_mode)
        words.append(self.precision)
        if self.channels_last:
            words.append("channels-last")
        if self.cuda_graphs:
            words.append("cuda-graphs")
        return " ".join(words)

    def as_kwargs(self) -> dict[str, Any]:
        return {"compile": self.compile, "precision": self.precision,
                "channels_last": self.channels_last, "cuda_graphs": self.cuda_graphs}

    @classmethod
    def parse(cls, spec: str) -> TorchOptions:
        """``compile=inductor:max-autotune,precision=bf16,channels_last,cuda_graphs`` (a bare
        flag name means true; ``eager`` alone is the reference)."""
        settings: dict[str, Any] = {}
        keys = ("compile", "precision", "channels_last", "cuda_graphs")
        for part in (p.strip() for p in str(spec).split(",")):
            if not part or part == "eager":
                continue
            key, has_value, value = part.partition("=")
            key = key.strip().replace("-", "_")
            if key not in keys:
                raise IsdnetError(f"unknown setting {key!r} in torch variant {spec!r}; use "
                                  "compile=none|inductor[:MODE], precision=fp32|fp16|bf16, "
                                  "channels_last, cuda_graphs")
            if key in settings:
                raise IsdnetError(f"{key} given twice in torch variant {spec!r}")
            if key in ("channels_last", "cuda_graphs"):
                word = value.strip().lower() if has_value else "true"
                if word not in ("true", "false", "1", "0"):
                    raise IsdnetError(f"{key}={value} in torch variant {spec!r}: use "
                                      f"{key}, {key}=true or {key}=false")
                settings[key] = word in ("true", "1")
            else:
                settings[key] = value.strip()
        return cls(**settings)

    def check_device(self, device: Device) -> None:
        """Refuse settings the device cannot run, in one line each."""
        if device.is_cuda:
            return
        if self.cuda_graphs:
            raise IsdnetError("cuda_graphs=True needs device='cuda' (CUDA graphs record GPU "
                              "kernel launches); drop cuda_graphs on the CPU",
                              cli="--cuda-graphs needs --device cuda (CUDA graphs record GPU "
                                  "kernel launches); drop it on the CPU")
        if self.precision == "fp16":
            raise IsdnetError("precision 'fp16' needs device='cuda': PyTorch has no fast fp16 "
                              "convolutions on the CPU; use precision='bf16' or 'fp32' there",
                              cli="fp16 needs --device cuda: PyTorch has no fast fp16 "
                                  "convolutions on the CPU; use bf16 or fp32 there")


@dataclass(frozen=True)
class WarmUp:
    """What warm-up did before a timed run: calls that compiled or captured a graph, their
    wall time (one forward each included), and how many compilations happened."""

    seconds: float
    calls: int
    compilations: int
    graphs: int


def reference_contract(num_classes: int, checkpoint_sha256: str | None = None,
                       profile: str | None = None, precision: str = "fp32") -> Contract:
    from ..profiles import get_profile

    prof = get_profile(profile) if profile else profile_for_classes(num_classes)
    return Contract(
        inputs=[TensorSpec("image", "float32", "NCHW", [1, 3, "height", "width"])],
        outputs=[TensorSpec("logits", "float32", "NCHW", [1, num_classes, "height", "width"])],
        min_size=MIN_SIZE, profile=prof.name if prof else None,
        classes=list(prof.classes) if prof else [f"class_{i}" for i in range(num_classes)],
        palette=[list(c) for c in prof.palette] if prof else [],
        test_scale=prof.test_scale if prof else 1.0, checkpoint_sha256=checkpoint_sha256,
        precision=precision, exporter="pytorch-eager", tool_version="")


def _compile_counter(torch: Any) -> Any:
    """Dynamo's count of compiled graphs (it has no public counter; a test checks that
    compiling moves it, so a torch release that drops it fails loudly, not silently)."""
    return torch._dynamo.utils.counters["stats"]


def _compile_error(torch: Any, exc: BaseException) -> bool:
    """Whether ``exc`` came from torch.compile (tracing, lowering or the C++ compiler)."""
    from torch._inductor import exc as inductor_exc

    return isinstance(exc, (torch._dynamo.exc.TorchDynamoException,
                            inductor_exc.InvalidCxxCompiler, inductor_exc.CppCompileError))


def _cause(exc: BaseException) -> str:
    """The innermost error's first line: what went wrong, without the traceback (dynamo
    keeps a backend's own error as ``inner_exception``)."""
    while True:
        inner = getattr(exc, "inner_exception", None) or exc.__cause__
        if inner is None:
            break
        exc = inner
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= 240 else text[:237] + "..."


class _GraphCache:
    """One captured CUDA graph per input shape, least recently used dropped beyond
    ``limit``. Each graph keeps a private memory pool (graphs captured from one pool may
    only be replayed in capture order, which changing sizes do not follow)."""

    def __init__(self, torch: Any, forward: Any, limit: int = GRAPH_CACHE) -> None:
        self.torch = torch
        self.forward = forward
        self.limit = limit
        self.entries: OrderedDict[tuple[int, ...], tuple[Any, Any, Any]] = OrderedDict()
        self.captured = 0

    def run(self, x: Any) -> Any:
        key = tuple(x.shape)
        entry = self.entries.get(key)
        if entry is None:
            entry = self._capture(x)
            self.entries[key] = entry
            while len(self.entries) > self.limit:
                self.entries.popitem(last=False)
        else:
            self.entries.move_to_end(key)
        graph, static_in, static_out = entry
        static_in.copy_(x)
        graph.replay()
        return static_out

    def _capture(self, x: Any) -> tuple[Any, Any, Any]:
        torch = self.torch
        static_in = x.clone()
        side = torch.cuda.Stream(device=x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side):
            for _ in range(GRAPH_WARMUP):
                self.forward(static_in)
        torch.cuda.current_stream(x.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = self.forward(static_in)
        self.captured += 1
        return graph, static_in, static_out

    def clear(self) -> None:
        self.entries.clear()


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, checkpoint: str | Path | None = None, device: str = "cpu", *,
                 model: object | None = None, profile: str | None = None,
                 threads: int | None = None, compile: str = "none", precision: str = "fp32",
                 channels_last: bool = False, cuda_graphs: bool = False) -> None:
        options = TorchOptions(compile, precision, channels_last, cuda_graphs)
        device = Device.parse(device)
        options.check_device(device)
        try:
            import torch
        except ImportError:
            raise missing("torch", why="needed for the PyTorch reference backend") from None
        from ..model.checkpoint import build_model, load_model

        if device.is_cuda and not torch.cuda.is_available():
            raise IsdnetError("device 'cuda' asked for, but torch sees no CUDA GPU; use "
                              "device='cpu'",
                              cli="--device cuda asked for, but torch sees no CUDA GPU; use "
                                  "--device cpu")
        if threads:
            torch.set_num_threads(threads)
        self.torch = torch
        self.options = options
        if model is None:
            model = load_model(checkpoint) if checkpoint else build_model()
        elif options.channels_last:
            model = copy.deepcopy(model)  # .to(memory_format) would change the caller's
        self.torch_device = torch.device(str(device))
        self.model = model.to(self.torch_device).eval()
        if options.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.module = self.model
        if options.compiled:
            # fullgraph: a graph break or the recompile limit is an error, never a silent
            # partial fallback to eager; isolate_recompiles: this backend's compilations are
            # its own (counted and limited per backend, not shared with other backends
            # compiling the same model class).
            mode = None if options.compile_mode == "default" else options.compile_mode
            self.module = torch.compile(self.model, backend="inductor", mode=mode,
                                        fullgraph=True, isolate_recompiles=True)
        self._dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(options.precision)
        self._graphs = _GraphCache(torch, self._forward) if options.cuda_graphs else None
        self._failed: IsdnetError | None = None
        super().__init__(reference_contract(model.num_classes,
                                            getattr(model, "checkpoint_sha256", None), profile,
                                            options.precision),
                         device)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self._dtype is None:
            return contextlib.nullcontext()
        # The autocast weight-cast cache must be off while a CUDA graph is captured.
        return self.torch.autocast(self.torch_device.type, dtype=self._dtype,
                                   cache_enabled=not self.options.cuda_graphs)

    def _forward(self, x: Any) -> Any:
        if self.options.channels_last:
            x = x.contiguous(memory_format=self.torch.channels_last)
        with self._autocast():
            logits = self.module(x)
        return logits.float().contiguous()

    def forward(self, image: Any) -> Any:
        """Float32 NCHW logits as a tensor on the backend's device, for a normalised
        1x3xHxW tensor (or array); no host copy, so timing it measures the network. With
        cuda_graphs the result is overwritten by the next call at the same size."""
        if self.closed:
            raise IsdnetError(f"this {self.name} backend is closed; open the artifact again")
        if self._failed is not None:
            raise self._failed
        torch = self.torch
        x = image if isinstance(image, torch.Tensor) else torch.from_numpy(np.asarray(image))
        x = x.to(self.torch_device, non_blocking=True)
        try:
            with torch.inference_mode():
                return self._graphs.run(x) if self._graphs is not None else self._forward(x)
        except Exception as exc:
            if not (self.options.compiled and _compile_error(torch, exc)):
                raise
            self._failed = IsdnetError(
                f"torch.compile ({self.options.compile}) failed: {_cause(exc)}; use "
                "compile='none', or fix the cause (inductor's CPU code needs a working C++ "
                "compiler: g++ on PATH or CXX)",
                cli=f"torch.compile ({self.options.compile}) failed: {_cause(exc)}; run "
                    "uncompiled (--torch-compile none, or no compile= in --torch-variant), "
                    "or fix the cause (inductor's CPU code needs a working C++ compiler: g++ "
                    "on PATH or CXX)")
            raise self._failed from None

    def warm_up(self, image: Any, max_calls: int = MAX_WARMUP_CALLS) -> WarmUp:
        """Run forwards on ``image`` until one compiles nothing and captures no graph, so
        that a timed run that follows contains neither; returns what that took.

        Without compilation or CUDA graphs there is nothing to prepare: it returns at once
        with zero calls. Refuses, in one line, a forward that still compiles after ``max_calls``.
        """
        if not (self.options.compiled or self.options.cuda_graphs):
            return WarmUp(seconds=0.0, calls=0, compilations=0, graphs=0)
        stats = _compile_counter(self.torch)

        def marks() -> tuple[int, int]:
            return stats["unique_graphs"], self._graphs.captured if self._graphs else 0

        first = marks()
        calls, seconds = 0, 0.0
        while True:
            before = marks()
            start = time.perf_counter()
            self.forward(image)
            self.synchronize()
            elapsed = time.perf_counter() - start
            if marks() == before:
                break
            calls, seconds = calls + 1, seconds + elapsed
            if calls >= max_calls:
                raise IsdnetError(f"torch.compile kept compiling for {calls} forwards at one "
                                  f"input size ({self.options.label}); use compile='none'",
                                  cli=f"torch.compile kept compiling for {calls} forwards at "
                                      f"one input size ({self.options.label}); use "
                                      "--torch-compile none")
        last = marks()
        return WarmUp(seconds=seconds, calls=calls, compilations=last[0] - first[0],
                      graphs=last[1] - first[1])

    def _run(self, feeds: Mapping[str, np.ndarray],
             out: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        result = self.forward(feeds["image"]).cpu().numpy()
        if "logits" in out:
            np.copyto(out["logits"], result)
            result = out["logits"]
        return {"logits": result}

    def synchronize(self) -> None:
        if self.device.is_cuda:
            self.torch.cuda.synchronize(self.torch_device)

    def reset_peak_device_memory(self) -> None:
        if self.device.is_cuda:
            self.torch.cuda.reset_peak_memory_stats(self.torch_device)

    def peak_device_memory(self) -> int | None:
        if not self.device.is_cuda:
            return None
        return self.torch.cuda.max_memory_allocated(self.torch_device)

    def _close(self) -> None:
        if self._graphs is not None:
            self._graphs.clear()
        self.model = self.module = None
