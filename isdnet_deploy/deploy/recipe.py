"""Deploy recipes: one TOML file per target, one schema, checked before any work starts.

A recipe is data, not code (mmdeploy's deploy configs, without their inheritance): it names
the dataset profile, the export variant and its shapes, the precision transform, the
verification settings, the TensorRT optimisation profile and the benchmark. The shipped
recipes live in the source checkout's top-level ``export/`` folder (``RECIPES_DIR``, found
beside the package: a checkout used directly or through ``pip install -e .``); a user's own
file works the same way. ``export/README.md`` documents every key of ``SCHEMA``.

No torch here: listing and checking recipes is instant.
"""

from __future__ import annotations

import copy
import itertools
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..contract import DEFAULT_OPSET, INPUT_KINDS, OUTPUT_KINDS, OUTPUT_RESIZES, PYRAMID_MODES
from ..errors import IsdnetError
from ..profiles import MAX_SIZE, MIN_SIZE, PROFILES, get_profile, parse_size

if sys.version_info >= (3, 11):
    import tomllib
else:  # the conditional dependency in setup.cfg
    import tomli as tomllib

RECIPES_DIR = Path(__file__).resolve().parents[2] / "export"
RECIPE_SUFFIX = ".toml"
# export_onnx's verification size for dynamic models (odd sizes, see onnx_export).
DEFAULT_VERIFY_SIZE = "1002x762"
# calibration.DEFAULT_CALIB_SIZE: where dynamic models are calibrated and their reduced
# precision verified.
DEFAULT_PRECISION_SIZE = "512x512"
PRECISIONS = ("fp32", "fp16", "int8")
INT8_TARGETS = ("tensorrt", "cpu")
ENGINE_TARGETS = ("none", "tensorrt")
SHAPES = ("dynamic", "static")


@dataclass(frozen=True)
class Key:
    """One recipe key: its kind ('choice', 'size', 'int', 'float', 'bool', 'str',
    'str-list'), allowed values or range, default (None: none, or derived) and meaning."""

    kind: str
    doc: str
    default: Any = None
    choices: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None
    required: bool = False

    def allowed(self) -> str:
        if self.kind == "choice":
            return "one of: " + ", ".join(self.choices)
        if self.kind == "size":
            return f'a size "HxW" with sides from {MIN_SIZE} to {MAX_SIZE}, e.g. "1958x1958"'
        if self.kind in ("int", "float"):
            bounds = [f">= {self.low:g}" if self.low is not None else "",
                      f"<= {self.high:g}" if self.high is not None else ""]
            what = "an integer" if self.kind == "int" else "a number"
            return " ".join([what, *[b for b in bounds if b]])
        if self.kind == "bool":
            return "true or false"
        if self.kind == "str-list":
            return 'a list of strings, e.g. ["Resize", "ArgMax"]'
        return "a string"


