"""Every command and snippet in README.md runs, as written, in a sandbox folder.

The sandbox holds files under the README's placeholder names (``CHECKPOINT.pth``,
``model.onnx``, ``tile.jpg``, ``DIR_OF_IMAGES``…), so the blocks run unedited. Each block
is matched to a runner by its first line; a block without a runner fails
``test_every_block_has_a_runner``, so a new README example cannot go untested. Commands
that need hardware this machine lacks (TensorRT, CUDA) are run too, and must fail with
their one clear line.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


@dataclass(frozen=True)
class Block:
    language: str
    text: str
    line: int

    @property
    def key(self) -> str:
        return self.text.strip().splitlines()[0].strip()

    def commands(self) -> list[str]:
        """Shell commands, with backslash continuations joined and comments dropped."""
        joined = re.sub(r"\\\n\s*", " ", self.text)
        return [line.split("  #")[0].strip() for line in joined.splitlines()
                if line.strip() and not line.strip().startswith("#")]


def readme_blocks() -> list[Block]:
    blocks, lines = [], README.read_text().splitlines()
    i = 0
    while i < len(lines):
        match = re.match(r"^```(\w+)\s*$", lines[i])
        if match:
            end = lines.index("```", i + 1)
            blocks.append(Block(match[1], "\n".join(lines[i + 1:end]) + "\n", i + 1))
            i = end
        i += 1
    return blocks


def run(command: str, cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    return subprocess.run(command, shell=True, cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, executable="/bin/bash")


def run_ok(command: str, cwd: Path) -> subprocess.CompletedProcess:
    done = run(command, cwd)
    assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr
    return done


def one_line_failure(command: str, cwd: Path, fragment: str) -> None:
    done = run(command, cwd)
    assert done.returncode == 1, f"{command}\n{done.stdout}\n{done.stderr}"
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines and fragment in lines[-1] and "Traceback" not in done.stderr, done.stderr


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory, official_checkpoint, onnx_model) -> Path:
    """A folder holding every file the README's examples name."""
    import cv2

    from isdnet_deploy.data.samples import generate_sample_set, photo_like

    folder = tmp_path_factory.mktemp("readme")
    for name in ("CHECKPOINT.pth", "isdnet_deepglobe.pth"):
        shutil.copy(official_checkpoint, folder / name)
    shutil.copy(onnx_model, folder / "model.onnx")
    cv2.imwrite(str(folder / "tile.jpg"), photo_like(200, 240, seed=5)[:, :, ::-1])
    generate_sample_set(folder / "DIR_OF_IMAGES", "deepglobe", count=3, size=(96, 96))
    generate_sample_set(folder / "DIR", "deepglobe", count=3, size=(96, 96))
    return folder


# --- runners, one per README block (keyed by the block's first line) -----------------------

def _start_demo(block: Block, folder: Path) -> None:
    install, demo = block.commands()[0].split(" && ")
    assert install == "pip install -c constraints.txt -e ."  # what CI's install also runs
    run_ok(demo, folder)
    assert (folder / "runs" / "demo" / "benchmark.json").is_file()
    assert (folder / "runs" / "demo" / "fps.png").is_file()


def _start_tests(block: Block, folder: Path) -> None:
    """The test command is what CI runs (.ci/run), so it runs there, not inside itself."""
    (command,) = block.commands()
    assert command in (ROOT / ".ci" / "run").read_text()


def _export(block: Block, folder: Path) -> None:
    for command in block.commands():
        run_ok(command, folder)
    for name in ("model.onnx", "model_u8.onnx", "model_ext.onnx"):
        assert (folder / name).stat().st_size > 1_000_000


def _deploy(block: Block, folder: Path) -> None:
    import json

    listed, deployed = (run_ok(command, folder) for command in block.commands())
    assert "deepglobe-tensorrt-fp16" in listed.stdout and "cityscapes" in listed.stdout
    manifest = json.loads((folder / "deployed" / "manifest.json").read_text())
    assert [a["file"] for a in manifest["artifacts"]] == ["model.onnx"]
    assert manifest["steps"]["export"]["parity"]["passed"]
    assert "rerun or resume with: isdnet-deploy deploy CHECKPOINT.pth" in deployed.stdout


