"""The I/O contract an artifact carries, so a runtime needs no side knowledge to run it.

It is stored as JSON in the ONNX metadata (key ``isdnet_deploy``) and copied into the
``.engine.json`` sidecar of TensorRT engines. Plain data, no torch.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import IsdnetError
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
    def from_dict(cls, data: dict[str, Any]) -> Contract:
        if data.get("format") != FORMAT:
            raise IsdnetError(
                f"artifact contract has format {data.get('format')!r}, this toolkit reads "
                f"{FORMAT!r}; re-export the model with this version of isdnet-deploy")
        data = dict(data)
        data["inputs"] = [TensorSpec(**s) for s in data["inputs"]]
        data["outputs"] = [TensorSpec(**s) for s in data["outputs"]]
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def from_json(cls, text: str) -> Contract:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise IsdnetError(f"artifact contract is not valid JSON ({exc})") from None
        return cls.from_dict(data)

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


def embed_in_onnx(model_proto: Any, contract: Contract) -> None:
    """Write the contract into an ``onnx.ModelProto``'s metadata (replacing an old one)."""
    props = model_proto.metadata_props
    for i in reversed(range(len(props))):
        if props[i].key == METADATA_KEY:
            del props[i]
    entry = props.add()
    entry.key = METADATA_KEY
    entry.value = contract.to_json()


def read_onnx_contract(model_proto: Any) -> Contract | None:
    """The contract of an ONNX model, or None when it was not exported by this toolkit."""
    for prop in model_proto.metadata_props:
        if prop.key == METADATA_KEY:
            return Contract.from_json(prop.value)
    return None


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
    contract = read_onnx_contract(model_proto)
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
                          f"file type: {str(exc).splitlines()[0][:120] if str(exc) else exc!r})"
                          ) from None
    if proto.ir_version == 0 or not proto.HasField("graph"):
        raise IsdnetError(f"{path} is not an ONNX model (empty or another file type)")
    return proto
