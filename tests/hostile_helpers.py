"""Small artifacts and files for the hostile-input tests and the fuzzer: a per-pixel ONNX
model with a real contract (milliseconds to load and run), crafted image headers, and a
way to run code in a fresh process under an address-space limit."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from isdnet_deploy.contract import Contract, TensorSpec, embed_in_onnx
from isdnet_deploy.profiles import DEEPGLOBE
from isdnet_deploy.runtime.backend import Backend

ROOT = Path(__file__).resolve().parents[1]
CLASSES = DEEPGLOBE.num_classes
WEIGHTS = np.random.default_rng(0).standard_normal((CLASSES, 3, 1, 1)).astype(np.float32)


def tiny_contract(**changes) -> Contract:
    """A DeepGlobe-like contract for the per-pixel model (test scale 0.8, as DeepGlobe)."""
    values = dict(
        inputs=[TensorSpec("image", "float32", "NCHW", [1, 3, "height", "width"])],
        outputs=[TensorSpec("logits", "float32", "NCHW", [1, CLASSES, "height", "width"])],
        profile="deepglobe", classes=list(DEEPGLOBE.classes),
        palette=[list(c) for c in DEEPGLOBE.palette], test_scale=0.8, opset=17,
        exporter="torchscript")
    values.update(changes)
    return Contract(**values)


def tiny_proto(channels: int = CLASSES, half_resolution: bool = False,
               output_name: str = "logits") -> onnx.ModelProto:
    """image 1x3xHxW -> 1x1 convolution -> logits 1xCxHxW (or at half resolution)."""
    weights = np.resize(WEIGHTS, (channels, 3, 1, 1)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["image", "w"], ["conv" if half_resolution
                                                        else output_name])]
    inits = [numpy_helper.from_array(weights, "w")]
    if half_resolution:
        inits.append(numpy_helper.from_array(np.array([1, 1, 0.5, 0.5], np.float32), "scales"))
        nodes.append(helper.make_node("Resize", ["conv", "", "scales"], [output_name],
                                      mode="nearest"))
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, "height", "width"])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT,
                                       [1, channels, "height", "width"])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def tiny_onnx(path: Path, contract: Contract | None = None, **proto_options) -> Path:
    proto = tiny_proto(**proto_options)
    embed_in_onnx(proto, contract or tiny_contract())
    onnx.save(proto, str(path))
    return path


def with_metadata(path: Path, entries: list[tuple[str, str | bytes]]) -> Path:
    """Rewrite an ONNX file's metadata entries as given, byte for byte (values may be
    bytes that are not UTF-8, keys may repeat)."""
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    placeholders = []
    for i, (key, value) in enumerate(entries):
        entry = proto.metadata_props.add()
        entry.key = key
        if isinstance(value, bytes):
            marker = f"@@value{i:04d}@@"
            entry.value = marker
            placeholders.append((marker.encode(), value))
        else:
            entry.value = value
    data = proto.SerializeToString()
    for marker, value in placeholders:  # same length keeps the protobuf framing valid
        assert len(marker) == len(value), "byte values must be 13 bytes long"
        data = data.replace(marker, value)
    path.write_bytes(data)
    return path


# --- crafted image files ---------------------------------------------------------------------

def png_declaring(width: int, height: int, mode: str = "L") -> bytes:
    """A small valid PNG whose IHDR is then made to declare ``width`` x ``height``."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new(mode, (8, 8)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")  # a valid IHDR
    return bytes(data)