def _python_snippet(block: Block, folder: Path) -> None:
    script = folder / "snippet.py"
    script.write_text(block.text)
    done = run_ok(f"{shlex.quote(sys.executable)} snippet.py", folder)
    assert "unknown" in done.stdout  # the DeepGlobe class names were printed


def _torch_variants(block: Block, folder: Path) -> None:
    compared, timed = (run_ok(command, folder).stdout for command in block.commands())
    for name in ("pytorch eager bf16", "pytorch eager fp32 channels-last"):
        assert name in compared and name in timed
    assert "decided agreement" in compared and "interleaved" in timed


def _train_synthetic(block: Block, folder: Path) -> None:
    import torch

    (command,) = block.commands()
    command = command.replace("benchmarks/", f"{ROOT}/benchmarks/")
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present: the full training takes minutes; run it by hand")
    done = run(command, folder)
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    assert "no CUDA GPU" in done.stderr


def _quantize_and_build(block: Block, folder: Path) -> None:
    *quantize, build = block.commands()
    for command in quantize:
        run_ok(command, folder)
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        one_line_failure(build, folder, "tensorrt is not installed")
    else:
        run_ok(build, folder)


def _real_images(block: Block, folder: Path) -> None:
    for command in block.commands():
        run_ok(command, folder)
    masks = folder / "masks"
    assert sorted(p.name for p in masks.glob("*_labels.png")) == [
        f"synth{i:03d}_sat_labels.png" for i in range(4)]  # images only, masks skipped


def _run_by_c_library_tests(block: Block, folder: Path) -> None:
    """The "Embedding in C" blocks build and run C code: tests/test_c_library.py executes
    exactly these blocks (its session build runs the cmake line, and
    test_readme_program_builds_with_pkg_config_and_runs_without_ld_library_path the program
    and its commands), so they are not built a second time here."""
    from c_support import readme_blocks as c_section_blocks

    assert (block.language, block.text) in c_section_blocks()


def _run_by_gstreamer_tests(block: Block, folder: Path) -> None:
    """The "In a GStreamer pipeline" block needs the plugin that the C build installs:
    tests/test_gstreamer.py (test_readme_gstreamer_commands_run) runs exactly this block in the
    session build's folder, so it is not built a second time here."""
    from c_support import readme_blocks as section_blocks

    assert (block.language, block.text) in section_blocks("In a GStreamer pipeline")


def _hostile_inputs(block: Block, folder: Path) -> None:
    """A GeoTIFF above the budget streams into a georeferenced label GeoTIFF; a tiny JPEG
    declaring 32000x32000 is refused in one line naming size, budget and option."""
    import importlib.util

    from hostile_helpers import jpeg_declaring, write_geotiff

    from isdnet_deploy.data.samples import photo_like

    stream, bomb = block.commands()
    (folder / "bomb.jpg").write_bytes(jpeg_declaring(32000, 32000))
    if importlib.util.find_spec("rasterio") is None:
        pytest.skip("rasterio is not installed (pip install -e '.[test]' installs it)")
    import rasterio

    write_geotiff(folder / "scene.tif", photo_like(1200, 1100, seed=9))
    done = run_ok(stream, folder)
    assert "streamed window by window" in done.stdout
    with rasterio.open(folder / "scene.tif") as src, \
            rasterio.open(folder / "big" / "scene_labels.tif") as out:
        assert (out.crs, out.transform, out.shape) == (src.crs, src.transform, src.shape)
    refused = run(bomb, folder)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "32000x32000 pixels" in refused.stderr and "--max-pixels" in refused.stderr


