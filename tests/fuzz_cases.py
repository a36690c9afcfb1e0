"""Fuzz cases, run by tests/test_fuzz.py in a fresh process under an address-space limit.

    python tests/fuzz_cases.py CATEGORY SECONDS

Each category mutates one kind of input with fixed seeds, runs what a user would run on
it, and classifies every case: success, a refusal (IsdnetError, or a one-line CLI error
with exit status 1), or a failure (any other exception, a traceback, several error lines,
or an IsdnetError caused by running out of memory, i.e. a bound that did not hold). It
prints one JSON line: counts and the first failures. Cases stop at SECONDS.
"""

from __future__ import annotations

import io
import json
import sys
import tempfile
import time
import traceback
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from hostile_helpers import tiny_contract, tiny_proto

from isdnet_deploy.errors import IsdnetError

SMALL_BUDGET = 4_000_000  # pixels: legitimate decodes here stay far below the cap


class Tally:
    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds
        self.counts = {"success": 0, "refused": 0, "failed": 0}
        self.failures: list[str] = []

    @property
    def running(self) -> bool:
        return time.monotonic() < self.deadline

    def case(self, name: str, action: Callable[..., object], *args: object) -> None:
        try:
            action(*args)
        except IsdnetError as exc:
            cause = exc
            while cause is not None and not isinstance(cause, MemoryError):
                cause = cause.__cause__
            if cause is None:
                self.counts["refused"] += 1
                return
            self.fail(name, f"ran out of memory: {exc}")
        except Exception:  # every other exception is what the fuzzer looks for
            self.fail(name, traceback.format_exc(limit=-3))
        else:
            self.counts["success"] += 1

    def fail(self, name: str, what: str) -> None:
        self.counts["failed"] += 1
        if len(self.failures) < 5:
            self.failures.append(f"{name}: {what}")


def mutations(data: bytes, rng: np.random.Generator, hot: int | None = None) -> bytes:
    """One to eight random edits: byte flips, overwrites with 0x00/0xff/random, inserted or
    deleted runs, truncation; ``hot`` bytes at the start get half of the edits."""
    data = bytearray(data)
    for _ in range(int(rng.integers(1, 9))):
        if not data:
            break
        span = hot if hot and rng.random() < 0.5 else len(data)
        at = int(rng.integers(0, min(span, len(data))))
        kind = rng.integers(0, 6)
        if kind == 0:
            data[at] ^= 1 << int(rng.integers(0, 8))
        elif kind == 1:
            data[at] = int(rng.choice([0, 0xFF, 0x7F, 0x80]))
        elif kind == 2:
            data[at] = int(rng.integers(0, 256))
        elif kind == 3:
            data[at:at] = rng.integers(0, 256, int(rng.integers(1, 16)), np.uint8).tobytes()
        elif kind == 4:
            del data[at:at + int(rng.integers(1, 16))]
        else:
            del data[at:]
    return bytes(data)


def cli_case(args: list[str]) -> None:
    """A command must end with exit 0, or 1 and one 'error:' line, never a traceback."""
    from click.testing import CliRunner

    from isdnet_deploy.cli import main

    result = CliRunner().invoke(main, args)
    if result.exit_code == 0:
        return
    if not isinstance(result.exception, SystemExit) or result.exit_code != 1:
        raise AssertionError(f"exit {result.exit_code}: {result.exception!r}\n{result.output}")
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    if len(errors) != 1 or "Traceback" in result.output:
        raise AssertionError(f"not one error line: {result.stderr}")
    raise IsdnetError(errors[0])  # a refusal


# --- contracts: hypothesis strategies over the schema -----------------------------------------

