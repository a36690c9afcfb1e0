"""Load test of ``isdnet-deploy serve`` on loopback: latency percentiles and throughput at
several numbers of concurrent clients, every answer checked against ``predict``.

    python benchmarks/serve_load.py model.onnx IMAGES_DIR --requests 32 --clients 1,4,16

Without ``--url`` it starts ``isdnet-deploy serve ARTIFACT`` on a free port and stops it
at the end. Each level sends at most ``--requests`` requests and stops issuing new ones
after ``--time-limit`` seconds. A 200 answer must be byte-identical to the label PNG
computed here with the same artifact (``encode_label_png(predict(image))``, what ``infer``
writes); a 503 is the bounded queue refusing work (counted, not an error); anything else
is a failure, and any failure or wrong answer makes the exit status 1.
"""

from __future__ import annotations

import argparse
import http.client
import json
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import numpy as np

from isdnet_deploy import runtime
from isdnet_deploy.data.datasets import list_images, split_masks
from isdnet_deploy.data.images import encode_label_png, read_image
from isdnet_deploy.runtime.predictor import Predictor


def expected_answers(artifact: str, paths: list[Path]) -> dict[Path, bytes]:
    with runtime.load(artifact) as segmenter:
        predictor = Predictor(segmenter)
        palette = segmenter.contract.display_palette()
        return {p: encode_label_png(predictor.predict(read_image(p)), palette) for p in paths}


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else 0.0


def run_level(url: str, bodies: list[tuple[bytes, bytes]], clients: int, requests: int,
              time_limit: float) -> dict:
    """``requests`` POSTs from ``clients`` threads (keep-alive connections)."""
    parts = urllib.parse.urlsplit(url)
    lock = threading.Lock()
    issued = [0]
    latencies: list[float] = []
    counts = {"ok": 0, "wrong": 0, "rejected_503": 0, "failed": 0}
    errors: list[str] = []
    deadline = time.perf_counter() + time_limit

    def client() -> None:
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
        while True:
            with lock:
                if issued[0] >= requests or time.perf_counter() > deadline:
                    break
                index = issued[0]
                issued[0] += 1
            body, expected = bodies[index % len(bodies)]
            start = time.perf_counter()
            try:
                connection.request("POST", parts.path or "/", body=body)
                response = connection.getresponse()
                answer = response.read()
            except OSError as exc:
                connection.close()
                connection = http.client.HTTPConnection(parts.hostname, parts.port,
                                                        timeout=120)
                with lock:
                    counts["failed"] += 1
                    errors.append(f"{type(exc).__name__}: {exc}")
                continue
            seconds = time.perf_counter() - start
            with lock:
                if response.status == 200:
                    latencies.append(seconds)
                    counts["ok" if answer == expected else "wrong"] += 1
                elif response.status == 503:
                    counts["rejected_503"] += 1
                else:
                    counts["failed"] += 1
                    errors.append(f"{response.status}: {answer[:200]!r}")
        connection.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    return {"clients": clients, "requests": issued[0], **counts, "wall_s": wall,
            "throughput_rps": counts["ok"] / wall if wall else 0.0,
            "p50_ms": 1000 * percentile(latencies, 50),
            "p90_ms": 1000 * percentile(latencies, 90),
            "p99_ms": 1000 * percentile(latencies, 99),
            "mean_ms": 1000 * statistics.fmean(latencies) if latencies else 0.0,
            "errors": errors[:5]}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, server: subprocess.Popen | None, timeout: float) -> None:
    parts = urllib.parse.urlsplit(url)
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if server is not None and server.poll() is not None:
            raise SystemExit(f"error: the server exited ({server.returncode}) before answering")
        try:
            connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=2)
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"error: {url} did not answer /health within {timeout:.0f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("artifact", help="the artifact the server runs (answers are checked "
                                         "against it)")
    parser.add_argument("images", help="folder of images to send (masks are skipped)")
    parser.add_argument("--url", default=None, help="a running server [default: start one]")
    parser.add_argument("--replicas", type=int, default=1,
                        help="replicas of the server started here")
    parser.add_argument("--clients", default="1,4,16", help="concurrency levels")
    parser.add_argument("--requests", type=int, default=32, help="requests per level, at most")
    parser.add_argument("--time-limit", type=float, default=60.0,
                        help="seconds per level, at most")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args()

    paths, _ = split_masks(list_images(args.images), None)
    if not paths:
        raise SystemExit(f"error: no images in {args.images}")
    expected = expected_answers(args.artifact, paths)
    bodies = [(p.read_bytes(), expected[p]) for p in paths]
    server = None
    url = args.url
    if url is None:
        port = free_port()
        url = f"http://127.0.0.1:{port}/"
        server = subprocess.Popen([sys.executable, "-m", "isdnet_deploy", "serve",
                                   args.artifact, "--port", str(port),
                                   "--replicas", str(args.replicas)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_healthy(url, server, timeout=180)
        levels = [run_level(url, bodies, int(c), args.requests, args.time_limit)
                  for c in args.clients.split(",")]
    finally:
        if server is not None:
            server.send_signal(signal.SIGTERM)
            server.communicate(timeout=60)
    print(f"{url}: {len(paths)} distinct images, answers checked against predict")
    print(f"{'clients':>7} {'requests':>8} {'ok':>5} {'wrong':>5} {'503':>5} {'failed':>6} "
          f"{'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'req/s':>7}")
    for r in levels:
        print(f"{r['clients']:>7} {r['requests']:>8} {r['ok']:>5} {r['wrong']:>5} "
              f"{r['rejected_503']:>5} {r['failed']:>6} {r['p50_ms']:>8.1f} {r['p90_ms']:>8.1f} "
              f"{r['p99_ms']:>8.1f} {r['throughput_rps']:>7.2f}")
        for error in r["errors"]:
            print(f"  error: {error}")
    if args.json:
        Path(args.json).write_text(json.dumps({"url": url, "levels": levels}, indent=2))
    bad = sum(r["wrong"] + r["failed"] for r in levels)
    if bad:
        print(f"FAILED: {bad} answers wrong or failed", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