TOP = ""
SCHEMA: dict[str, dict[str, Key]] = {
    TOP: {
        "description": Key("str", "one line shown by `isdnet-deploy recipes`", required=True),
        "profile": Key("choice", "dataset profile: classes, normalisation, test size",
                       choices=tuple(PROFILES), required=True),
    },
    "export": {
        "pyramid": Key("choice", "Laplacian pyramid inside the graph or fed as 'residual'",
                       "graph", PYRAMID_MODES),
        "input": Key("choice", "float: normalised 1x3xHxW; uint8: RGB bytes 1xHxWx3",
                     "float", INPUT_KINDS),
        "output": Key("choice", "logits 1xCxHxW or the labels HxW", "logits", OUTPUT_KINDS),
        "labels_dtype": Key("choice", "dtype of a labels output", "uint8", ("uint8", "int32")),
        "output_resize": Key("choice", "labels: 'graph' resizes the logits to an "
                             "'output_size' input before the argmax [default: graph for "
                             "labels, none for logits]", choices=OUTPUT_RESIZES),
        "shapes": Key("choice", "symbolic height/width, or fixed at export.size", "dynamic",
                      SHAPES),
        "size": Key("size", "the fixed input size (static shapes only)"),
        "opset": Key("int", "ONNX opset", DEFAULT_OPSET, low=11),
        "simplify": Key("bool", "simplify with onnxslim", False),
        "fast_pyramid": Key("bool", "trace the cheaper, equal pyramid", True),
    },
    "verify": {
        "size": Key("size", "size of the export's check against PyTorch on ONNX Runtime "
                    f"[default: export.size, else {DEFAULT_VERIFY_SIZE}]"),
        "atol": Key("float", "absolute logit tolerance", 1e-4, low=0),
        "rtol": Key("float", "tolerance relative to the largest reference logit", 1e-5, low=0),
        "inputs": Key("int", "inputs on which a precision transform is compared with FP32", 4,
                      low=1),
    },
    "precision": {
        "mode": Key("choice", "precision written into the graph", "fp32", PRECISIONS),
        "int8_target": Key("choice", "int8: symmetric activations for TensorRT, or u8 "
                           "activations ONNX Runtime's CPU kernels fuse", "tensorrt",
                           INT8_TARGETS),
        "keep_fp32": Key("str-list", "fp16: op types kept in FP32 [default: "
                         "Resize, ArgMax, ReduceMean, Sigmoid, Softmax]"),
        "size": Key("size", "calibration and verification size [default: export.size, else "
                    f"{DEFAULT_PRECISION_SIZE}]"),
        "calibration_images": Key("int", "at most this many images from --calib", 32, low=1),
        "synthetic_images": Key("int", "int8 without --calib: seeded synthetic images", 16,
                                low=1),
        "min_agreement": Key("float", "refuse the transform below this argmax agreement with "
                             "FP32 (unset: only warned below 0.99)", low=0, high=1),
        "seed": Key("int", "seed of image picks and synthetic images", 0, low=0),
    },
    "engine": {
        "target": Key("choice", "build an inference engine from the final ONNX", "none",
                      ENGINE_TARGETS),
        "min": Key("size", "smallest HxW of the optimisation profile [default: half of opt]"),
        "opt": Key("size", "HxW TensorRT tunes for [default: the profile's test size]"),
        "max": Key("size", "largest HxW [default: the larger of opt and the dataset image "
                   "size]"),
        "workspace_mib": Key("int", "builder workspace limit in MiB", 4096, low=1),
        "opt_level": Key("int", "builder optimisation level", 3, low=0, high=5),
        "device": Key("str", "GPU to build on and benchmark with: cuda or cuda:N", "cuda"),
    },
    "benchmark": {
        "size": Key("size", "input size of the timed forwards [default: export.size, else "
                    "engine.opt, else the profile's test size]"),
        "warmup": Key("int", "untimed forwards per method", 2, low=0),
        "iters": Key("int", "timed forwards per method", 5, low=1),
    },
}


@dataclass
class Recipe:
    """A checked recipe: ``data`` has every section and key, defaults and derived values
    filled in (the resolved recipe a manifest records)."""

    name: str
    source: str
    data: dict[str, Any]
    overrides: list[str] = field(default_factory=list)

    def __getitem__(self, section: str) -> dict[str, Any]:
        return self.data[section]

    @property
    def description(self) -> str:
        return self.data["description"]

    @property
    def profile(self) -> str:
        return self.data["profile"]

    @property
    def static(self) -> bool:
        return self.data["export"]["shapes"] == "static"

    @property
    def builds_engine(self) -> bool:
        return self.data["engine"]["target"] != "none"


def size_tuple(text: str | None) -> tuple[int, int] | None:
    return None if text is None else parse_size(text)


def _where(section: str, key: str) -> str:
    return f"{section}.{key}" if section else key


def check_value(section: str, key: str, value: Any) -> Any:
    """``value`` in its normal form (sizes as "HxW"), or an IsdnetError naming the key and
    what it allows."""
    spec = SCHEMA[section][key]
    ok = True
    given = value
    if spec.kind == "choice":
        ok = isinstance(value, str) and value in spec.choices
    elif spec.kind == "size":
        text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
        try:
            h, w = parse_size(text) if isinstance(text, str) else (0, 0)
        except IsdnetError:
            h, w = 0, 0
        ok = min(h, w) >= MIN_SIZE and max(h, w) <= MAX_SIZE
        value = f"{h}x{w}"
    elif spec.kind in ("int", "float"):
        types = (int,) if spec.kind == "int" else (int, float)
        ok = isinstance(value, types) and not isinstance(value, bool)
        ok = ok and (spec.low is None or value >= spec.low) and \
            (spec.high is None or value <= spec.high)
    elif spec.kind == "bool":
        ok = isinstance(value, bool)
    elif spec.kind == "str-list":
        ok = isinstance(value, list) and all(isinstance(v, str) and v for v in value)
    else:
        ok = isinstance(value, str) and bool(value.strip())
    if not ok:
        raise IsdnetError(f"{_where(section, key)} = {given!r} is not allowed; it takes "
                          f"{spec.allowed()}")
    return value


