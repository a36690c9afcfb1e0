"""libisdnet (c/): built from scratch with the README's commands, then byte-equal to the
Python runtime, safe to share between threads, strict with bad input, valgrind-clean.

The library is built once per session into a temporary prefix, exactly as the README's
"Embedding in C" section says (its C API header downloaded, SHA-256 pinned), then again
with its test programs (c/tests/), which these tests drive: the session fixture c_build
(tests/conftest.py, tests/c_support.py), shared with tests/test_gstreamer.py.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from c_support import MISSING_TOOLS, CBuild, readme_blocks, run

from isdnet_deploy.data.samples import photo_like

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(
    bool(MISSING_TOOLS), reason=f"{' and '.join(MISSING_TOOLS)} not found: the C library "
    "cannot be built here (install CMake and a C compiler; CI has them)")

# Odd and even sides, a wide image, a tall one; DeepGlobe's 0.8 scale makes them odder.
SIZES = [(97, 131), (160, 120), (75, 203)]
ISD_ERR_FILE, ISD_ERR_MODEL, ISD_ERR_CONTRACT, ISD_ERR_UNSUPPORTED = 2, 3, 4, 5


def write_ppm(path: Path, image: np.ndarray) -> Path:
    path.write_bytes(b"P6\n%d %d\n255\n" % (image.shape[1], image.shape[0]) + image.tobytes())
    return path


def read_pgm(path: Path) -> np.ndarray:
    magic, dims, maxval, data = path.read_bytes().split(b"\n", 3)
    assert magic == b"P5" and maxval == b"255"
    width, height = map(int, dims.split())
    return np.frombuffer(data, np.uint8).reshape(height, width)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[tuple[np.ndarray, Path]]:
    folder = tmp_path_factory.mktemp("images")
    found = []
    for i, (h, w) in enumerate(SIZES):
        image = photo_like(h, w, seed=i)
        found.append((image, write_ppm(folder / f"image{i}.ppm", image)))
    return found


@pytest.fixture(scope="module")
def artifacts(onnx_model, embedding_onnx_model) -> dict[str, Path]:
    return {"default": onnx_model, "embedding": embedding_onnx_model}


# --- build, install, README ------------------------------------------------------------------


def test_install_has_header_versioned_library_and_pkg_config(c_build):
    prefix = c_build.prefix
    assert (prefix / "include" / "isdnet.h").is_file()
    library = prefix / "lib" / "libisdnet.so"
    assert library.is_symlink() and library.resolve().name == "libisdnet.so.0.1.0"
    dynamic = run(["readelf", "-d", str(library)], c_build.work).stdout
    assert "Library soname: [libisdnet.so.0]" in dynamic
    assert "Shared library: [libonnxruntime.so.1]" in dynamic
    assert "Library runpath: [$ORIGIN]" in dynamic
    # The wheel's ONNX Runtime beside it, under the name the loader asks for.
    assert (prefix / "lib" / "libonnxruntime.so.1").resolve().is_file()
    pc = (prefix / "lib" / "pkgconfig" / "isdnet.pc").read_text()
    assert f"libdir={prefix}/lib" in pc and "-Wl,-rpath,${libdir}" in pc
    # No third-party source went into the repository: the header lives in the build tree.
    assert (c_build.programs / "onnxruntime" / "include" / "onnxruntime_c_api.h").is_file()
    assert not list((ROOT / "c").rglob("onnxruntime_c_api.h"))


def test_readme_program_builds_with_pkg_config_and_runs_without_ld_library_path(
        c_build, onnx_model, tmp_path):
    """The README's C program and commands, verbatim, in the README's folder."""
    blocks = readme_blocks()
    (_, source), (language, commands) = blocks[1], blocks[2]
    name = re.search(r"cc (\S+\.c)", commands)[1]
    (c_build.work / name).write_text(source)
    model = c_build.work / "model.onnx"
    if not model.exists():
        model.symlink_to(onnx_model)
    image = photo_like(90, 110, seed=5)
    write_ppm(c_build.work / "image.ppm", image)
    assert language == "bash" and "LD_LIBRARY_PATH" not in commands
    result = run(commands, c_build.work)
    from isdnet_deploy import runtime

    seg = runtime.load(onnx_model)
    for k, (name_, colour) in enumerate(zip(seg.classes, seg.contract.palette, strict=True)):
        assert re.search(rf"^{re.escape(name_)}\s+#{bytes(colour).hex()}\s+\d+ px$",
                         result.stdout, flags=re.M), (k, result.stdout)
    np.testing.assert_array_equal(read_pgm(c_build.work / "labels.pgm"), seg.predict(image))
    assert "image.ppm: 90x110 -> labels.pgm" in result.stdout
    assert re.search(r"^\s*2 agriculture\s+\d+ px\s+[\d.]+ %$", result.stdout, flags=re.M)


def test_builds_against_a_given_onnx_runtime(c_build, embedding_onnx_model, images, tmp_path):
    """-DONNXRUNTIME_INCLUDE_DIR/-DONNXRUNTIME_LIBRARY with a release archive's layout
    (lib/libonnxruntime.so -> .so.1 -> .so.1.X.Y): nothing downloaded, ONNX Runtime found
    through the library's run path instead of being copied beside it."""
    import onnxruntime

    wheel = next((Path(onnxruntime.__file__).parent / "capi").glob("libonnxruntime.so.1.*"))
    release = tmp_path / "onnxruntime"
    (release / "include").mkdir(parents=True)
    (release / "lib").mkdir()
    shutil.copy(c_build.programs / "onnxruntime" / "include" / "onnxruntime_c_api.h",
                release / "include")
    (release / "lib" / wheel.name).symlink_to(wheel)
    (release / "lib" / "libonnxruntime.so.1").symlink_to(wheel.name)
    (release / "lib" / "libonnxruntime.so").symlink_to("libonnxruntime.so.1")
    build, prefix = tmp_path / "build", tmp_path / "prefix"
    configure = run(["cmake", "-S", str(ROOT / "c"), "-B", str(build),
                     f"-DONNXRUNTIME_INCLUDE_DIR={release / 'include'}",
                     f"-DONNXRUNTIME_LIBRARY={release / 'lib' / 'libonnxruntime.so'}"],
                    tmp_path)
    assert "Downloading" not in configure.stdout
    run(["cmake", "--build", str(build), "-j2"], tmp_path)
    run(["cmake", "--install", str(build), "--prefix", str(prefix)], tmp_path)
    assert not list((prefix / "lib").glob("libonnxruntime*"))
    runpath = run(["readelf", "-d", str(prefix / "lib" / "libisdnet.so")], tmp_path).stdout
    assert f"[$ORIGIN:{release / 'lib'}]" in runpath
    image, ppm = images[1]
    run([str(prefix / "bin" / "isdnet-segment"), str(embedding_onnx_model), str(ppm),
         str(tmp_path / "labels.pgm")], tmp_path)
    from isdnet_deploy import runtime

    expected = runtime.load(embedding_onnx_model).predict(image)
    np.testing.assert_array_equal(read_pgm(tmp_path / "labels.pgm"), expected)


