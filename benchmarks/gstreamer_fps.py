"""The GStreamer element isdnetseg against the Python runtime: frames per second on the
same frames, side by side.

    python benchmarks/gstreamer_fps.py --model model.onnx --size 512x512 --frames 10 \\
        --rounds 3 --prefix isdnet-c

--prefix is where c/ was installed with its GStreamer plugin (the README's build). Writes
--frames synthetic aerial-like frames (isdnet_deploy.data.samples.photo_like) to a raw RGB
file, then runs --rounds interleaved rounds of:

- GStreamer: gst-launch-1.0 filesrc ! rawvideoparse ! isdnetseg ! filesink, with the
  element's debug log on (GST_DEBUG=isdnetseg:5), which stamps the end of every frame;
- Python: runtime.load(model).predict(frame) on each frame, stamping the end of each.

Frames per second of a side = (frames - 1) / (end of the last frame - end of the first):
the steady state of the whole per-frame path (reading, segmenting, writing the labels),
without opening the model and without the first frame, which warms ONNX Runtime up. The
ratio GStreamer / Python is taken per round; the median ratio over rounds is the one to
trust on a shared machine. Both use ONNX Runtime's default thread count unless --threads
is given. The labels of both sides are compared byte for byte.

Prints a summary and writes every measurement as JSON to -o.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FRAME_DONE = re.compile(r"^(\d+):(\d\d):(\d\d\.\d+) .* frame \d+ done: ", re.M)


def frames_per_second(ends: list[float]) -> float:
    return (len(ends) - 1) / (ends[-1] - ends[0])


def run_gstreamer(model: str, frames_file: Path, size: tuple[int, int], count: int,
                  threads: int, prefix: Path, labels_file: Path) -> list[float]:
    """End time (s) of each frame in the element, from its debug log."""
    height, width = size
    pipeline = (f'filesrc location="{frames_file}" ! rawvideoparse width={width} '
                f"height={height} format=rgb framerate=1/1 plane-strides=<{3 * width}> ! "
                f'isdnetseg model="{model}" threads={threads} ! filesink '
                f'location="{labels_file}"')
    env = dict(os.environ, GST_PLUGIN_PATH=str(prefix / "lib" / "gstreamer-1.0"),
               GST_DEBUG="isdnetseg:5", GST_DEBUG_NO_COLOR="1")
    done = subprocess.run(["gst-launch-1.0", *shlex.split(pipeline)], env=env,
                          capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise SystemExit(f"error: the pipeline failed:\n{done.stdout}\n{done.stderr[-3000:]}")
    ends = [int(h) * 3600 + int(m) * 60 + float(s) for h, m, s in
            FRAME_DONE.findall(done.stderr)]
    if len(ends) != count:
        raise SystemExit(f"error: the element logged {len(ends)} frames, expected {count}")
    return ends


def read_labels(path: Path, count: int, size: tuple[int, int]) -> np.ndarray:
    """GRAY8 frames as filesink writes them: rows padded to 4 bytes."""
    height, width = size
    row = (width + 3) // 4 * 4
    data = np.frombuffer(path.read_bytes(), np.uint8).reshape(count, height, row)
    return data[:, :, :width]


def _size(text: str) -> tuple[int, int]:
    from isdnet_deploy.profiles import parse_size

    return parse_size(text)


@click.command()
@click.option("--model", required=True, type=click.Path(exists=True, dir_okay=False),
              help="ONNX artifact written by isdnet-deploy export.")
@click.option("--size", "size_text", default="512x512", show_default=True,
              help="Frame size HxW.")
@click.option("--frames", type=click.IntRange(min=2), default=10, show_default=True)
@click.option("--rounds", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
              help="ONNX Runtime intra-op threads for both (0: its default).")
@click.option("--prefix", default="isdnet-c", show_default=True,
              help="Install prefix of c/ holding lib/gstreamer-1.0/libgstisdnet.so.")
@click.option("-o", "--output", default=None, help="Write every measurement as JSON here.")
def main(model: str, size_text: str, frames: int, rounds: int, threads: int, prefix: str,
         output: str | None) -> None:
    from isdnet_deploy import runtime
    from isdnet_deploy.data.samples import photo_like

    size = _size(size_text)
    model = os.path.abspath(model)
    plugin = Path(prefix).resolve() / "lib" / "gstreamer-1.0" / "libgstisdnet.so"
    if not plugin.is_file():
        raise SystemExit(f"error: {plugin} not found; build c/ with GStreamer's development "
                         "files installed (README: In a GStreamer pipeline)")
    if shutil.which("gst-launch-1.0") is None:
        raise SystemExit("error: gst-launch-1.0 not found; install gstreamer1.0-tools")
    images = [photo_like(*size, seed=i) for i in range(frames)]
    seg = runtime.load(model, threads=threads or None)
    found: dict[str, list[float]] = {"gstreamer": [], "python": []}
    ratios: list[float] = []
    labels_equal = True
    print(f"{frames} frames of {size[0]}x{size[1]}, {rounds} interleaved rounds:")
    with tempfile.TemporaryDirectory() as folder:
        frames_file, labels_file = Path(folder) / "frames.rgb", Path(folder) / "labels.gray"
        frames_file.write_bytes(b"".join(image.tobytes() for image in images))
        for r in range(rounds):
            fps = {}
            for side in (("gstreamer", "python") if r % 2 == 0 else ("python", "gstreamer")):
                if side == "gstreamer":
                    ends = run_gstreamer(model, frames_file, size, frames, threads,
                                         Path(prefix).resolve(), labels_file)
                    got = read_labels(labels_file, frames, size)
                else:
                    ends, predicted = [], []
                    for image in images:
                        predicted.append(seg.predict(image))
                        ends.append(time.perf_counter())
                fps[side] = frames_per_second(ends)
                found[side].append(fps[side])
            labels_equal &= all(np.array_equal(a, b) for a, b in zip(got, predicted,
                                                                       strict=True))
            ratios.append(fps["gstreamer"] / fps["python"])
            print(f"  round {r + 1}: GStreamer {fps['gstreamer']:.2f} fps, Python "
                  f"{fps['python']:.2f} fps, GStreamer / Python {ratios[-1]:.3f}", flush=True)
    seg.close()
    results: dict[str, Any] = {
        "model": model, "size": list(size), "frames": frames, "rounds": rounds,
        "threads": threads, "cpus": os.cpu_count(), "load_average": list(os.getloadavg()),
        "fps": found, "median_fps": {k: statistics.median(v) for k, v in found.items()},
        "ratios": ratios, "median_ratio": statistics.median(ratios),
        "labels_equal": labels_equal}
    m = results["median_fps"]
    print(f"median: GStreamer isdnetseg {m['gstreamer']:.2f} fps, Python runtime "
          f"{m['python']:.2f} fps; median ratio GStreamer / Python "
          f"{results['median_ratio']:.3f}; labels equal: {labels_equal}")
    if output:
        Path(output).write_text(json.dumps(results, indent=2) + "\n")
    if not labels_equal:
        sys.exit(1)


if __name__ == "__main__":
    main()