def _unknown(section: str, key: str) -> IsdnetError:
    if not section and key not in SCHEMA[TOP]:
        return IsdnetError(f"unknown key {key!r}; the top-level keys are: "
                           f"{', '.join(SCHEMA[TOP])}, and the sections are: "
                           f"{', '.join(f'[{s}]' for s in SCHEMA if s)}")
    return IsdnetError(f"unknown key {_where(section, key)}; the [{section}] keys are: "
                       f"{', '.join(SCHEMA[section])}")


def _checked(raw: dict[str, Any]) -> dict[str, Any]:
    """Every key known and every value allowed; defaults filled in, derived ones not yet."""
    data: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, dict):
            if key not in SCHEMA or not key:
                raise IsdnetError(f"unknown section [{key}]; the sections are: "
                                  f"{', '.join(f'[{s}]' for s in SCHEMA if s)}")
            continue
        if key not in SCHEMA[TOP]:
            raise _unknown(TOP, key)
        data[key] = check_value(TOP, key, value)
    for key, spec in SCHEMA[TOP].items():
        if spec.required and key not in data:
            raise IsdnetError(f"{key} is missing; it takes {spec.allowed()}")
    for section, keys in SCHEMA.items():
        if not section:
            continue
        given = raw.get(section, {})
        for key in given:
            if key not in keys:
                raise _unknown(section, key)
        data[section] = {key: check_value(section, key, given[key]) if key in given
                         else copy.deepcopy(spec.default) for key, spec in keys.items()}
    return data


def _resolved(data: dict[str, Any]) -> dict[str, Any]:
    """Cross-key rules and derived defaults, each refusal naming the keys involved."""
    ex, verify, prec, engine, bench = (data[s] for s in ("export", "verify", "precision",
                                                         "engine", "benchmark"))
    if ex["output_resize"] is None:
        ex["output_resize"] = "graph" if ex["output"] == "labels" else "none"
    if ex["output_resize"] == "graph" and ex["output"] != "labels":
        raise IsdnetError('export.output_resize = "graph" resizes logits before the argmax of '
                          'a labels output; set export.output = "labels" or output_resize = '
                          '"none"')
    static = ex["shapes"] == "static"
    if static and ex["size"] is None:
        raise IsdnetError('export.shapes = "static" needs export.size = "HxW"')
    if not static and ex["size"] is not None:
        raise IsdnetError('export.size fixes the input size; set export.shapes = "static" or '
                          "drop export.size")
    for section, key in (("verify", "size"), ("precision", "size")):
        value = data[section][key]
        if static and value is not None and value != ex["size"]:
            raise IsdnetError(f"{section}.{key} = {value!r} cannot differ from export.size = "
                              f"{ex['size']!r}: a static model only runs at its size")
    verify["size"] = verify["size"] or ex["size"] or DEFAULT_VERIFY_SIZE
    prec["size"] = prec["size"] or ex["size"] or DEFAULT_PRECISION_SIZE
    mode = prec["mode"]
    if mode != "fp16" and prec["keep_fp32"] is not None:
        raise IsdnetError(f'precision.keep_fp32 applies to precision.mode = "fp16", not '
                          f'"{mode}"; drop it')
    if mode == "fp16" and prec["keep_fp32"] is None:
        from ..engine.precision import DEFAULT_KEEP_FP32

        prec["keep_fp32"] = list(DEFAULT_KEEP_FP32)
    if engine["target"] == "tensorrt":
        _check_engine(data)
    elif any(engine[k] is not None for k in ("min", "opt", "max")):
        raise IsdnetError('engine.min/opt/max shape a TensorRT engine; set engine.target = '
                          '"tensorrt" or drop them')
    bench["size"] = bench["size"] or ex["size"] or engine["opt"] or \
        "x".join(map(str, get_profile(data["profile"]).test_size))
    return data


def _check_engine(data: dict[str, Any]) -> None:
    ex, prec, engine = data["export"], data["precision"], data["engine"]
    if ex["output_resize"] == "graph":
        raise IsdnetError('TensorRT engines take no \'output_size\' input: with engine.target = '
                          '"tensorrt" set export.output_resize = "none" (or output = "logits")')
    if prec["mode"] == "int8" and prec["int8_target"] != "tensorrt":
        raise IsdnetError('precision.int8_target = "cpu" makes u8 activations for ONNX Runtime; '
                          'a TensorRT engine needs int8_target = "tensorrt"')
    device = engine["device"]
    if device != "cuda" and not (device.startswith("cuda:") and device[5:].isdigit()):
        raise IsdnetError(f"engine.device = {device!r} is not allowed; it takes cuda or cuda:N")
    if ex["shapes"] == "static":
        given = [k for k in ("min", "opt", "max") if engine[k] is not None]
        if given:
            raise IsdnetError(f"engine.{given[0]} cannot apply to a static model (min = opt = "
                              f"max = export.size); drop it or export dynamic shapes")
        return
    sizes = {k: size_tuple(engine[k]) for k in ("min", "opt", "max")}
    known = [(k, s) for k, s in sizes.items() if s is not None]
    for (lo_name, lo), (hi_name, hi) in itertools.pairwise(known):
        if lo[0] > hi[0] or lo[1] > hi[1]:
            raise IsdnetError(f"engine.{lo_name} = {engine[lo_name]!r} exceeds engine.{hi_name} "
                              f"= {engine[hi_name]!r}; TensorRT needs min <= opt <= max per side")


