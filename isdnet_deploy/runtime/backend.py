"""The one small interface every runtime backend implements, and the checks they share.

A backend only moves named arrays through an engine; pre/post-processing lives in
``Segmenter``, judging outputs lives in ``isdnet_deploy.metrics``. As in Polygraphy's
runners, the lifecycle and the input checks live here, once: a backend opens its engine in
its constructor, implements ``_run`` (and ``_close`` when it holds resources), and every
backend then refuses a closed handle, a missing or unknown input, a wrong dtype, rank or
size, and a wrong caller buffer with the same one-line errors before its engine sees
anything. Adding a backend is one file with a subclass plus one line in
``runtime.registry``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..contract import Contract, TensorSpec
from ..errors import IsdnetError
from .inputs import as_device_array, to_host_array

DEVICE_KINDS = ("cpu", "cuda")


@dataclass(frozen=True)
class Device:
    """Where a backend runs: ``cpu`` or ``cuda`` with an ordinal ("cuda" means "cuda:0")."""

    kind: str = "cpu"
    index: int = 0

    @classmethod
    def parse(cls, device: str | Device) -> Device:
        if isinstance(device, Device):
            return device
        text = str(device).strip().lower()
        kind, _, ordinal = text.partition(":")
        if kind not in DEVICE_KINDS or (ordinal and kind == "cpu"):
            raise IsdnetError(f"unknown device {device!r}; use 'cpu', 'cuda' or 'cuda:N'")
        if not ordinal:
            return cls(kind)
        if not ordinal.isdigit():
            raise IsdnetError(f"device {device!r} has no valid CUDA ordinal; use e.g. 'cuda:0'")
        return cls(kind, int(ordinal))

    @property
    def is_cuda(self) -> bool:
        return self.kind == "cuda"

    def __str__(self) -> str:
        return f"cuda:{self.index}" if self.is_cuda else "cpu"


@dataclass(frozen=True)
class TensorInfo:
    """One declared input or output: name, dtype, layout and dims (ints, or names such as
    'height' that must take the same value wherever they appear)."""

    name: str
    dtype: np.dtype
    layout: str
    shape: tuple[int | str, ...]

    @classmethod
    def from_spec(cls, spec: TensorSpec) -> TensorInfo:
        return cls(spec.name, np.dtype(spec.dtype), spec.layout, tuple(spec.shape))

    def spatial_axes(self) -> tuple[int, int] | None:
        """Axes of H and W when the layout names both."""
        if "H" in self.layout and "W" in self.layout and len(self.layout) == len(self.shape):
            return self.layout.index("H"), self.layout.index("W")
        return None


def array_meta(value: Any, what: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of a NumPy array, a CUDA array, a torch tensor or any array-like,
    read without copying or consuming it."""
    if isinstance(value, np.ndarray):
        return value.shape, value.dtype
    device = as_device_array(value)
    if device is not None:
        return device.shape, device.dtype
    interface = getattr(value, "__array_interface__", None)
    if isinstance(interface, Mapping):
        return tuple(int(d) for d in interface["shape"]), np.dtype(interface["typestr"])
    shape, dtype = getattr(value, "shape", None), getattr(value, "dtype", None)
    if shape is not None and dtype is not None:
        try:
            return tuple(int(d) for d in shape), np.dtype(str(dtype).removeprefix("torch."))
        except TypeError:
            pass
    if hasattr(value, "__dlpack__"):
        host = to_host_array(value)
        return host.shape, host.dtype
    raise IsdnetError(f"{what} is a {type(value).__name__}, not an array; pass a NumPy array "
                      "(or a CUDA array to a CUDA backend)")


def _dims_text(shape: tuple[int | str, ...]) -> str:
    return "x".join(str(d) for d in shape)


def check_feeds(inputs: tuple[TensorInfo, ...], feeds: Mapping[str, Any],
                min_size: int = 1) -> dict[str, int]:
    """Check feeds against the declared inputs; returns the value of each named dim.

    Names, dtypes, ranks, fixed dims and named dims that must agree across inputs (an
    external pyramid's residual has the image's height and width) are all checked, and H/W
    must reach the contract's minimum.
    """
    if not isinstance(feeds, Mapping):
        raise IsdnetError(f"feeds must be a mapping of input name to array, not a "
                          f"{type(feeds).__name__}")
    names = [t.name for t in inputs]
    missing = [n for n in names if n not in feeds]
    if missing:
        raise IsdnetError(f"missing input {missing[0]!r}; the artifact takes {', '.join(names)}")
    unknown = [n for n in feeds if n not in names]
    if unknown:
        raise IsdnetError(f"unknown input {unknown[0]!r}; the artifact takes {', '.join(names)}")
    bound: dict[str, int] = {}
    for info in inputs:
        shape, dtype = array_meta(feeds[info.name], f"input {info.name!r}")
        if dtype != info.dtype:
            raise IsdnetError(f"input {info.name!r} is {dtype}, the artifact takes {info.dtype}; "
                              f"convert it first (e.g. .astype(np.{info.dtype}))")
        if len(shape) != len(info.shape):
            raise IsdnetError(f"input {info.name!r} has shape {_dims_text(shape)}, the artifact "
                              f"takes {info.layout} {_dims_text(info.shape)}")
        for axis, (got, declared) in enumerate(zip(shape, info.shape, strict=True)):
            if isinstance(declared, int):
                if got != declared:
                    raise IsdnetError(
                        f"input {info.name!r} has shape {_dims_text(shape)}, the artifact takes "
                        f"{info.layout} {_dims_text(info.shape)} (axis {axis} must be {declared})")
            elif bound.setdefault(declared, got) != got:
                raise IsdnetError(f"input {info.name!r} has {declared} {got}, another input has "
                                  f"{bound[declared]}; all inputs must share it")
        axes = info.spatial_axes()
        if axes is not None and min(shape[axes[0]], shape[axes[1]]) < min_size:
            raise IsdnetError(f"input {info.name!r} is {shape[axes[0]]}x{shape[axes[1]]}, below "
                              f"the model's minimum of {min_size}x{min_size}; upscale or pad it")
    return bound