# --- byte equality with the Python runtime ---------------------------------------------------


@pytest.mark.parametrize("kind", ["default", "embedding"])
@pytest.mark.parametrize(("order", "pad"), [("rgb", 0), ("bgr", 13)])
def test_labels_equal_python_runtime(c_build, artifacts, images, kind, order, pad, tmp_path):
    """isd_predict == runtime.load(path).predict(image, color=...), byte for byte, at DeepGlobe's
    test scale, with padded rows for pixels and labels (their padding left untouched)."""
    from isdnet_deploy import runtime

    run([str(c_build.programs / "predict_files"), str(artifacts[kind]), order, str(pad),
         str(tmp_path / "labels"), *(str(path) for _, path in images)], c_build.work)
    seg = runtime.load(artifacts[kind])
    for i, (image, _) in enumerate(images):
        given = image if order == "rgb" else np.ascontiguousarray(image[:, :, ::-1])
        expected = seg.predict(given, color=order)
        np.testing.assert_array_equal(read_pgm(tmp_path / f"labels{i}.pgm"), expected)


def test_resize_equals_opencv_on_random_sizes_and_scales(c_build, tmp_path):
    """The test scale's 8-bit bilinear resize equals cv2.resize(INTER_LINEAR) to the bit on
    300 random cases: shrinking and enlarging, exactly 2x both ways, 1-pixel sides,
    DeepGlobe's 0.8, padded rows and swapped channels."""
    import cv2

    rng = np.random.default_rng(13)
    cases, expected = bytearray(), bytearray()
    for i in range(300):
        sh, sw = (int(v) for v in rng.integers(1, 160, 2))
        scale = [0.8, 0.5, 2.0, float(rng.uniform(0.2, 3.0))][i % 4]
        dh, dw = max(1, int(sh * scale + 0.5)), max(1, int(sw * scale + 0.5))
        swap, pad = i % 2, int(rng.integers(0, 9))
        image = rng.integers(0, 256, (sh, sw, 3), dtype=np.uint8)
        padded = np.zeros((sh, sw * 3 + pad), np.uint8)
        padded[:, :sw * 3] = image.reshape(sh, -1)
        cases += np.array([sh, sw, sw * 3 + pad, swap, dh, dw], "<i4").tobytes()
        cases += padded.tobytes()
        rgb = np.ascontiguousarray(image[:, :, ::-1]) if swap else image
        expected += cv2.resize(rgb, (dw, dh), interpolation=cv2.INTER_LINEAR).tobytes()
    (tmp_path / "cases").write_bytes(bytes(cases))
    run([str(c_build.programs / "check_internals"), "resize", str(tmp_path / "cases"),
         str(tmp_path / "out")], c_build.work)
    got = np.frombuffer((tmp_path / "out").read_bytes(), np.uint8)
    assert got.size == len(expected)
    mismatches = np.count_nonzero(got != np.frombuffer(bytes(expected), np.uint8))
    assert mismatches == 0, f"{mismatches} bytes differ from cv2 {cv2.__version__}"


