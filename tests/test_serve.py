"""``isdnet-deploy serve`` on a local Ray: answers are ``infer``'s bytes, bad bodies are
one-line 4xx and the server keeps serving, overload is 503 at once, the load test checks
every answer, SIGTERM stops it cleanly."""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from ray_support import ROOT, free_port, ray_env, require_ray

from isdnet_deploy.data.images import read_label_png
from isdnet_deploy.data.samples import generate_sample_set

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("serve_images")
    generate_sample_set(folder, "deepglobe", count=3, size=(128, 160), seed=7)
    return folder


@pytest.fixture(scope="module")
def expected(images, onnx_model) -> dict[str, bytes]:
    """What plain ``infer`` writes for each image: the answers must be these bytes."""
    out = images.parent / "infer_out"
    done = subprocess.run([sys.executable, "-m", "isdnet_deploy", "infer", onnx_model, images,
                           "-o", out, "--no-progress"], env=ray_env(), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return {p.name.replace("_labels.png", ".jpg"): p.read_bytes()
            for p in out.glob("*_labels.png")}


class Server:
    def __init__(self, process: subprocess.Popen, port: int) -> None:
        self.process, self.port = process, port
        self.url = f"http://127.0.0.1:{port}/"

    def request(self, method: str, path: str = "/", body: bytes | None = None,
                headers: dict | None = None) -> tuple[int, bytes, float]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        start = time.perf_counter()
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        answer = response.read()
        connection.close()
        return response.status, answer, time.perf_counter() - start


def start_server(artifact: Path, *options: object) -> tuple[subprocess.Popen, int]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "isdnet_deploy", "serve", artifact,
                                "--port", str(port), *map(str, options)],
                               env=ray_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    return process, port


@pytest.fixture(scope="module")
def server(onnx_model):
    """One replica running one request at a time with two waiting at most, so a burst
    overflows the queue."""
    require_ray()
    process, port = start_server(onnx_model, "--replicas", 1, "--max-ongoing", 1,
                                 "--max-queued", 2)
    running = Server(process, port)
    deadline = time.perf_counter() + 240
    while True:
        assert process.poll() is None, process.communicate()[1]
        try:
            if running.request("GET", "/health")[0] == 200:
                break
        except OSError:
            pass
        assert time.perf_counter() < deadline, "the server did not answer /health in time"
        time.sleep(1)
    yield running
    if process.poll() is None:
        process.kill()
        process.communicate(timeout=60)


def test_health_names_the_artifact(server, onnx_model):
    status, body, _ = server.request("GET", "/health")
    assert status == 200 and json.loads(body)["artifact"] == onnx_model.name


def test_answers_are_the_label_pngs_infer_writes(server, images, expected):
    for path in sorted(images.glob("*_sat.jpg")):
        status, body, _ = server.request("POST", "/", path.read_bytes())
        assert status == 200 and body == expected[path.name], path.name


def test_json_answer_is_the_class_histogram(server, images, expected):
    path = sorted(images.glob("*_sat.jpg"))[0]
    status, body, _ = server.request("POST", "/?format=json", path.read_bytes())
    assert status == 200
    answer = json.loads(body)
    labels = read_label_png(images.parent / "infer_out" / f"{path.stem}_labels.png")
    counts = np.bincount(labels.ravel(), minlength=len(answer["classes"]))
    assert list(answer["classes"].values()) == counts.tolist()
    assert (answer["height"], answer["width"]) == labels.shape
    same, *_ = server.request("POST", "/", path.read_bytes(), {"Accept": "application/json"})
    assert same == 200


@pytest.mark.parametrize(("body", "status", "fragment"), [
    (b"", 400, "empty body"),
    (b"hello, not an image", 415, "not a PNG, JPEG"),
    ("truncated", 415, "the request body"),
    ("tiny", 422, "below the model's minimum"),
])
def test_bad_bodies_get_one_line_4xx_and_the_server_keeps_serving(server, images, expected,
                                                                   body, status, fragment):
    good = sorted(images.glob("*_sat.jpg"))[0]
    if body == "truncated":
        body = good.read_bytes()[:300]
    elif body == "tiny":
        body = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    got, answer, _ = server.request("POST", "/", body)
    text = answer.decode()
    assert got == status and fragment in text and text.count("\n") == 1, (got, text)
    assert server.request("POST", "/", good.read_bytes())[:2] == (200, expected[good.name])


def test_a_burst_beyond_the_queue_gets_503_at_once_and_correct_answers(server, images,
                                                                        expected):
    path = sorted(images.glob("*_sat.jpg"))[1]
    body = path.read_bytes()
    results: list[tuple[int, bytes, float]] = []
    lock = threading.Lock()

    def post() -> None:
        answer = server.request("POST", "/", body)
        with lock:
            results.append(answer)

    threads = [threading.Thread(target=post) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    rejected = [r for r in results if r[0] == 503]
    served = [r for r in results if r[0] == 200]
    assert len(rejected) + len(served) == 12, [r[0] for r in results]
    assert rejected and served  # 1 running + 2 queued at most; the rest refused
    assert all(r[1] == expected[path.name] for r in served)
    slowest_served = max(r[2] for r in served)
    assert max(r[2] for r in rejected) < slowest_served  # refused without waiting in line


def test_load_test_checks_every_answer(server, images, onnx_model, tmp_path):
    report = tmp_path / "load.json"
    done = subprocess.run([sys.executable, ROOT / "benchmarks" / "serve_load.py", onnx_model,
                           images, "--url", server.url, "--requests", "6", "--clients", "1,4",
                           "--time-limit", "60", "--json", report], env=ray_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    levels = json.loads(report.read_text())["levels"]
    assert [level["clients"] for level in levels] == [1, 4]
    for level in levels:
        assert level["wrong"] == 0 and level["failed"] == 0
        assert level["ok"] + level["rejected_503"] == level["requests"] == 6
        assert level["ok"] > 0 and level["p50_ms"] <= level["p90_ms"] <= level["p99_ms"]
    assert "p99 ms" in done.stdout


def test_sigterm_stops_the_server_cleanly(server):
    server.process.send_signal(signal.SIGTERM)
    out, err = server.process.communicate(timeout=90)
    assert server.process.returncode == 143, err
    assert "Traceback" not in err and "terminated" in err
    assert "serving" in out


def test_an_artifact_replicas_cannot_open_is_one_line(tmp_path):
    require_ray()
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x08\x07 not a model")
    process, _ = start_server(broken)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 1 and "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "cannot open the artifact" in errors[0], err