def _openvino(block: Block, folder: Path) -> None:
    """Export and compare on both consumers, time the OpenVINO backend; bf16 runs where the
    CPU has native BF16 and is one clear line elsewhere."""
    openvino = pytest.importorskip("openvino", reason="OpenVINO is not installed (pip "
                                                      "install -e '.[test]' installs it)")
    from isdnet_deploy.runtime.openvino_backend import native_bf16

    export, compare, benchmark, bf16 = block.commands()
    done = run_ok(export, folder)
    assert "verified on: onnxruntime, openvino" in done.stdout
    assert done.stdout.count("PASSED") == 2
    compared = run_ok(compare, folder).stdout
    assert "model_ov.onnx (onnxruntime fp32)" in compared
    assert "model_ov.onnx (openvino fp32)" in compared
    assert "openvino fp32" in run_ok(benchmark, folder).stdout
    if native_bf16(openvino.Core()):
        assert "openvino bf16" in run_ok(bf16, folder).stdout
    else:
        one_line_failure(bf16, folder, "bf16 is unavailable on this CPU")


def _beyond_one_machine(block: Block, folder: Path) -> None:
    """infer --ray on a local Ray writes infer's files; the serve load test starts a server,
    checks every answer against predict and stops it. The two-node cluster, resume and
    worker kills are in tests/test_ray_batch.py, serving in tests/test_serve.py."""
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        pytest.skip("ray is not installed (pip install -e '.[test]' installs it)")
    batch, load = block.commands()
    done = run_ok(batch, folder)
    assert "3 of 3 inputs segmented" in done.stdout and "nodes: 1 " in done.stdout
    plain = run_ok("isdnet-deploy infer model.onnx DIR_OF_IMAGES -o labels_plain", folder)
    assert "3 of 3" in plain.stdout
    for path in (folder / "labels_plain").glob("*_labels.png"):
        assert (folder / "labels" / path.name).read_bytes() == path.read_bytes()
    done = run_ok(load.replace("benchmarks/", f"{ROOT}/benchmarks/"), folder)
    assert "answers checked against predict" in done.stdout and "p99 ms" in done.stdout


RUNNERS: dict[str, Callable[[Block, Path], None]] = {
    "cmake -S c -B build/c": _run_by_c_library_tests,
    "/* classes.c:": _run_by_c_library_tests,
    'export PKG_CONFIG_PATH="$PWD/isdnet-c/lib/pkgconfig"': _run_by_c_library_tests,
    'export GST_PLUGIN_PATH="$PWD/isdnet-c/lib/gstreamer-1.0"': _run_by_gstreamer_tests,
    "pip install -c constraints.txt -e . && isdnet-deploy demo": _start_demo,
    "pip install -c constraints.txt -e '.[test]' && ruff check . && python -m pytest -q":
        _start_tests,
    "isdnet-deploy recipes": _deploy,
    "isdnet-deploy export CHECKPOINT.pth -o model.onnx": _export,
    "import cv2": _python_snippet,
    "isdnet-deploy compare CHECKPOINT.pth --torch-variant precision=bf16": _torch_variants,
    "python benchmarks/train_synthetic.py -o isdnet_synthetic_deepglobe.pth --device cuda \\":
        _train_synthetic,
    "isdnet-deploy quantize model.onnx --precision fp16 -o model_fp16.onnx": _quantize_and_build,
    "isdnet-deploy export CHECKPOINT.pth -o model_ov.onnx --size 258x202": _openvino,
    "isdnet-deploy samples -o samples --profile deepglobe --count 4 --size 512x512":
        _real_images,
    "isdnet-deploy infer model.onnx scene.tif -o big --max-pixels 1000000": _hostile_inputs,
    "isdnet-deploy infer model.onnx DIR_OF_IMAGES -o labels --ray --workers 2":
        _beyond_one_machine,
}


def test_every_block_has_a_runner() -> None:
    keys = [block.key for block in readme_blocks()]
    assert len(keys) == len(set(keys)), "two README blocks start with the same line"
    missing = [key for key in keys if not any(key.startswith(k) for k in RUNNERS)]
    assert not missing, f"README blocks without a runner in {__file__}: {missing}"
    unused = [k for k in RUNNERS if not any(key.startswith(k) for key in keys)]
    assert not unused, f"runners for blocks no longer in the README: {unused}"


@pytest.mark.parametrize("block", readme_blocks(), ids=lambda b: f"line{b.line}")
def test_readme_block_runs(block: Block, sandbox: Path) -> None:
    runner = next(r for k, r in RUNNERS.items() if block.key.startswith(k))
    runner(block, sandbox)