def test_logits_to_labels_equals_python_runtime(c_build, tmp_path):
    """The exact logits resize and argmax of runtime.preprocess, to the bit: enlarging,
    shrinking, identity, one class, NaN scores."""
    from isdnet_deploy.runtime.preprocess import logits_to_labels

    rng = np.random.default_rng(14)
    cases, expected = bytearray(), []
    shapes = [(7, 33, 41, 41, 51), (1, 20, 20, 30, 25), (19, 40, 40, 40, 40),
              (7, 245, 245, 306, 306), (3, 50, 60, 31, 97), (2, 1, 1, 3, 2)]
    shapes += [(int(rng.integers(1, 9)), *(int(v) for v in rng.integers(1, 90, 4)))
               for _ in range(30)]
    for i, (classes, h, w, H, W) in enumerate(shapes):
        logits = (rng.standard_normal((1, classes, h, w)) * 3).astype(np.float32)
        if i % 5 == 0:
            logits[0, rng.integers(0, classes), : h // 2] = np.nan
        cases += np.array([classes, h, w, H, W], "<i4").tobytes() + logits.tobytes()
        expected.append(logits_to_labels(logits, (H, W)))
    (tmp_path / "cases").write_bytes(bytes(cases))
    run([str(c_build.programs / "check_internals"), "labels", str(tmp_path / "cases"),
         str(tmp_path / "out")], c_build.work)
    got = np.frombuffer((tmp_path / "out").read_bytes(), np.uint8)
    np.testing.assert_array_equal(got, np.concatenate([e.ravel() for e in expected]))


def test_generated_colours_equal_infer_overlay_palette(c_build):
    from isdnet_deploy.contract import Contract

    contract = Contract(inputs=[], outputs=[], classes=[str(k) for k in range(60)])
    expected = contract.display_palette()  # the colours infer --overlay uses
    out = run([str(c_build.programs / "check_internals"), "colors", "60"], c_build.work).stdout
    assert [list(map(int, line.split())) for line in out.splitlines()] == expected


def _read_contract(c_build: CBuild, path: Path, text: str | bytes) -> str:
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    result = run([str(c_build.programs / "check_internals"), "contract", str(path)],
                 c_build.work, check=False)
    assert result.returncode in (0, 3), result.stderr
    return result.stdout.strip()


def test_contract_reader_agrees_with_python(c_build, embedding_onnx_model, tmp_path):
    from isdnet_deploy import runtime
    from isdnet_deploy.contract import Contract

    contract = runtime.load(embedding_onnx_model).contract
    data = json.loads(contract.to_json())
    data["classes"] = ["unknown", "urbain \u00e9t\u00e9", "smile \U0001f600", 'q"uote\\',
                       *data["classes"][4:]]
    data["palette"] = data["palette"][:5]  # the rest generated, as display_palette does
    data["fixed_size"] = [300, 200]
    data["dynamic"] = False
    read = json.loads(_read_contract(c_build, tmp_path / "c.json", json.dumps(data)))
    expected = Contract.from_dict(data)
    assert read["classes"] == expected.classes
    assert read["palette"] == expected.display_palette()
    # Printed with 9 significant digits, which round-trip a float32.
    np.testing.assert_array_equal(np.float32(read["mean"]), np.float32(expected.mean))
    np.testing.assert_array_equal(np.float32(read["std"]), np.float32(expected.std))
    assert read["test_scale"] == expected.test_scale == 0.8
    assert (read["uint8_input"], read["labels_output"], read["labels_int32"],
            read["resize_in_graph"]) == (1, 1, 0, 1)
    assert read["fixed_size"] == [300, 200] and read["min_size"] == expected.min_size
    # A repeated name: the last one counts, as in Python's json.
    text = json.dumps(data)[:-1] + ', "test_scale": 0.5}'
    assert json.loads(_read_contract(c_build, tmp_path / "d.json", text))["test_scale"] == 0.5


def test_contract_reader_refuses_malformed_text(c_build, onnx_model, tmp_path):
    """Each malformed or absurd contract gives an error, never a crash or a huge allocation."""
    from isdnet_deploy import runtime

    good = json.loads(runtime.load(onnx_model).contract.to_json())
    text = json.dumps(good)
    cases = {
        "empty": "", "not an object": "[1, 2]", "truncated": text[:len(text) // 2],
        "text after the value": text + " x", "unterminated string": '{"format": "isd',
        "bad escape": text.replace('"unknown"', '"unk\\xown"'),
        "lone surrogate": text.replace('"unknown"', '"\\ud800"'),
        "control character": text.replace('"unknown"', '"un\tknown"'),
        "NUL in a name": text.replace('"unknown"', '"\\u0000"'),
        "invalid UTF-8": text.encode().replace(b'"unknown"', b'"\xff\xfe"'),
        "deep nesting": '{"x": ' + "[" * 100 + "]" * 100 + "}",
        "huge number": text.replace('"min_size": 32', '"min_size": 1e999'),
        "leading zero": text.replace('"min_size": 32', '"min_size": 032'),
        "NaN": text.replace('"min_size": 32', '"min_size": NaN'),
        "no format": json.dumps({k: v for k, v in good.items() if k != "format"}),
        "no classes": json.dumps(dict(good, classes=[])),
        "300 classes": json.dumps(dict(good, classes=["c"] * 300, palette=[])),
        "short palette entry": json.dumps(dict(good, palette=[[1, 2]])),
        "palette value 256": json.dumps(dict(good, palette=[[1, 2, 256]])),
        "std 0": json.dumps(dict(good, std=[1.0, 0.0, 1.0])),
        "two means": json.dumps(dict(good, mean=[1.0, 2.0])),
        "test scale 0": json.dumps(dict(good, test_scale=0)),
        "min size 0": json.dumps(dict(good, min_size=0)),
        "min size 3.5": json.dumps(dict(good, min_size=3.5)),
        "static without a size": json.dumps(dict(good, dynamic=False, fixed_size=None)),
        "unknown output kind": json.dumps(dict(good, output_kind="boxes")),
        "image of the wrong dtype": text.replace('"dtype": "float32"', '"dtype": "float16"', 1),
        "oversized": json.dumps(dict(good, padding="x" * 300_000)),
    }
    for name, case in cases.items():
        out = _read_contract(c_build, tmp_path / "case.json", case)
        assert re.fullmatch(r"error [45]: [^\n]+", out), (name, out)
    assert _read_contract(c_build, tmp_path / "case.json", text).startswith("{")


# --- threads, bad input, memory --------------------------------------------------------------


def test_two_threads_share_one_handle(c_build, onnx_model, images):
    result = run([str(c_build.programs / "threads"), str(onnx_model), str(images[0][1]),
                  str(images[2][1]), "3"], c_build.work)
    assert "6 concurrent predictions, 0 differ" in result.stdout


def tiny_artifact(path: Path, contract: dict | str | None) -> Path:
    """A one-node ONNX file with the given contract (dict, raw text, or none at all): the
    library reads the contract before it looks at the graph."""
    import onnx
    from onnx import TensorProto, helper

    value = helper.make_tensor_value_info
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [value("x", TensorProto.FLOAT, [1])],
                              [value("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph)
    if contract is not None:
        entry = model.metadata_props.add()
        entry.key = "isdnet_deploy"
        entry.value = contract if isinstance(contract, str) else json.dumps(contract)
    onnx.save(model, str(path))
    return path


def test_bad_inputs_give_a_code_one_line_and_leave_labels_alone(c_build, onnx_model,
                                                                tmp_path):
    from isdnet_deploy import runtime

    contract = json.loads(runtime.load(onnx_model).contract.to_json())
    external = dict(contract, pyramid="external", inputs=[
        *contract["inputs"], {"name": "residual", "dtype": "float32", "layout": "NCHW",
                              "shape": [1, 6, "height", "width"]}])
    old_labels = dict(contract, output_kind="labels", outputs=[
        {"name": "labels", "dtype": "uint8", "layout": "HW", "shape": ["height", "width"]}])
    (tmp_path / "folder").mkdir()
    (tmp_path / "notes.txt").write_text("not a model\n")
    (tmp_path / "truncated.onnx").write_bytes(onnx_model.read_bytes()[:1_000_000])
    cases = {
        "missing file": (ISD_ERR_FILE, tmp_path / "absent.onnx"),
        "directory": (ISD_ERR_FILE, tmp_path / "folder"),
        "not an ONNX file": (ISD_ERR_MODEL, tmp_path / "notes.txt"),
        "truncated ONNX": (ISD_ERR_MODEL, tmp_path / "truncated.onnx"),
        "ONNX without the contract": (ISD_ERR_CONTRACT,
                                      tiny_artifact(tmp_path / "plain.onnx", None)),
        "contract not JSON": (ISD_ERR_CONTRACT,
                              tiny_artifact(tmp_path / "bad.onnx", '{"format": "isdnet')),
        "contract of another format": (ISD_ERR_CONTRACT, tiny_artifact(
            tmp_path / "v2.onnx", dict(contract, format="isdnet-deploy/2"))),
        "external-pyramid artifact": (ISD_ERR_UNSUPPORTED,
                                      tiny_artifact(tmp_path / "external.onnx", external)),
        "labels at network size": (ISD_ERR_UNSUPPORTED,
                                   tiny_artifact(tmp_path / "old.onnx", old_labels)),
        "contract not matching the graph": (ISD_ERR_CONTRACT,
                                            tiny_artifact(tmp_path / "other.onnx", contract)),
    }
    arguments = [f"{code}:{name}:{path}" for name, (code, path) in cases.items()]
    result = run([str(c_build.programs / "bad_inputs"), str(onnx_model), *arguments],
                 c_build.work, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = dict(line.partition(": ")[::2] for line in result.stdout.splitlines())
    for name in [*cases, "NULL model", "NULL pixels", "NULL labels", "height 0", "width -1",
                 "height below the contract minimum", "width below the contract minimum",
                 "row_stride below 3 x width", "labels_row_stride below width",
                 "unknown channel_order", "valid call after the bad ones"]:
        assert f"ok {name}" in lines, result.stdout
    assert str(tmp_path / "absent.onnx") in lines["ok missing file"]
    assert "--pyramid graph" in lines["ok external-pyramid artifact"]
    assert "export it again" in lines["ok labels at network size"]
    assert "below the model's minimum of 32x32" in lines["ok height below the contract minimum"]


def tiny_model():
    """A 1x1 convolution from RGB to 7 class scores, exported through export_onnx like
    ISDNet: every libisdnet code path runs while ONNX Runtime's own work is negligible, so
    valgrind's 20-50x slowdown stays affordable."""
    import torch

    class Tiny(torch.nn.Module):
        num_classes = 7

        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 7, 1)
            torch.nn.init.normal_(self.conv.weight, generator=torch.Generator().manual_seed(0))

        def forward(self, image, shallow_input=None):
            return self.conv(image)

    return Tiny().eval()


@pytest.fixture(scope="module")
def tiny_artifacts(tmp_path_factory) -> dict[str, Path]:
    from isdnet_deploy.export.onnx_export import export_onnx

    folder = tmp_path_factory.mktemp("tiny")
    model = tiny_model()
    paths = {"default": folder / "tiny.onnx", "embedding": folder / "tiny_u8.onnx"}
    export_onnx(model, paths["default"], fast_pyramid=False, verify_size=(40, 48))
    export_onnx(model, paths["embedding"], fast_pyramid=False, input="uint8", output="labels",
                verify_size=(40, 48))
    return paths


def valgrind(c_build: CBuild, arguments: list[str], suppressions: bool, status: int = 0
             ) -> str:
    if shutil.which("valgrind") is None:
        pytest.fail("valgrind not found; install it (apt-get install valgrind, as .ci/run does)")
    options = ["--leak-check=full", "--error-exitcode=1", "--errors-for-leak-kinds=definite"]
    if suppressions:
        options.append(f"--suppressions={ROOT / 'c' / 'tests' / 'onnxruntime.supp'}")
    result = run(["valgrind", *options, *arguments], c_build.work, check=False, timeout=900)
    assert result.returncode == status, result.stderr[-3000:]
    assert "ERROR SUMMARY: 0 errors" in result.stderr
    assert "definitely lost: 0 bytes" in result.stderr or "no leaks are possible" in \
        result.stderr
    return result.stderr


@pytest.mark.parametrize("kind", ["default", "embedding"])
def test_valgrind_open_predict_three_times_close(c_build, tiny_artifacts, kind):
    """0 errors and nothing definitely lost. The suppression file hides one error inside
    ONNX Runtime itself (a 4-byte memcpy onto itself while it creates a session)."""
    log = valgrind(c_build, [str(c_build.programs / "predict_repeat"),
                             str(tiny_artifacts[kind]), "47", "61", "3", "1"], True)
    assert "in use at exit" in log


def test_valgrind_internals_without_suppressions(c_build, onnx_model, tmp_path):
    """The resize, the logits -> labels step and the contract reader (a good contract and
    a malformed one), with no suppression at all."""
    from isdnet_deploy import runtime

    text = runtime.load(onnx_model).contract.to_json()
    (tmp_path / "good.json").write_text(text)
    (tmp_path / "bad.json").write_text(text.replace('"unknown"', '"\\ud800"'))
    program = str(c_build.programs / "check_internals")
    valgrind(c_build, [program, "contract", str(tmp_path / "good.json")], False)
    valgrind(c_build, [program, "contract", str(tmp_path / "bad.json")], False, 3)
    rng = np.random.default_rng(15)
    image = rng.integers(0, 256, (37, 3 * 29 + 5), dtype=np.uint8)
    (tmp_path / "resize").write_bytes(np.array([37, 29, 3 * 29 + 5, 1, 30, 23], "<i4")
                                      .tobytes() + image.tobytes())
    logits = rng.standard_normal((3, 20, 17)).astype(np.float32)
    (tmp_path / "labels").write_bytes(np.array([3, 20, 17, 25, 21], "<i4").tobytes()
                                      + logits.tobytes())
    for mode in ("resize", "labels"):
        valgrind(c_build, [str(c_build.programs / "check_internals"), mode,
                           str(tmp_path / mode), str(tmp_path / f"{mode}.out")], False)


def test_library_adds_little_memory_to_onnx_runtime(c_build, tiny_artifacts):
    """Peak memory of open + predict against ONNX Runtime's session alone (the README's
    figure comes from benchmarks/c_vs_python.py on the real model)."""
    library = run([str(c_build.programs / "predict_repeat"), str(tiny_artifacts["default"]),
                   "500", "400", "1"], c_build.work).stdout
    alone = run([str(c_build.programs / "ort_session_only"), str(tiny_artifacts["default"]),
                 "400", "320"], c_build.work).stdout
    added_kib = int(library.split()[-1]) - int(alone.split()[-1])
    # Its own buffers at 500x400: the scaled image and its float planes (1.9 MiB), the
    # labels' scratch rows; far below the 8 MiB bound.
    assert added_kib < 8 * 1024


def test_benchmark_script_runs(c_build, onnx_model, tmp_path):
    """benchmarks/c_vs_python.py (the README's figures), at a toy size."""
    output = tmp_path / "bench.json"
    run([sys.executable, str(ROOT / "benchmarks" / "c_vs_python.py"), "--model",
         str(onnx_model), "--size", "64x80", "--rounds", "1", "--calls", "1",
         "--memory-runs", "1", "--postprocess-size", "80x80", "--build",
         str(c_build.programs), "-o", str(output)], ROOT,
        env={"PYTHONPATH": str(ROOT)})
    results = json.loads(output.read_text())
    assert results["time"]["median_ratio"] > 0
    assert results["memory"]["median_peak_kib"]["c_library"] > 0
    assert set(results["postprocess"]["median_ms"]) == {"cv2", "exact"}