def parse_override(text: str) -> tuple[str, str, Any]:
    """``section.key=value`` -> (section, key, value); the value is read as TOML (numbers,
    booleans, quoted strings, lists) and otherwise taken as a string (``64x64``)."""
    where, sep, value_text = text.partition("=")
    section, _, key = where.strip().rpartition(".")
    if not sep or not key:
        raise IsdnetError(f"override {text!r} is not KEY=VALUE (e.g. verify.size=64x64)")
    if section not in SCHEMA or key not in SCHEMA[section]:
        if section in SCHEMA:
            raise _unknown(section, key)
        raise IsdnetError(f"unknown section in {where.strip()!r}; the sections are: "
                          f"{', '.join(s for s in SCHEMA if s)}")
    try:
        value = tomllib.loads(f"v = {value_text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = value_text.strip()
    return section, key, check_value(section, key, value)


def quick_size_overrides(raw: dict[str, Any], size: str) -> list[str]:
    """``--size HxW``: every size in a recipe set to one (a quick run, e.g. in CI): the
    static export size, verification, calibration, the engine's whole profile, benchmark."""
    sets = [f"verify.size={size}", f"precision.size={size}", f"benchmark.size={size}"]
    export = raw.get("export", {})
    if export.get("shapes") == "static":
        sets.append(f"export.size={size}")
    elif raw.get("engine", {}).get("target") == "tensorrt":
        sets += [f"engine.min={size}", f"engine.opt={size}", f"engine.max={size}"]
    return sets


def recipe_names() -> list[str]:
    if not RECIPES_DIR.is_dir():
        raise IsdnetError(f"the shipped recipes live in the source checkout's export/ folder, "
                          f"and {RECIPES_DIR} does not exist (installed from a wheel?); install "
                          "with pip install -e from a checkout, or pass a recipe file")
    return sorted(p.stem for p in RECIPES_DIR.glob(f"*{RECIPE_SUFFIX}"))


def recipe_path(name_or_file: str) -> Path:
    """A recipe file: a path to one, or the name of a shipped recipe."""
    path = Path(name_or_file)
    if path.suffix == RECIPE_SUFFIX or path.parent != Path("."):
        if not path.is_file():
            raise IsdnetError(f"recipe file {path} does not exist")
        return path
    names = recipe_names()
    if name_or_file not in names:
        raise IsdnetError(f"unknown recipe {name_or_file!r}; the shipped recipes are: "
                          f"{', '.join(names)} (or pass a {RECIPE_SUFFIX} file)")
    return RECIPES_DIR / f"{name_or_file}{RECIPE_SUFFIX}"


def read_raw(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise IsdnetError(f"cannot read recipe {path} ({exc}); check the file") from None
    except tomllib.TOMLDecodeError as exc:
        raise IsdnetError(f"recipe {path} is not valid TOML ({exc})") from None


def load_recipe(name_or_file: str, overrides: list[str] | tuple[str, ...] = (),
                size: str | None = None) -> Recipe:
    """The checked recipe, with ``size`` (``quick_size_overrides``) and then each
    ``section.key=value`` of ``overrides`` applied. Refusals name the recipe and the key."""
    path = recipe_path(name_or_file)
    raw = read_raw(path)
    applied = quick_size_overrides(raw, size) if size is not None else []
    applied += list(overrides)
    parsed = [parse_override(text) for text in applied]
    name = path.stem
    try:
        for section, key, value in parsed:
            raw.setdefault(section, {})[key] = value
        data = _resolved(_checked(raw))
    except IsdnetError as exc:
        raise IsdnetError(f"recipe {name}: {exc}") from None
    return Recipe(name=name, source=str(path), data=data, overrides=applied)


def describe_recipes() -> list[tuple[str, str]]:
    """(name, description) of every shipped recipe, read without the full check."""
    rows = []
    for name in recipe_names():
        description = read_raw(RECIPES_DIR / f"{name}{RECIPE_SUFFIX}").get("description")
        rows.append((name, str(description or "(no description)")))
    return rows
