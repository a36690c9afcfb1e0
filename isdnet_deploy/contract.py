"""The I/O contract an artifact carries, so a runtime needs no side knowledge to run it.

It is stored as JSON in the ONNX metadata (key ``isdnet_deploy``) and copied into the
``.engine.json`` sidecar of TensorRT engines. Plain data, no torch.

A contract comes from a file someone else may have written, and every value in it sets
how the runtime allocates and computes, so ``Contract.from_dict`` checks it against a
schema (``Contract.problems``) before anything uses it: types, lengths and ranges, one
class per output channel, a test scale that cannot multiply an image's memory without
bound. At load, backends compare the graph's own inputs and outputs with it
(``graph_mismatches``), and a file holding the contract twice is refused (the tools that
read it would not agree on which one counts).
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, BinaryIO

from .errors import IsdnetError, one_line
from .profiles import MEAN_RGB, MIN_SIZE, STD_RGB

METADATA_KEY = "isdnet_deploy"
FORMAT = "isdnet-deploy/1"

PYRAMID_MODES = ("graph", "external")
INPUT_KINDS = ("float", "uint8")
OUTPUT_KINDS = ("logits", "labels")
# Where labels are brought back to the image's size: "none", outputs come at the size the
# network saw and the runtime resizes them; "graph", the graph resizes its logits bilinearly
# to the [height, width] fed as OUTPUT_SIZE_INPUT before the argmax (labels outputs only).
OUTPUT_RESIZES = ("none", "graph")
OUTPUT_SIZE_INPUT = "output_size"
PRECISIONS = ("fp32", "fp16", "int8")
EXPORTERS = ("torchscript", "dynamo")
DEFAULT_OPSET = 17
COLORS = ("rgb", "bgr")
DTYPES = ("float32", "float16", "uint8", "int8", "int32", "int64")
LAYOUT_AXES = "NCHW"  # a layout names each axis once, from these letters (e.g. NHWC, HW)
SIZE_LAYOUT = "S"  # the one exception: OUTPUT_SIZE_INPUT, a vector [height, width]

# Schema bounds. Test scales: ISDNet's configs use 0.8 (DeepGlobe, Inria) and 1.0
# (Cityscapes), mmsegmentation's multi-scale testing 0.5-1.75; above 2 a contract would
# multiply every image's pixels (and memory) by more than 4.
MIN_TEST_SCALE, MAX_TEST_SCALE = 0.1, 2.0
MAX_MIN_SIZE = 4096
MAX_SIDE = 1 << 20  # the largest fixed dimension a contract may declare
MAX_CLASSES = 256  # uint8 labels, palette-indexed label maps (ids 0..255)
MAX_WIDE_CLASSES = 65536  # int32 labels output: 16-bit label maps
MAX_TENSORS = 8
MAX_NAME = 128
MAX_TEXT = 4096
MAX_CONTRACT_BYTES = 1 << 20  # the JSON text; exported contracts are about 2 KB
_DIM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SHOW = 5  # problems named in one error line


@dataclass
class TensorSpec:
    name: str
    dtype: str  # numpy dtype name: float32, float16, uint8, int32
    layout: str  # NCHW, NHWC, HW
    shape: list[int | str]  # ints for fixed dimensions, names for dynamic ones
    description: str = ""


@dataclass
class Contract:
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    input_kind: str = "float"
    output_kind: str = "logits"
    pyramid: str = "graph"
    dynamic: bool = True
    fixed_size: list[int] | None = None  # [H, W] when not dynamic
    min_size: int = MIN_SIZE
    mean: list[float] = field(default_factory=lambda: list(MEAN_RGB))
    std: list[float] = field(default_factory=lambda: list(STD_RGB))
    color: str = "rgb"
    profile: str | None = None
    classes: list[str] = field(default_factory=list)
    palette: list[list[int]] = field(default_factory=list)
    test_scale: float = 1.0
    output_resize: str = "none"
    checkpoint_sha256: str | None = None
    precision: str = "fp32"
    opset: int | None = None
    exporter: str | None = None
    tool_version: str = ""
    format: str = FORMAT
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def display_palette(self) -> list[list[int]]:
        """An RGB colour per class: the contract's palette, then distinct generated colours
        for classes it names none for."""
        import colorsys

        palette = [list(colour) for colour in self.palette][:self.num_classes]
        for k in range(len(palette), self.num_classes):
            r, g, b = colorsys.hsv_to_rgb((k * 0.618034) % 1.0, 0.75, 0.95)
            palette.append([round(255 * r), round(255 * g), round(255 * b)])
        return palette

    def input(self, name: str) -> TensorSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise IsdnetError(f"artifact has no input named {name!r}; it has "
                          f"{', '.join(s.name for s in self.inputs)}")

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(asdict(self), indent=indent, sort_keys=False)

    @classmethod
    def from_dict(cls, data: Any, where: str = "artifact") -> Contract:
        """A contract from its JSON object, checked against the schema (``problems``);
        unknown keys are ignored (a newer toolkit may add some)."""
        if not isinstance(data, dict):
            raise IsdnetError(f"{where}'s contract is a JSON {_json_type(data)}, not an object; "
                              "re-export the model with isdnet-deploy")
        if data.get("format") != FORMAT:
            raise IsdnetError(
                f"{where}'s contract has format {_shown(data.get('format'))}, this toolkit "
                f"reads {FORMAT!r}; re-export the model with this version of isdnet-deploy")
        problems = _structure_problems(data)
        if not problems:
            values = dict(data)
            values["inputs"] = [_spec(s) for s in data["inputs"]]
            values["outputs"] = [_spec(s) for s in data["outputs"]]
            known = set(cls.__dataclass_fields__)
            contract = cls(**{k: v for k, v in values.items() if k in known})
            problems = contract.problems()
        if problems:
            raise invalid_contract(where, problems)
        return contract

    @classmethod
    def from_json(cls, text: str | bytes, where: str = "artifact") -> Contract:
        """``from_dict`` of JSON text (or UTF-8 bytes) of at most ``MAX_CONTRACT_BYTES``."""
        if isinstance(text, bytes | bytearray):
            try:
                text = bytes(text).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise IsdnetError(f"{where}'s contract is not valid UTF-8 text ({exc.reason} at "
                                  f"byte {exc.start}); re-export the model with isdnet-deploy"
                                  ) from exc
        if len(text) > MAX_CONTRACT_BYTES:
            raise IsdnetError(f"{where}'s contract is {len(text)} characters long, more than "
                              f"the {MAX_CONTRACT_BYTES} a contract may take; re-export the "
                              "model with isdnet-deploy")
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
            raise IsdnetError(f"{where}'s contract is not valid JSON ({one_line(exc)}); "
                              "re-export the model with isdnet-deploy") from exc
        return cls.from_dict(data, where)

    def problems(self) -> list[str]:
        """Every way this contract breaks the schema (empty when it is sound)."""
        found: list[str] = []
        found += _tensor_problems("inputs", self.inputs)
        found += _tensor_problems("outputs", self.outputs)
        for key, allowed in (("input_kind", INPUT_KINDS), ("output_kind", OUTPUT_KINDS),
                             ("pyramid", PYRAMID_MODES), ("precision", PRECISIONS),
                             ("color", COLORS), ("format", (FORMAT,))):
            if getattr(self, key) not in allowed:
                found.append(f"{key} {_shown(getattr(self, key))} is not one of "
                             f"{', '.join(allowed)}")
        if self.exporter is not None and not _is_text(self.exporter, MAX_NAME):
            found.append(f"exporter {_shown(self.exporter)} is not a short string")
        if not isinstance(self.dynamic, bool):
            found.append(f"dynamic {_shown(self.dynamic)} is not true or false")
        if not _is_int(self.min_size, 1, MAX_MIN_SIZE):
            found.append(f"min_size {_shown(self.min_size)} is not a whole number in "
                         f"1..{MAX_MIN_SIZE}")
        found += self._size_problems()
        for key, low, high in (("mean", 0.0, 255.0), ("std", 1e-3, 1e4)):
            values = getattr(self, key)
            if not (isinstance(values, list) and len(values) == 3
                    and all(_is_number(v, low, high) for v in values)):
                found.append(f"{key} {_shown(values)} is not 3 finite numbers in "
                             f"{low:g}..{high:g}")
        found += self._class_problems()
        if not _is_number(self.test_scale, MIN_TEST_SCALE, MAX_TEST_SCALE):
            found.append(f"test_scale {_shown(self.test_scale)} is not a number in "
                         f"{MIN_TEST_SCALE:g}..{MAX_TEST_SCALE:g}")
        if self.checkpoint_sha256 is not None and not (
                isinstance(self.checkpoint_sha256, str) and _SHA256.match(self.checkpoint_sha256)):
            found.append(f"checkpoint_sha256 {_shown(self.checkpoint_sha256)} is not 64 "
                         "lowercase hex digits")
        if self.opset is not None and not _is_int(self.opset, 1, 1000):
            found.append(f"opset {_shown(self.opset)} is not a whole number in 1..1000")
        for key in ("profile", "tool_version"):
            value = getattr(self, key)
            if value is not None and not _is_text(value, MAX_NAME):
                found.append(f"{key} {_shown(value)} is not a short string without control "
                             "characters")
        if not isinstance(self.extra, dict) or not all(isinstance(k, str) for k in self.extra):
            found.append(f"extra {_shown(self.extra)} is not a JSON object")
        return found

    def _size_problems(self) -> list[str]:
        if self.dynamic is True and self.fixed_size is not None:
            return [f"fixed_size {_shown(self.fixed_size)} is given for a dynamic model"]
        if self.dynamic is False and not (
                isinstance(self.fixed_size, list) and len(self.fixed_size) == 2
                and all(_is_int(v, 1, MAX_SIDE) for v in self.fixed_size)):
            return [f"fixed_size {_shown(self.fixed_size)} is not [height, width] in "
                    f"1..{MAX_SIDE} (a static model needs it)"]
        if (self.dynamic is False and _is_int(self.min_size, 1, MAX_MIN_SIZE)
                and min(self.fixed_size) < self.min_size):
            return [f"fixed_size {self.fixed_size} is below min_size {self.min_size}"]
        return []

    def _class_problems(self) -> list[str]:
        classes, palette = self.classes, self.palette
        if not (isinstance(classes, list) and all(_is_text(c, MAX_NAME) for c in classes)):
            return [f"classes {_shown(classes)} is not a list of short strings without "
                    "control characters"]
        wide = self.output_kind == "labels" and any(
            isinstance(s, TensorSpec) and s.dtype in ("int32", "int64") for s in self.outputs)
        most = MAX_WIDE_CLASSES if wide else MAX_CLASSES
        found = []
        if not 1 <= len(classes) <= most:
            found.append(f"{len(classes)} classes listed; a model has 1..{MAX_CLASSES} (uint8 "
                         f"labels), or up to {MAX_WIDE_CLASSES} with int32 labels")
        if not (isinstance(palette, list) and len(palette) <= max(len(classes), 1)
                and all(isinstance(c, list) and len(c) == 3
                        and all(_is_int(v, 0, 255) for v in c) for c in palette)):
            found.append(f"palette {_shown(palette)} is not at most one [r, g, b] triple of "
                         "whole numbers in 0..255 per class")
        for spec in self.outputs:
            if not isinstance(spec, TensorSpec) or "C" not in str(spec.layout):
                continue
            axis = spec.layout.index("C")
            if isinstance(spec.shape, list) and axis < len(spec.shape) \
                    and isinstance(spec.shape[axis], int) and spec.shape[axis] != len(classes):
                found.append(f"output {spec.name!r} has {spec.shape[axis]} channels but "
                             f"{len(classes)} classes are listed (one class per channel)")
        return found

    def summary(self) -> list[tuple[str, str]]:
        """Rows for a human-readable listing (``isdnet-deploy inspect``)."""
        def tensor(s: TensorSpec) -> str:
            dims = "x".join(str(d) for d in s.shape)
            return f"{s.name}: {s.dtype} {s.layout} [{dims}]"
        size = "dynamic" if self.dynamic else "x".join(map(str, self.fixed_size or []))
        return [
            ("format", self.format),
            ("tool version", self.tool_version),
            ("inputs", "; ".join(tensor(s) for s in self.inputs)),
            ("outputs", "; ".join(tensor(s) for s in self.outputs)),
            ("input kind", self.input_kind),
            ("output kind", self.output_kind),
            ("output resize", self.output_resize),
            ("pyramid", self.pyramid),
            ("size", f"{size} (minimum {self.min_size}x{self.min_size})"),
            ("normalisation", f"{self.color} mean {self.mean} std {self.std}"),
            ("profile", f"{self.profile} (test scale {self.test_scale})"),
            ("classes", ", ".join(self.classes)),
            ("precision", self.precision),
            ("opset", str(self.opset)),
            ("exporter", str(self.exporter)),
            ("checkpoint sha256", str(self.checkpoint_sha256)),
        ] + [(k, json.dumps(v)) for k, v in self.extra.items()]


def _json_type(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "number",
            float: "number", type(None): "null"}.get(type(value), type(value).__name__)


def _shown(value: Any) -> str:
    """A value as a problem line shows it: JSON, escaped, and shortened when long (the
    key and the rule make the reason; the value only illustrates it)."""
    try:
        text = json.dumps(value, allow_nan=True)
    except (TypeError, ValueError, RecursionError):
        text = repr(type(value).__name__)
    return text if len(text) <= 60 else f"{text[:50]}… ({len(text)} characters)"


def _is_int(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _is_number(value: Any, low: float, high: float) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value) and low <= value <= high)


def _is_text(value: Any, most: int) -> bool:
    """A string that prints as itself: bounded, valid UTF-8 (no lone surrogates), and free
    of control characters (a class name holding ESC[2J would clear a terminal)."""
    if not isinstance(value, str) or len(value) > most or _CONTROL.search(value):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


_SPEC_KEYS = {"name": str, "dtype": str, "layout": str, "shape": list}


def _structure_problems(data: dict[str, Any]) -> list[str]:
    """What must hold before the dict can become a Contract at all."""
    found = []
    for key in ("inputs", "outputs"):
        specs = data.get(key)
        if not isinstance(specs, list) or not 1 <= len(specs) <= MAX_TENSORS:
            found.append(f"{key} {_shown(specs)} is not a list of 1..{MAX_TENSORS} tensors")
            continue
        for i, spec in enumerate(specs):
            if not isinstance(spec, dict):
                found.append(f"{key}[{i}] {_shown(spec)} is not an object")
                continue
            for name, kind in _SPEC_KEYS.items():
                if not isinstance(spec.get(name), kind):
                    found.append(f"{key}[{i}].{name} {_shown(spec.get(name))} is not a "
                                 f"{_json_type(kind())}")
            if not isinstance(spec.get("description", ""), str):
                found.append(f"{key}[{i}].description is not a string")
    return found


def _spec(data: dict[str, Any]) -> TensorSpec:
    return TensorSpec(**{k: data[k] for k in (*_SPEC_KEYS, "description") if k in data})


def _tensor_problems(role: str, specs: Any) -> list[str]:
    if not isinstance(specs, list) or not 1 <= len(specs) <= MAX_TENSORS:
        return [f"{role} is not a list of 1..{MAX_TENSORS} tensors"]
    found = []
    names = [getattr(s, "name", None) for s in specs]
    for spec in specs:
        if not isinstance(spec, TensorSpec):
            found.append(f"{role} holds {_shown(spec)}, not a tensor description")
            continue
        what = f"{role[:-1]} {_shown(spec.name)}"
        if not _is_text(spec.name, MAX_NAME) or not spec.name:
            found.append(f"{what}: the name is not a short string without control characters")
        if names.count(spec.name) > 1:
            found.append(f"{what} is declared twice")
        if spec.dtype not in DTYPES:
            found.append(f"{what} has dtype {_shown(spec.dtype)}, not one of "
                         f"{', '.join(DTYPES)}")
        layout = spec.layout
        if layout == SIZE_LAYOUT:
            if (role, spec.name, spec.dtype, spec.shape) != ("inputs", OUTPUT_SIZE_INPUT,
                                                             "int32", [2]):
                found.append(f"{what} has layout 'S', which only the int32 [2] input "
                             f"{OUTPUT_SIZE_INPUT!r} may have")
        elif not (isinstance(layout, str) and 1 <= len(layout) <= 4
                  and set(layout) <= set(LAYOUT_AXES) and len(set(layout)) == len(layout)):
            found.append(f"{what} has layout {_shown(layout)}, not axes named once from "
                         f"{LAYOUT_AXES} (e.g. NCHW, NHWC, HW)")
        shape = spec.shape
        if not (isinstance(shape, list) and all(
                _is_int(d, 1, MAX_SIDE) or (isinstance(d, str) and _DIM_NAME.match(d))
                for d in shape)):
            found.append(f"{what} has shape {_shown(shape)}, not dimensions in 1..{MAX_SIDE} "
                         "or names such as 'height'")
        elif isinstance(layout, str) and len(shape) != len(layout):
            found.append(f"{what} has {len(shape)} dimensions but layout {layout!r}")
        if not isinstance(spec.description, str) or len(spec.description) > MAX_TEXT:
            found.append(f"{what} has a description that is not a string of at most "
                         f"{MAX_TEXT} characters")
    return found


def invalid_contract(where: str, problems: list[str]) -> IsdnetError:
    shown = "; ".join(problems[:_SHOW])
    more = f" (+{len(problems) - _SHOW} more)" if len(problems) > _SHOW else ""
    return IsdnetError(f"{where}'s contract is invalid: {shown}{more}; re-export the model "
                       "with isdnet-deploy")


# --- comparing a graph's declared inputs and outputs with the contract ---------------------

ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16",
             "tensor(double)": "float64", "tensor(uint8)": "uint8", "tensor(int8)": "int8",
             "tensor(int32)": "int32", "tensor(int64)": "int64", "tensor(bool)": "bool"}


def graph_mismatches(contract: Contract, inputs: Iterable[Mapping[str, Any]],
                     outputs: Iterable[Mapping[str, Any]]) -> list[str]:
    """Every disagreement between a graph's declared I/O and its contract.

    ``inputs``/``outputs`` are the graph's tensors as ``{"name", "dtype", "shape"}``
    (numpy dtype names; shape a list of ints for fixed dims, anything else for symbolic
    ones, or None when the rank is unknown). Compared: names both ways, dtypes, ranks,
    fixed dims (two different numbers) and the class channels of outputs. A symbolic dim on
    either side never disagrees here: a graph may fix what its contract leaves open (shape
    inference can), and what a run returns is checked against the contract on every run
    (``runtime.backend.check_outputs``). Any backend can call this with what its engine
    reports.
    """
    problems = []
    for role, specs, actual in (("input", contract.inputs, list(inputs)),
                                ("output", contract.outputs, list(outputs))):
        graph = {v["name"]: v for v in actual}
        declared = {s.name for s in specs}
        for value in actual:
            if value["name"] not in declared:
                problems.append(f"graph {role} {value['name']!r} is not in the contract")
        for spec in specs:
            value = graph.get(spec.name)
            if value is None:
                problems.append(f"contract {role} {spec.name!r} is not in the graph")
                continue
            if value["dtype"] != spec.dtype:
                problems.append(f"{role} {spec.name!r} is {value['dtype']} in the graph but "
                                f"{spec.dtype} in the contract")
            shape = value["shape"]
            if shape is None:
                continue
            if len(shape) != len(spec.shape):
                problems.append(f"{role} {spec.name!r} has rank {len(shape)} in the graph but "
                                f"{len(spec.shape)} in the contract ({spec.layout})")
                continue
            problems += _dim_mismatches(role, spec, shape, contract.num_classes)
    return problems


def _dim_mismatches(role: str, spec: TensorSpec, shape: list[Any], classes: int) -> list[str]:
    problems = []
    for axis, (got, want) in enumerate(zip(shape, spec.shape, strict=True)):
        if not isinstance(got, int) or isinstance(got, bool) or got <= 0 or got == want:
            continue
        if role == "output" and spec.layout[axis] == "C":
            problems.append(f"output {spec.name!r} has {got} class channels in the graph but "
                            f"the contract lists {classes} classes")
        elif isinstance(want, int):
            problems.append(f"{role} {spec.name!r} has shape {shape} in the graph but "
                            f"{spec.shape} in the contract")
    return problems


def check_graph(contract: Contract, inputs: Iterable[Mapping[str, Any]],
                outputs: Iterable[Mapping[str, Any]], where: str) -> None:
    """``graph_mismatches`` as one error: a runtime refuses such a file."""
    problems = graph_mismatches(contract, inputs, outputs)
    if problems:
        shown = "; ".join(problems[:_SHOW])
        more = f" (+{len(problems) - _SHOW} more)" if len(problems) > _SHOW else ""
        raise IsdnetError(f"{where}'s graph disagrees with its contract: {shown}{more}; the "
                          "file was edited after export: re-export it with isdnet-deploy")


# --- reading the contract from ONNX metadata ------------------------------------------------

def contract_from_metadata(entries: Iterable[tuple[str, str | bytes]], where: str
                           ) -> Contract | None:
    """The contract among a model's metadata entries (key, value); None when there is none.

    The key must appear once: ONNX Runtime keeps the last of duplicated keys and the onnx
    package lists all of them, so a file holding two contracts could show one and run the
    other. Every reader of this toolkit (the runtime, inspect, build) goes through here.
    """
    values = [value for key, value in entries if key == METADATA_KEY]
    if len(values) > 1:
        raise IsdnetError(f"{where} holds {len(values)} {METADATA_KEY!r} metadata entries; "
                          "tools would disagree on which one counts, so none is used: "
                          "re-export the model with isdnet-deploy")
    return Contract.from_json(values[0], where) if values else None


def embed_in_onnx(model_proto: Any, contract: Contract) -> None:
    """Write the contract into an ``onnx.ModelProto``'s metadata (replacing an old one)."""
    props = model_proto.metadata_props
    for i in reversed(range(len(props))):
        if props[i].key == METADATA_KEY:
            del props[i]
    entry = props.add()
    entry.key = METADATA_KEY
    entry.value = contract.to_json()


def read_onnx_contract(model_proto: Any, where: str = "artifact") -> Contract | None:
    """The contract of an ONNX model, or None when it was not exported by this toolkit."""
    return contract_from_metadata(((p.key, p.value) for p in model_proto.metadata_props),
                                  where)


def _varint(f: BinaryIO) -> int:
    value = shift = 0
    while True:
        byte = f.read(1)
        if not byte:
            raise EOFError
        value |= (byte[0] & 0x7F) << shift
        if not byte[0] & 0x80:
            return value
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 64 bits")


def _fields(f: BinaryIO, end: int) -> Iterable[tuple[int, int, int, int]]:
    """(field number, wire type, value or length, offset of a length-delimited payload)
    for each field of a protobuf message ending at ``end``, payloads skipped."""
    while f.tell() < end:
        key = _varint(f)
        number, wire = key >> 3, key & 7
        if wire == 0:
            yield number, wire, _varint(f), 0
        elif wire == 2:
            length = _varint(f)
            start = f.tell()
            if start + length > end:
                raise ValueError("a field runs past the end of the file")
            yield number, wire, length, start
            f.seek(start + length)
        elif wire in (1, 5):
            f.seek(8 if wire == 1 else 4, os.SEEK_CUR)
        else:
            raise ValueError(f"unsupported wire type {wire}")


_METADATA_PROPS = 14  # ModelProto.metadata_props (StringStringEntryProto: key 1, value 2)


def scan_onnx_metadata(path: str | os.PathLike[str]) -> list[tuple[str, bytes]]:
    """(key, value) of an ONNX file's metadata entries, read by seeking past the graph and
    the weights: a few reads, however large the file. Values whose key is not
    ``METADATA_KEY`` are not read (an empty value is listed)."""
    where = os.fspath(path)
    entries = []
    try:
        with open(path, "rb") as f:
            end = os.fstat(f.fileno()).st_size
            for number, wire, length, start in list(_fields(f, end)):
                if number != _METADATA_PROPS or wire != 2:
                    continue
                f.seek(start)
                key, value = b"", (0, 0)
                for field_number, field_wire, size, offset in _fields(f, start + length):
                    if field_wire == 2 and field_number == 1 and size <= MAX_NAME:
                        f.seek(offset)
                        key = f.read(size)
                        f.seek(offset + size)
                    elif field_wire == 2 and field_number == 2:
                        value = (offset, size)
                name = key.decode("utf-8", "replace")
                data = b""
                if name == METADATA_KEY:
                    offset, size = value
                    if size > MAX_CONTRACT_BYTES:
                        raise IsdnetError(f"{where}'s contract is {size} bytes long, more than "
                                          f"the {MAX_CONTRACT_BYTES} a contract may take; "
                                          "re-export the model with isdnet-deploy")
                    f.seek(offset)
                    data = f.read(size)
                entries.append((name, data))
    except (EOFError, ValueError, struct.error) as exc:
        raise IsdnetError(f"{where} could not be read: the file is truncated, corrupt or not "
                          f"ONNX (its protobuf structure is damaged: "
                          f"{one_line(exc) or 'it ends early'})") from exc
    except OSError as exc:
        raise IsdnetError(f"cannot read {where}: {exc.strerror or exc}") from exc
    return entries


def missing_contract(where: str, alternative: str | None = None) -> IsdnetError:
    """The one error for an artifact without a contract, wherever one is needed.

    ``alternative`` names another fix where the Python caller has one (the runtime accepts
    a contract passed in by hand); the command line is told only its own fix.
    """
    message = (f"{where} has no isdnet-deploy contract in its metadata (key "
               f"{METADATA_KEY!r}): it was not exported by isdnet-deploy; export the "
               f"checkpoint with 'isdnet-deploy export'")
    if alternative is None:
        return IsdnetError(message)
    return IsdnetError(f"{message} or {alternative}", cli=message)


def require_contract(model_proto: Any, where: str) -> Contract:
    """The contract of an ONNX model; ``missing_contract`` when it has none."""
    contract = read_onnx_contract(model_proto, where)
    if contract is None:
        raise missing_contract(where)
    return contract


def load_onnx_proto(path: str, load_weights: bool = False) -> Any:
    """``onnx.load`` with one-line errors for missing, foreign or damaged files."""
    import os

    import onnx

    if not os.path.exists(path):
        raise IsdnetError(f"file not found: {path}")
    if os.path.isdir(path):
        raise IsdnetError(f"{path} is a directory, not an ONNX file")
    try:
        proto = onnx.load(path, load_external_data=load_weights)
    except Exception as exc:  # protobuf raises DecodeError, onnx raises several types
        raise IsdnetError(f"{path} is not a readable ONNX model (truncated, corrupt or another "
                          f"file type: {one_line(exc)})") from exc
    if proto.ir_version == 0 or not proto.HasField("graph"):
        raise IsdnetError(f"{path} is not an ONNX model (empty or another file type)")
    return proto
