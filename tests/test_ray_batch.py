"""``infer --ray`` on a real two-node Ray cluster (one machine): both nodes work, the files
are byte-identical to plain ``infer``, a killed worker costs nothing, resume skips what is
complete and redoes what is not, bad input is one line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ray_support import free_port, ray_env, require_ray, two_node_cluster

from isdnet_deploy.data.samples import generate_sample_set, photo_like

pytestmark = pytest.mark.timeout(600)
OPTIONS = ["--overlay", "--max-size", "96x96", "--no-progress"]  # overlays, tiling


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    require_ray()
    with two_node_cluster(tmp_path_factory.mktemp("ray")) as running:
        yield running


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """Ten JPEG tiles, one georeferenced GeoTIFF (when rasterio is installed) and one
    broken file that must be reported, not stop the run."""
    folder = tmp_path_factory.mktemp("ray_images")
    generate_sample_set(folder, "deepglobe", count=10, size=(160, 160), seed=3)
    if _has_rasterio():
        from hostile_helpers import write_geotiff

        write_geotiff(folder / "scene.tif", photo_like(144, 176, seed=4))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return folder


def _has_rasterio() -> bool:
    try:
        import rasterio  # noqa: F401
    except ImportError:
        return False
    return True


def segmentable(images: Path) -> int:
    return len(list(images.glob("*_sat.jpg"))) + len(list(images.glob("*.tif")))


def isdnet(*args: object, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "isdnet_deploy", *map(str, args)],
                          env=ray_env(), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def plain(images, onnx_model, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("plain")
    done = isdnet("infer", onnx_model, images, "-o", out, *OPTIONS)
    assert done.returncode == 1 and "broken.jpg" in done.stderr, done.stderr
    return out


def outputs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_ray_run_on_two_nodes_writes_what_plain_infer_writes(cluster, images, onnx_model,
                                                              plain, tmp_path):
    out = tmp_path / "ray"
    done = isdnet("infer", onnx_model, images, "-o", out, "--ray", cluster.address,
                  "--workers", 2, *OPTIONS)
    assert done.returncode == 1, done.stderr  # broken.jpg, reported at the end
    assert "Traceback" not in done.stderr
    n = segmentable(images)
    assert "broken.jpg" in done.stderr and f"1 of {n + 1} inputs failed" in done.stderr
    expected = outputs(plain)
    assert len(expected) == 2 * n  # labels and overlays (GeoTIFF: a georeferenced .tif)
    assert outputs(out) == expected  # byte for byte
    assert f"{n} of {n + 1} inputs segmented" in done.stdout
    nodes = [line for line in done.stdout.splitlines() if line.startswith("nodes: ")]
    assert nodes and nodes[0].startswith("nodes: 2 "), done.stdout  # both nodes worked
    assert f"tiled: {n} of {n}" in done.stdout


KILL_FIRST_WORKER = """
import functools, json, os, signal, sys
from pathlib import Path
import ray
from isdnet_deploy import runtime
from isdnet_deploy.apps.distributed import infer_on_ray
from isdnet_deploy.runtime.predictor import TileSettings

address, model, images, out = sys.argv[1:]
killed, after_kill = [], []

def kill_first(row):
    if not killed:
        killed.append(int(row["pid"]))
        os.kill(int(row["pid"]), signal.SIGKILL)
    else:
        after_kill.append(row["path"])

ray.init(address=address, log_to_driver=False, logging_level="ERROR")
try:
    report = infer_on_ray(functools.partial(runtime.load, model),
                          sorted(Path(images).glob("synth*_sat.jpg")), out, workers=2,
                          overlay_images=True, tiles=TileSettings(max_size=(96, 96)),
                          on_result=kill_first)
finally:
    ray.shutdown()
print(json.dumps({"killed": killed[0], "after_kill": len(after_kill), "done": report.done,
                  "failures": [f.message for f in report.failures],
                  "pids": sorted(set().union(*(w.pids for w in report.workers.values())))}))
"""


def test_a_killed_worker_is_restarted_and_the_run_completes(cluster, images, onnx_model,
                                                             plain, tmp_path):
    """The first result's worker process is SIGKILLed while images remain; Ray restarts
    it and retries its image, and every output is still written, and correct."""
    script = tmp_path / "kill_first.py"
    script.write_text(KILL_FIRST_WORKER)
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, script, cluster.address, onnx_model, images, out],
                          env=ray_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    count = len(list(images.glob("synth*_sat.jpg")))
    assert result["after_kill"] > 0, "the run ended before the kill: nothing left to retry"
    assert result["done"] == count and not result["failures"], result
    assert result["killed"] in result["pids"] and len(result["pids"]) > 2, result  # a new one
    expected = outputs(plain)
    written = outputs(out)
    assert len(written) == 2 * count
    assert written == {name: expected[name] for name in written}


def test_resume_skips_complete_outputs_and_redoes_partial_ones(cluster, images, onnx_model,
                                                               plain, tmp_path):
    out = tmp_path / "resumed"
    shutil.copytree(plain, out)
    truncated = out / "synth001_sat_labels.png"
    truncated.write_bytes(truncated.read_bytes()[:-20])  # a copy cut short
    (out / "synth002_sat_overlay.jpg").unlink()  # one of an image's two outputs missing
    (out / "synth003_sat_labels.png").write_bytes(b"")  # an empty file
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    done = isdnet("infer", onnx_model, images, "-o", out, "--ray", cluster.address,
                  *OPTIONS)
    assert done.returncode == 1 and "broken.jpg" in done.stderr, done.stderr
    n = segmentable(images)
    assert f"3 of {n + 1} inputs segmented" in done.stdout, done.stdout
    assert f"skipped: {n - 3} of {n + 1} inputs whose outputs were already complete" in (
        done.stdout)
    assert outputs(out) == outputs(plain)
    redone = {p.name for p in out.iterdir() if p.stat().st_mtime_ns != stamps.get(p.name)}
    assert redone == {f"synth00{i}_sat_{kind}" for i in (1, 2, 3)
                      for kind in ("labels.png", "overlay.jpg")}


def test_an_artifact_the_workers_cannot_open_stops_the_run_once(cluster, images, tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x08\x07 not a model")
    done = isdnet("infer", broken, images, "-o", tmp_path / "out", "--ray", cluster.address,
                  "--no-progress")
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "cannot open the artifact" in errors[0], done.stderr
    assert "broken.onnx" in errors[0]
    assert not list((tmp_path / "out").glob("*_labels.*"))


def test_an_unreachable_address_is_one_line_within_seconds(images, onnx_model, tmp_path):
    require_ray()
    start = time.perf_counter()
    done = isdnet("infer", onnx_model, images, "-o", tmp_path, "--ray",
                  f"127.0.0.1:{free_port()}")
    assert time.perf_counter() - start < 30  # the interpreter's start included
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "does not answer" in lines[0], done.stderr


def test_worker_options_without_ray_are_a_usage_error(cli, images, onnx_model, tmp_path):
    result = cli("infer", onnx_model, images, "-o", tmp_path, "--workers", "2")
    assert result.exit_code == 2 and "add --ray" in result.output


def test_more_workers_than_the_cluster_holds_is_one_line(cluster, images, onnx_model,
                                                         tmp_path):
    done = isdnet("infer", onnx_model, images, "-o", tmp_path, "--ray", cluster.address,
                  "--workers", 3)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "3 workers need 3 CPUs but the Ray cluster has 2; use 2 workers" in done.stderr
