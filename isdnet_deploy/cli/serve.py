"""``isdnet-deploy serve``: an HTTP endpoint on Ray Serve (``apps.serve``)."""

from __future__ import annotations

import functools
import math
import socket
import time
from pathlib import Path

import click

from ..apps.serve import ServeSettings
from ..errors import IsdnetError
from ..runtime.predictor import TileSettings
from .common import (
    DEVICE,
    PROFILE,
    REFERENCE,
    SIZE,
    max_pixels_option,
    open_segmenter,
    printable,
)


def _check_port_free(host: str, port: int) -> None:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise IsdnetError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose "
                              "another --port or stop what uses it") from None


@click.command("serve")
@click.argument("artifact")
@click.option("--ray", "ray_address", default=None, metavar="ADDRESS",
              help="Join this Ray cluster ('auto', HOST:PORT, ray://HOST:PORT) [default: start "
                   "a local Ray]. ARTIFACT must be a path every node sees.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0: every interface).")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--replicas", type=click.IntRange(min=1), default=1, show_default=True,
              help="Copies of the model, each a Ray actor holding the artifact open.")
@click.option("--gpus-per-replica", type=click.FloatRange(min=0), default=0.0,
              show_default=True, help="GPUs each replica reserves (>0 runs it on CUDA).")
@click.option("--max-ongoing", type=click.IntRange(min=1), default=2, show_default=True,
              help="Requests one replica runs at once.")
@click.option("--max-queued", type=click.IntRange(min=0), default=16, show_default=True,
              help="Requests waiting at most; beyond that the answer is 503 at once.")
@click.option("--profile", type=PROFILE, default=None,
              help="The classes of 'reference' and .pth artifacts.")
@click.option("--device", type=DEVICE, default=None,
              help="[default: cuda with --gpus-per-replica, else the backend's own].")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads per replica for ONNX Runtime / PyTorch.")
@click.option("--no-scale", is_flag=True, help="Feed images at their own size.")
@click.option("--max-size", type=SIZE, default=None,
              help="Tile images larger than HxW (network pixels).")
@max_pixels_option
def serve_command(artifact: str, ray_address: str | None, host: str, port: int,
                  replicas: int, gpus_per_replica: float, max_ongoing: int, max_queued: int,
                  profile: str | None, device: str | None, threads: int | None,
                  no_scale: bool, max_size: tuple[int, int] | None, max_pixels: int) -> None:
    """Serve ARTIFACT over HTTP until Ctrl-C or SIGTERM.

    POST an image (PNG, JPEG, TIFF) to / and get the label map as a palette-indexed PNG,
    the bytes infer writes; add ?format=json (or Accept: application/json) for the class
    histogram. GET /health answers while the server is up. Bad bodies get 4xx and one
    line; a full queue gets 503 at once.

    Example: isdnet-deploy serve model.onnx --port 8000 --replicas 2
    """
    from ..apps import distributed, serve

    _check_port_free(host, port)
    spec = artifact if artifact == REFERENCE else str(Path(artifact).resolve())
    if gpus_per_replica and device is None:
        device = "cuda"
    opener = functools.partial(open_segmenter, spec, profile=profile, device=device,
                               threads=threads, scale=not no_scale)
    settings = ServeSettings(replicas=replicas, gpus_per_replica=gpus_per_replica,
                             max_ongoing_requests=max_ongoing, max_queued_requests=max_queued,
                             max_pixels=max_pixels)
    ray = distributed.require_ray()
    joined = distributed.connect(ray_address, num_cpus=math.ceil(replicas))
    try:
        url = serve.start(opener, Path(artifact).name, host=host, port=port,
                          settings=settings, tiles=TileSettings(max_size=max_size))
        click.echo(printable(f"serving {Path(artifact).name} at {url} on {joined} "
                             f"({replicas} replica(s)); POST an image, GET {url}health; "
                             "Ctrl-C stops"), err=False)
        while True:
            time.sleep(3600)
    finally:
        if ray.is_initialized():
            serve.stop()
            ray.shutdown()