def contracts(tally: Tally) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from isdnet_deploy import runtime
    from isdnet_deploy.contract import Contract
    from isdnet_deploy.data.samples import photo_like
    from isdnet_deploy.runtime.predictor import Predictor, TileSettings

    base = json.loads(tiny_contract().to_json())
    junk = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12),
                     st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
                     st.lists(st.integers(-300, 300), max_size=5), st.dictionaries(
                         st.text(max_size=5), st.integers(), max_size=3))
    numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                        st.integers(-10**6, 10**6))
    dims = st.one_of(st.integers(-5, 5000), st.sampled_from(["height", "width", "h w", ""]))
    spec = st.fixed_dictionaries({
        "name": st.one_of(st.sampled_from(["image", "logits", "labels", "residual"]),
                          st.text(max_size=8)),
        "dtype": st.sampled_from(["float32", "uint8", "int32", "float16", "complex64", 3]),
        "layout": st.sampled_from(["NCHW", "NHWC", "HW", "CHW", "NNHW", ""]),
        "shape": st.lists(dims, max_size=5)})
    fields = {
        "inputs": st.one_of(st.just(base["inputs"]), st.lists(spec, max_size=3), junk),
        "outputs": st.one_of(st.just(base["outputs"]), st.lists(spec, max_size=3), junk),
        "input_kind": st.sampled_from(["float", "uint8", "bogus"]),
        "output_kind": st.sampled_from(["logits", "labels", "scores"]),
        "pyramid": st.sampled_from(["graph", "external", "x"]),
        "dynamic": st.one_of(st.booleans(), junk),
        "fixed_size": st.one_of(st.none(), st.lists(dims, max_size=3)),
        "min_size": st.one_of(st.integers(-5, 10**7), junk),
        "mean": st.one_of(st.lists(numbers, max_size=4), junk),
        "std": st.one_of(st.lists(numbers, max_size=4), junk),
        "color": st.sampled_from(["rgb", "bgr", "cmyk"]),
        "classes": st.one_of(st.just(base["classes"]), st.lists(st.text(max_size=6),
                                                                 max_size=12), junk),
        "palette": st.one_of(st.just(base["palette"]), st.lists(st.lists(
            st.integers(-10, 300), max_size=4), max_size=9), junk),
        "test_scale": st.one_of(numbers, junk),
        "precision": st.sampled_from(["fp32", "int8", "int4"]),
        "extra": st.one_of(st.just({}), junk, st.just({"profile_max": [64, 64]})),
    }

    @st.composite
    def contract_dicts(draw):
        data = dict(base)
        for key in draw(st.sets(st.sampled_from(sorted(fields)), max_size=4)):
            data[key] = draw(fields[key])
        return data

    class Stub(runtime.Backend):
        name = "stub"

        def _run(self, feeds, out):
            x = feeds["image"]
            h, w = (x.shape[2], x.shape[3]) if x.ndim == 4 and x.shape[1] == 3 else x.shape[1:3]
            spec = self.outputs[0]
            if self.contract.output_kind == "labels":
                return {spec.name: np.zeros((h, w), spec.dtype)}
            return {spec.name: np.zeros((1, self.contract.num_classes, h, w), spec.dtype)}

    image = photo_like(80, 96, seed=0)

    def use(data: dict) -> None:
        contract = Contract.from_dict(data)
        assert contract.problems() == []
        assert Contract.from_json(contract.to_json()) == contract
        contract.summary()
        contract.display_palette()
        segmenter = runtime.Segmenter(Stub(contract))
        segmenter.predict(image)
        Predictor(segmenter, TileSettings(max_size=(48, 48))).predict(image)

    @settings(max_examples=200, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(contract_dicts())
    def values(data: dict) -> None:
        if tally.running:
            tally.case(f"contract {json.dumps(data, default=str)[:300]}", use, data)

    @settings(max_examples=200, derandomize=True, database=None, deadline=None)
    @given(st.one_of(st.binary(max_size=200), st.text(max_size=200)))
    def texts(text: bytes | str) -> None:
        if tally.running:
            tally.case(f"contract text {text[:80]!r}", Contract.from_json, text)

    values()
    texts()


# --- ONNX files and their metadata -------------------------------------------------------------

def _metadata_entry(key: bytes, value: bytes) -> bytes:
    """A raw ModelProto.metadata_props entry (field 14), appended to a serialized model:
    protobuf merges it in, and any bytes can be the value."""
    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
            n >>= 7
            if not n:
                return bytes(out)

    body = b"\x0a" + varint(len(key)) + key + b"\x12" + varint(len(value)) + value
    return b"\x72" + varint(len(body)) + body


def onnx_files(tally: Tally) -> None:
    from isdnet_deploy import runtime
    from isdnet_deploy.contract import METADATA_KEY
    from isdnet_deploy.data.samples import photo_like

    rng = np.random.default_rng(20)
    image = photo_like(80, 96, seed=0)
    model = tiny_proto().SerializeToString()
    contract = tiny_contract().to_json().encode()
    key = METADATA_KEY.encode()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "m.onnx"

        def load_and_run() -> None:
            with runtime.load(path) as segmenter:
                segmenter.predict(image)

        i = 0
        while tally.running:
            kind = i % 4
            if kind == 0:  # the contract's JSON, mutated
                data = model + _metadata_entry(key, mutations(contract, rng))
            elif kind == 1:  # duplicated or foreign entries, values of any bytes
                entries = [_metadata_entry(key, contract)] * int(rng.integers(0, 3))
                entries.append(_metadata_entry(mutations(key, rng, 4), contract))
                data = model + b"".join(entries)
            else:  # the whole file, mutated (its protobuf framing included)
                data = mutations(model + _metadata_entry(key, contract), rng,
                                 hot=64 if kind == 2 else None)
            path.write_bytes(data)
            tally.case(f"onnx case {i}", load_and_run)
            tally.case(f"inspect case {i}", cli_case, ["inspect", str(path)])
            i += 1


# --- checkpoints ---------------------------------------------------------------------------------

def checkpoints(tally: Tally) -> None:
    import torch

    from isdnet_deploy.model.checkpoint import CLASSIFIER_KEY, load_model

    rng = np.random.default_rng(30)
    state = {CLASSIFIER_KEY: torch.zeros(7, 128, 1, 1), "a.weight": torch.ones(3, 4),
             "a.bias": torch.arange(5), "b": torch.zeros(2, 2).t()}
    buffer = io.BytesIO()
    torch.save({"state_dict": state, "meta": {"CLASSES": ("x",) * 7}}, buffer)
    original = buffer.getvalue()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "c.pth"
        i = 0
        while tally.running:
            if i % 2:  # the whole archive, mutated
                data = mutations(original, rng)
            else:  # one record (the object table most often), mutated, re-zipped
                with zipfile.ZipFile(io.BytesIO(original)) as src:
                    names = src.namelist()
                    table = next(n for n in names if n.endswith("data.pkl"))
                    target = table if rng.random() < 0.7 else str(rng.choice(names))
                    out = io.BytesIO()
                    with zipfile.ZipFile(out, "w") as dst:
                        for name in names:
                            record = src.read(name)
                            dst.writestr(name, mutations(record, rng) if name == target
                                         else record)
                data = out.getvalue()
            path.write_bytes(data)
            tally.case(f"checkpoint case {i}", load_model, path)
            i += 1


# --- images -----------------------------------------------------------------------------------

def _image_seeds(folder: Path) -> Iterator[Path]:
    import cv2

    from isdnet_deploy.data.samples import photo_like

    rgb = photo_like(40, 56, seed=2)
    for ext in (".png", ".jpg", ".tif", ".bmp"):
        path = folder / f"seed{ext}"
        cv2.imwrite(str(path), rgb[:, :, ::-1])
        yield path
    from PIL import Image

    Image.fromarray(rgb[:, :, 0] % 7).convert("P").save(folder / "mask.png")
    yield folder / "mask.png"


def images(tally: Tally) -> None:
    from isdnet_deploy.apps.infer import is_geotiff
    from isdnet_deploy.data.datasets import load_mask
    from isdnet_deploy.data.headers import read_header
    from isdnet_deploy.data.images import read_image, read_label_png
    from isdnet_deploy.profiles import DEEPGLOBE

    rng = np.random.default_rng(40)
    with tempfile.TemporaryDirectory() as folder:
        seeds = [(p, p.read_bytes()) for p in _image_seeds(Path(folder))]
        i = 0
        while tally.running:
            seed, data = seeds[i % len(seeds)]
            path = Path(folder) / f"case{seed.suffix}"
            path.write_bytes(mutations(data, rng, hot=64))
            name = f"{seed.name} case {i}"
            tally.case(f"{name} header", read_header, path)
            tally.case(f"{name} image", read_image, path, None, SMALL_BUDGET)
            tally.case(f"{name} mask", load_mask, path, DEEPGLOBE, SMALL_BUDGET)
            tally.case(f"{name} labels", read_label_png, path, SMALL_BUDGET)
            tally.case(f"{name} geotiff test", is_geotiff, path)
            i += 1


CATEGORIES = {"contracts": contracts, "onnx": onnx_files, "checkpoints": checkpoints,
              "images": images}


if __name__ == "__main__":
    category, seconds = sys.argv[1], float(sys.argv[2])
    tally = Tally(seconds)
    start = time.monotonic()
    CATEGORIES[category](tally)
    print(json.dumps({"category": category, **tally.counts,
                      "seconds": round(time.monotonic() - start, 1),
                      "failures": tally.failures}))