def expected_shape(info: TensorInfo, dims: Mapping[str, int]) -> tuple[int, ...] | None:
    """The concrete shape of an output given the named dims of the inputs (None when a dim
    is not determined by them)."""
    shape = []
    for d in info.shape:
        if isinstance(d, int):
            shape.append(d)
        elif d in dims:
            shape.append(dims[d])
        else:
            return None
    return tuple(shape)


def check_out_buffers(outputs: tuple[TensorInfo, ...], out: Mapping[str, Any] | None,
                      dims: Mapping[str, int]) -> dict[str, Any]:
    """Caller-owned output buffers must name an output and match its dtype and shape; host
    buffers must also be C-contiguous and writable."""
    if not out:
        return {}
    names = {t.name: t for t in outputs}
    for name, buffer in out.items():
        if name not in names:
            raise IsdnetError(f"no output named {name!r}; the artifact has {', '.join(names)}")
        info = names[name]
        shape, dtype = array_meta(buffer, f"out buffer {name!r}")
        want = expected_shape(info, dims)
        if dtype != info.dtype or (want is not None and shape != want):
            wanted = _dims_text(want) if want is not None else _dims_text(info.shape)
            raise IsdnetError(f"out buffer {name!r} is {dtype} {_dims_text(shape)}, this run "
                              f"writes {info.dtype} {wanted}")
        if isinstance(buffer, np.ndarray) and not (buffer.flags.c_contiguous
                                                   and buffer.flags.writeable):
            raise IsdnetError(f"out buffer {name!r} must be a writable C-contiguous array")
    return dict(out)


def check_outputs(outputs: tuple[TensorInfo, ...], results: Mapping[str, Any],
                  dims: Mapping[str, int]) -> None:
    """What the engine returned must be what the contract declares: every output, its dtype,
    rank and the shape the inputs imply. A graph edited after export (an output cut to 3
    channels or to half resolution) would otherwise give silently wrong labels."""
    for info in outputs:
        if info.name not in results:
            raise IsdnetError(f"the engine returned no output {info.name!r}; the artifact "
                              "disagrees with its contract: re-export it")
        shape, dtype = array_meta(results[info.name], f"output {info.name!r}")
        want = expected_shape(info, dims)
        if dtype != info.dtype or len(shape) != len(info.shape) or (
                want is not None and tuple(shape) != want):
            wanted = _dims_text(want) if want is not None else _dims_text(info.shape)
            raise IsdnetError(f"output {info.name!r} came back as {dtype} {_dims_text(shape)}, "
                              f"the contract promises {info.dtype} {wanted}; the artifact "
                              "disagrees with its contract: re-export it")


class Backend(ABC):
    """An opened artifact that maps input arrays to output arrays.

    Lifecycle: the constructor opens (a subclass calls ``super().__init__(contract,
    device)`` once it knows the contract), ``run`` runs, ``close`` releases; a closed
    backend refuses to run. Use it as a context manager to close on every path.
    """

    name: str = "backend"

    def __init__(self, contract: Contract, device: str | Device = "cpu") -> None:
        self.contract = contract
        self.device = Device.parse(device)
        self.inputs = tuple(TensorInfo.from_spec(s) for s in contract.inputs)
        self.outputs = tuple(TensorInfo.from_spec(s) for s in contract.outputs)
        self._closed = False

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    @property
    def closed(self) -> bool:
        return getattr(self, "_closed", True)

    def run(self, feeds: Mapping[str, Any],
            out: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Run once on ``feeds`` (name -> array). ``out`` holds caller-owned buffers to fill
        instead of allocating; the returned dict then holds those same buffers."""
        if self.closed:
            raise IsdnetError(f"this {self.name} backend is closed; open the artifact again")
        dims = check_feeds(self.inputs, feeds, self.contract.min_size)
        results = self._run(feeds, check_out_buffers(self.outputs, out, dims))
        check_outputs(self.outputs, results, dims)
        return results

    @abstractmethod
    def _run(self, feeds: Mapping[str, Any], out: dict[str, Any]) -> dict[str, Any]:
        """Run the engine on checked feeds; fill the buffers in ``out`` (possibly empty)."""

    def synchronize(self) -> None:
        """Wait for queued device work (a no-op on synchronous CPU backends)."""
        return None

    def reset_peak_device_memory(self) -> None:
        """Start a new peak-memory window (backends that can measure one override this)."""
        return None

    def peak_device_memory(self) -> int | None:
        """Bytes of device memory at the peak since the last reset; None where unknown."""
        return None

    def close(self) -> None:
        """Release sessions, engines and device memory; closing twice is harmless."""
        if self.closed:
            return
        self._closed = True
        self._close()

    def _close(self) -> None:
        """Release what the subclass holds (nothing by default)."""
        return None

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
