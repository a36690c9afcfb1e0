"""OpenVINO backend: the CPU plugin reading the exported ONNX file directly.

    runtime.load("model.onnx", backend="openvino", precision="bf16", threads=4)

OpenVINO is a second, independent implementation of the ONNX op set, so it is also the
second consumer every export is verified on (``export.onnx_export.verify_onnx``). The graph
is compiled once with its dynamic height and width and then runs at any size the contract
admits. Options:

- ``precision``: ``"f32"`` (default) or ``"bf16"``, OpenVINO's ``INFERENCE_PRECISION_HINT``.
  bf16 needs native BF16 in the CPU (AVX-512 BF16 or AMX, which OpenVINO reports as "BF16"
  in ``OPTIMIZATION_CAPABILITIES``); elsewhere the plugin silently keeps f32 (seen here with
  OpenVINO 2026.4.1 on an AMD EPYC without AVX-512 BF16), so asking for bf16 there is an
  error rather than a run that is quietly not what was asked. The INT8 Q/DQ and FP16 models
  from ``isdnet-deploy quantize`` run as they are with ``f32``: their precision is in the
  graph.
- ``threads``: ``INFERENCE_NUM_THREADS`` (default: OpenVINO's choice, all cores).

The performance hint is ``LATENCY`` (one stream, one image at a time), as the benchmark
protocol and a segmentation service use it. One infer request serves all calls, behind a
lock, so a backend shared between threads stays correct; open one backend per thread for
parallel streams.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..contract import (
    Contract,
    check_graph,
    contract_from_metadata,
    invalid_contract,
    missing_contract,
    scan_onnx_metadata,
)
from ..errors import IsdnetError, missing, one_line
from .backend import Backend, Device
from .inputs import to_host_array

PRECISIONS = ("f32", "bf16")


def native_bf16(core: Any) -> bool:
    """Whether OpenVINO's CPU plugin computes bf16 natively on this CPU."""
    return "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def _ports(ports: Any) -> list[dict]:
    """OpenVINO's view of a graph's inputs or outputs, as ``graph_mismatches`` takes."""
    tensors = []
    for port in ports:
        shape = port.get_partial_shape()
        dims = None if shape.rank.is_dynamic else [
            d.get_length() if d.is_static else "?" for d in shape]
        tensors.append({"name": port.get_any_name(),
                        "dtype": np.dtype(port.get_element_type().to_dtype()).name,
                        "shape": dims})
    return tensors


class OpenVinoBackend(Backend):
    name = "openvino"

    def __init__(self, path: str | Path, device: str = "cpu", *, precision: str = "f32",
                 threads: int | None = None, contract: Contract | None = None) -> None:
        try:
            import openvino as ov
        except ImportError:
            raise missing("openvino", "openvino") from None

        self.path = str(path)
        device = Device.parse(device)
        if device.is_cuda:
            raise IsdnetError("the OpenVINO backend runs on the CPU; use device='cpu' (or the "
                              "onnxruntime/tensorrt backend on a GPU)",
                              cli="the OpenVINO backend runs on the CPU; use --device cpu")
        if precision not in PRECISIONS:
            raise IsdnetError(f"unknown OpenVINO precision {precision!r}; choose one of: "
                              f"{', '.join(PRECISIONS)}")
        if contract is None:
            contract = contract_from_metadata(scan_onnx_metadata(self.path), self.path)
        elif contract.problems():
            raise invalid_contract("the contract passed in", contract.problems())
        core = ov.Core()
        if precision == "bf16" and not native_bf16(core):
            cpu = core.get_property("CPU", "FULL_DEVICE_NAME")
            raise IsdnetError(
                f"bf16 is unavailable on this CPU ({cpu}): it has no native BF16 (AVX-512 BF16 "
                "or AMX), so OpenVINO would run f32 instead; use precision='f32'",
                cli=f"bf16 is unavailable on this CPU ({cpu}): it has no native BF16 (AVX-512 "
                    "BF16 or AMX), so OpenVINO would run f32 instead; use f32")
        try:
            model = core.read_model(self.path)
        except Exception as exc:  # OpenVINO raises RuntimeError for every reading problem
            raise IsdnetError(f"{self.path} could not be read by OpenVINO: the file is "
                              f"truncated, corrupt or not ONNX ({one_line(exc)})") from exc
        if contract is None:
            raise missing_contract(self.path, "pass contract=Contract(...) to describe its "
                                              "inputs")
        check_graph(contract, _ports(model.inputs), _ports(model.outputs), self.path)
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": precision,
                                  "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        try:
            self.compiled = core.compile_model(model, "CPU", config)
        except Exception as exc:  # a graph the CPU plugin rejects: its own words
            raise IsdnetError(f"OpenVINO cannot compile {self.path} with {precision} "
                              f"precision: {one_line(exc)}") from exc
        compiled_in = self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        if compiled_in != precision:  # the plugin may keep f32 without a word: say so
            raise IsdnetError(f"OpenVINO compiled {self.path} in {compiled_in}, not the "
                              f"{precision} asked for; use precision='f32'")
        self.precision = precision
        self.threads = threads
        self._request = self.compiled.create_infer_request()
        self._bound_request = None  # writes into caller buffers; made on first use
        self._lock = threading.Lock()
        self._ov = ov
        super().__init__(contract, device)

    def _run(self, feeds: Mapping[str, Any], out: dict[str, np.ndarray]) -> dict[str, Any]:
        inputs = {name: np.ascontiguousarray(to_host_array(value))
                  for name, value in feeds.items()}
        with self._lock:
            if out and all(name in out for name in self.output_names):
                return self._run_into(inputs, out)
            self._request.infer(inputs, share_inputs=True)
            results = {}
            for name in self.output_names:
                data = self._request.get_tensor(name).data  # reused by the next run
                if name in out:
                    np.copyto(out[name], data)
                    results[name] = out[name]
                else:
                    results[name] = data.copy()
            return results

    def _run_into(self, inputs: dict[str, np.ndarray],
                  out: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs written straight into caller buffers (no copy): the buffers are bound to
        a second request, rebound on every call (a bound tensor keeps its shape)."""
        if self._bound_request is None:
            self._bound_request = self.compiled.create_infer_request()
        for name in self.output_names:
            self._bound_request.set_tensor(name, self._ov.Tensor(out[name], shared_memory=True))
        self._bound_request.infer(inputs, share_inputs=True)
        return {name: out[name] for name in self.output_names}

    def _close(self) -> None:
        self._request = self._bound_request = None
        self.compiled = None
