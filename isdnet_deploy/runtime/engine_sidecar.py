"""The ``model.engine.json`` sidecar written next to every TensorRT engine.

A serialized engine only runs on the TensorRT version and GPU model that built it, and it
carries none of the artifact contract. The sidecar records both, so a runtime can refuse a
foreign engine with a one-line fix ("rebuild it") instead of a TensorRT crash, and knows the
I/O contract, precision and optimization profile without opening the engine.

The format and its checks live in ``runtime/`` (the runtime reads sidecars and must not
import ``engine/``); ``engine.build`` writes them with ``EngineSidecar.to_json``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from ..contract import Contract
from ..errors import IsdnetError
from .tensorrt_support import GpuInfo

SIDECAR_FORMAT = "isdnet-deploy-engine/1"


def sidecar_path(engine_path: str | os.PathLike) -> Path:
    return Path(f"{os.fspath(engine_path)}.json")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def rebuild_hint(sidecar: EngineSidecar | None, engine_path: str | os.PathLike) -> str:
    onnx = (sidecar.build.get("onnx") if sidecar else None) or "model.onnx"
    return f"rebuild it here with: isdnet-deploy build {onnx} -o {os.fspath(engine_path)}"


@dataclass
class EngineSidecar:
    contract: Contract
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    # {"min": [H, W], "opt": [H, W], "max": [H, W], "inputs": {name: {"min": shape, ...}}}
    profile: dict[str, Any]
    # Options the engine was built with (workspace, optimization level, precision, onnx…).
    build: dict[str, Any]
    engine_bytes: int
    engine_sha256: str
    created: str = ""
    tool_version: str = __version__
    format: str = SIDECAR_FORMAT
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        data = asdict(self)
        data["contract"] = asdict(self.contract)
        return json.dumps(data, indent=2)

    @classmethod
    def from_json(cls, text: str, where: str = "sidecar") -> EngineSidecar:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise IsdnetError(f"{where} is not valid JSON ({exc}); rebuild the engine with "
                              "isdnet-deploy build") from None
        if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT:
            found = data.get("format") if isinstance(data, dict) else None
            raise IsdnetError(f"{where} has format {found!r}, this toolkit reads "
                              f"{SIDECAR_FORMAT!r}; rebuild the engine with isdnet-deploy build")
        try:
            data["contract"] = Contract.from_dict(data["contract"])
            known = set(cls.__dataclass_fields__)
            return cls(**{k: v for k, v in data.items() if k in known})
        except (KeyError, TypeError) as exc:
            raise IsdnetError(f"{where} is missing or has malformed fields ({exc}); rebuild "
                              "the engine with isdnet-deploy build") from None


def read_sidecar(engine_path: str | os.PathLike) -> EngineSidecar:
    path = sidecar_path(engine_path)
    if not path.is_file():
        raise IsdnetError(f"{path} is missing: an engine without its sidecar cannot be checked "
                          f"against this machine; {rebuild_hint(None, engine_path)}")
    return EngineSidecar.from_json(path.read_text(encoding="utf-8"), where=str(path))


def check_compatible(sidecar: EngineSidecar, engine_path: str | os.PathLike,
                     tensorrt_version: str, gpu: GpuInfo) -> None:
    """Refuse an engine built by another TensorRT version or for another GPU model."""
    if sidecar.tensorrt_version != tensorrt_version:
        raise IsdnetError(
            f"{os.fspath(engine_path)} was built with TensorRT {sidecar.tensorrt_version}, this "
            f"machine has TensorRT {tensorrt_version}; {rebuild_hint(sidecar, engine_path)}")
    if (sidecar.gpu_name, sidecar.compute_capability) != (gpu.name, gpu.compute_capability):
        raise IsdnetError(
            f"{os.fspath(engine_path)} was built for {sidecar.gpu_name} (compute "
            f"{sidecar.compute_capability}), this GPU is {gpu.name} (compute "
            f"{gpu.compute_capability}); {rebuild_hint(sidecar, engine_path)}")


def read_engine_bytes(engine_path: str | os.PathLike, sidecar: EngineSidecar) -> bytes:
    """The engine's bytes, refused when truncated or not the file the sidecar describes."""
    path = Path(engine_path)
    if not path.is_file():
        raise IsdnetError(f"engine {path} does not exist; build one with: isdnet-deploy build "
                          f"{sidecar.build.get('onnx') or 'model.onnx'} -o {path}")
    data = path.read_bytes()
    if len(data) != sidecar.engine_bytes:
        raise IsdnetError(f"{path} has {len(data)} bytes but its sidecar records "
                          f"{sidecar.engine_bytes} (truncated or replaced); "
                          f"{rebuild_hint(sidecar, path)}")
    if sha256_bytes(data) != sidecar.engine_sha256:
        raise IsdnetError(f"{path} does not match the checksum in its sidecar (corrupt or "
                          f"replaced); {rebuild_hint(sidecar, path)}")
    return data