def jpeg_declaring(width: int, height: int) -> bytes:
    """A valid 8x8 JPEG whose frame header declares ``width`` x ``height``: decoders fill
    the missing data and allocate the whole declared image (the bomb of issue 20)."""
    import cv2

    _, encoded = cv2.imencode(".jpg", np.full((8, 8, 3), 90, np.uint8))
    data = bytearray(encoded.tobytes())
    at = data.index(b"\xff\xc0")
    data[at + 5:at + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def set_tiff_tags(path: Path, values: dict[int, int]) -> Path:
    """Overwrite integer tags of a little-endian classic TIFF's first directory in place."""
    import struct

    data = bytearray(path.read_bytes())
    assert data[:4] == b"II*\x00"
    (offset,) = struct.unpack("<I", data[4:8])
    (count,) = struct.unpack("<H", data[offset:offset + 2])
    for i in range(count):
        at = offset + 2 + 12 * i
        tag, kind = struct.unpack("<HH", data[at:at + 4])
        if tag in values:
            fmt = "<H" if kind == 3 else "<I"
            data[at + 8:at + 8 + struct.calcsize(fmt)] = struct.pack(fmt, values[tag])
    path.write_bytes(bytes(data))
    return path


def write_geotiff(path: Path, rgb: np.ndarray, block: int | None = 64, **options) -> Path:
    import rasterio
    from rasterio.transform import from_origin

    tiling = {"tiled": True, "blockxsize": block, "blockysize": block} if block else {}
    with rasterio.open(path, "w", driver="GTiff", height=rgb.shape[0], width=rgb.shape[1],
                       count=3, dtype="uint8", crs="EPSG:32631",
                       transform=from_origin(500000.0, 4650000.0, 0.5, 0.5), **tiling,
                       **options) as dst:
        dst.write(rgb.transpose(2, 0, 1))
    return path


# --- running code in a fresh, memory-capped process ----------------------------------------

def run_capped(code: str, limit_mib: int, timeout: int = 300) -> dict:
    """Run ``code`` (which prints one JSON line last) in a fresh interpreter whose address
    space is capped at ``limit_mib``; returns that JSON plus 'peak_mib' and 'returncode'.

    Peaks are read as VmHWM from /proc/self/status, never ru_maxrss: Linux keeps a process's
    ru_maxrss across exec, so a child forked from a pytest process that has grown to 2.5 GiB
    reports 2.5 GiB before it has allocated anything (seen in full-suite runs)."""
    script = textwrap.dedent(code)
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'tests'}",
               OMP_NUM_THREADS="1")
    limit = limit_mib << 20

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=timeout, preexec_fn=cap)
    lines = done.stdout.strip().splitlines()
    try:
        result = json.loads(lines[-1]) if lines else {}
    except json.JSONDecodeError:
        result = {}
    result.update(returncode=done.returncode, stderr=done.stderr, stdout=done.stdout)
    return result


# --- a backend whose output depends on the tile's context -----------------------------------

class ContextBackend(Backend):
    """Per-pixel scores plus a term from the whole input's mean, so that tiling and
    blending change the labels (as ISDNet's global context does), in milliseconds."""

    name = "context"

    def __init__(self, output_kind: str = "logits", **contract_changes) -> None:
        if output_kind == "labels":
            contract_changes.update(output_kind="labels", outputs=[
                TensorSpec("labels", "uint8", "HW", ["height", "width"])])
        super().__init__(tiny_contract(**contract_changes))

    def _run(self, feeds, out):
        x = feeds["image"][0]
        logits = np.einsum("kc,chw->khw", WEIGHTS[:, :, 0, 0], x)
        logits += 3.0 * np.sin(np.arange(CLASSES, dtype=np.float32)
                               * float(x.mean()) * 7.0)[:, None, None]
        logits = logits[None].astype(np.float32)
        if self.contract.output_kind == "labels":
            return {"labels": logits[0].argmax(0).astype(np.uint8)}
        return {"logits": logits}


def refusal_under_cap(module: str, function: str, path: Path, limit_mib: int) -> dict:
    """Call ``module.function(path)`` in a fresh process under an address-space cap:
    {'outcome': the IsdnetError's message (or 'succeeded'), 'peak_mib', 'returncode'}."""
    return run_capped(f"""
        import json, resource
        from {module} import {function}
        from isdnet_deploy.errors import IsdnetError
        try:
            {function}({str(path)!r})
            outcome = "succeeded"
        except IsdnetError as exc:
            outcome = str(exc)
        status = open("/proc/self/status").read()
        peak = int(status.split("VmHWM:")[1].split()[0]) // 1024
        print(json.dumps({{"outcome": outcome, "peak_mib": peak}}))
    """, limit_mib)
