"""An online endpoint on Ray Serve: POST an encoded image, get its label map.

``POST /`` with a PNG/JPEG/TIFF body answers the palette-indexed label PNG, the same bytes
``infer`` writes for that image (``data.images.encode_label_png``); ``POST /?format=json``
(or ``Accept: application/json``) answers the class histogram instead. ``GET /health``
says the replica is up and which artifact it serves.

Bad requests are answered, never fatal: an empty body is 400, a body that is not a
readable image 415, one above the pixel or byte budget 413, an image the model cannot
take (below the contract's minimum size) 422, each with a one-line reason. The queue is
bounded: each replica runs ``max_ongoing_requests`` at a time and Ray Serve holds at most
``max_queued_requests`` more, answering 503 at once beyond that, so overload never builds
an unbounded backlog.

No ``@serve.batch``: an artifact takes one image per run (batch dimension 1, images of
any size), so grouping requests would only queue them behind each other; replicas are
what add throughput. Decoding goes through the same bounded readers as ``infer``
(headers checked before decoding), from a temporary file of the body.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..data.headers import DEFAULT_MAX_PIXELS, checked_header, megapixels
from ..data.images import encode_label_png, read_image
from ..errors import IsdnetError, missing, one_line
from ..runtime.predictor import Predictor, TileSettings

APP_NAME = "isdnet"
# Bodies larger than this are refused before they are written anywhere (413).
DEFAULT_MAX_BODY_BYTES = 64 * 2**20
_SUFFIXES = ((b"\x89PNG", ".png"), (b"\xff\xd8", ".jpg"), (b"II*\x00", ".tif"),
             (b"MM\x00*", ".tif"), (b"BM", ".bmp"), (b"RIFF", ".webp"))


def _serve() -> Any:
    try:
        from ray import serve
    except ImportError:
        raise missing("ray", extra="ray", why="serve runs on Ray Serve") from None
    return serve


@dataclass(frozen=True)
class ServeSettings:
    """How the endpoint runs: replicas, the bounded queue, the per-request budgets."""

    replicas: int = 1
    cpus_per_replica: float = 1.0
    gpus_per_replica: float = 0.0
    max_ongoing_requests: int = 2  # per replica, in flight at once
    max_queued_requests: int = 16  # waiting, over all replicas; beyond: 503 at once
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES


class BadRequest(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


def decode_body(body: bytes, max_pixels: int | None, max_body_bytes: int,
                folder: str | None = None) -> np.ndarray:
    """HxWx3 uint8 RGB from an encoded image body, via ``infer``'s bounded reader; a body
    that is empty, too large, or not a readable image raises ``BadRequest``."""
    if not body:
        raise BadRequest(400, "empty body: POST the bytes of a PNG, JPEG or TIFF image")
    if len(body) > max_body_bytes:
        raise BadRequest(413, f"body of {len(body)} bytes is above the limit of "
                              f"{max_body_bytes} bytes")
    suffix = next((s for magic, s in _SUFFIXES if body.startswith(magic)), None)
    if suffix is None:
        raise BadRequest(415, "the body is not a PNG, JPEG, TIFF, BMP or WebP image")
    fd, name = tempfile.mkstemp(suffix=suffix, dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(body)
        header = checked_header(name, "image", None)
        if max_pixels and header.decode_pixels > max_pixels:
            raise BadRequest(413, f"the image declares {header.width}x{header.height} pixels "
                                  f"(WxH), above this server's budget of "
                                  f"{megapixels(max_pixels)}")
        return read_image(name, None, max_pixels)
    except IsdnetError as exc:
        reason = str(exc).replace(f"image {name}", "the request body")
        raise BadRequest(415, reason.replace(name, "the request body")) from None
    finally:
        os.unlink(name)


def histogram(labels: np.ndarray, classes: list[str]) -> dict[str, Any]:
    counts = np.bincount(labels.ravel(), minlength=len(classes))
    return {"height": int(labels.shape[0]), "width": int(labels.shape[1]),
            "classes": {name: int(counts[i]) for i, name in enumerate(classes)}}


class SegmentService:
    """One Ray Serve replica: the artifact opened once, one image per request."""

    def __init__(self, open_segmenter: Callable[[], Any], tiles: TileSettings,
                 name: str, max_pixels: int | None, max_body_bytes: int) -> None:
        # An artifact this replica cannot open is kept as a reason for ``start`` to report
        # in one line (raised here, Ray Serve would retry the replica with tracebacks).
        self.unopenable = ""
        try:
            self.predictor = Predictor(open_segmenter(), tiles)
        except IsdnetError as exc:
            self.unopenable = exc.for_cli()
            return
        except Exception as exc:
            self.unopenable = f"{type(exc).__name__}: {one_line(exc)}"
            return
        self.palette = self.predictor.contract.display_palette()
        self.classes = list(self.predictor.contract.classes)
        self.name, self.max_pixels, self.max_body_bytes = name, max_pixels, max_body_bytes
        self.scratch = tempfile.mkdtemp(prefix="isdnet-serve-")

    def problem(self) -> str:
        """Why this replica cannot serve ('' when it can)."""
        return self.unopenable

    async def __call__(self, request: Any) -> Any:
        from starlette.responses import JSONResponse, PlainTextResponse, Response

        if self.unopenable:
            return PlainTextResponse(f"cannot open the artifact: {self.unopenable}\n", 503)
        if request.url.path.rstrip("/").endswith("/health") or (
                request.method == "GET" and request.url.path.rstrip("/") == ""):
            return JSONResponse({"status": "ok", "artifact": self.name,
                                 "classes": self.classes})
        if request.method != "POST":
            return PlainTextResponse("POST an image to / (GET /health for status)\n", 405)
        try:
            image = decode_body(await request.body(), self.max_pixels, self.max_body_bytes,
                                self.scratch)
            labels = self.predictor.predict(image)
        except BadRequest as exc:
            return PlainTextResponse(one_line(exc.reason) + "\n", exc.status)
        except IsdnetError as exc:
            return PlainTextResponse(one_line(exc) + "\n", 422)
        wants_json = request.query_params.get("format") == "json" or (
            "application/json" in request.headers.get("accept", ""))
        if wants_json:
            return Response(json.dumps(histogram(labels, self.classes)),
                            media_type="application/json")
        return Response(encode_label_png(labels, self.palette), media_type="image/png")


def start(open_segmenter: Callable[[], Any], name: str, *, host: str = "127.0.0.1",
          port: int = 8000, settings: ServeSettings | None = None,
          tiles: TileSettings | None = None) -> str:
    """Deploy ``SegmentService`` on the Ray this process is connected to (``ray.init``
    first) and return its URL. ``open_segmenter`` as for ``apps.distributed``."""
    import logging

    serve = _serve()
    settings = settings or ServeSettings()
    logging.getLogger("ray.serve").setLevel(logging.WARNING)  # its INFO: each start step
    serve.start(http_options={"host": host, "port": port})
    actor_options: dict[str, Any] = {"num_cpus": settings.cpus_per_replica}
    if settings.gpus_per_replica:
        actor_options["num_gpus"] = settings.gpus_per_replica
    deployment = serve.deployment(
        SegmentService, name="SegmentService", num_replicas=settings.replicas,
        max_ongoing_requests=settings.max_ongoing_requests,
        max_queued_requests=settings.max_queued_requests, ray_actor_options=actor_options)
    app = deployment.bind(open_segmenter, tiles or TileSettings(), name,
                          settings.max_pixels, settings.max_body_bytes)
    try:
        handle = serve.run(app, name=APP_NAME, route_prefix="/")
        problem = handle.problem.remote().result(timeout_s=120)
    except Exception as exc:
        serve.shutdown()
        raise IsdnetError(f"the endpoint did not start: {one_line(exc)}") from None
    if problem:
        serve.shutdown()
        raise IsdnetError(f"the serve replica cannot open the artifact: {problem}")
    return f"http://{host}:{port}/"


def stop() -> None:
    """Remove the endpoint and Serve's own actors (the HTTP proxy, the controller)."""
    _serve().shutdown()

