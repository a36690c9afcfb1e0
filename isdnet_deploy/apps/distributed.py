"""``infer`` beyond one machine: the same per-image work on a Ray cluster, with Ray Data.

The image paths become a Ray Data dataset, one image per block, streamed through a pool
of actors (``SegmentWorker``). Each actor opens the artifact once, then runs
``apps.infer.plan_file`` / ``segment_file`` on each image it is given: the very function
plain ``infer`` runs, so the files written are byte-identical. Workers write their outputs
themselves (atomically, temp file then rename), so OUT must be a folder every node sees
(one machine, or shared storage), and so must the inputs and the artifact.

Nothing lost, nothing done twice: a worker process that dies is restarted by Ray and its
image retried (Ray Data's actor pool sets ``max_restarts`` / ``max_task_retries``); with
``resume`` an image whose outputs are all present and whole (``outputs_complete``) is
skipped, so a rerun after an interruption does only what is missing. A bad image is a
per-file failure reported at the end; an artifact the workers cannot open stops the run
at once with the workers' reason.

Ray is an optional dependency (``pip install 'isdnet-deploy[ray]'``); nothing under
``isdnet_deploy.runtime`` imports it.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.headers import DEFAULT_MAX_PIXELS
from ..errors import IsdnetError, missing, one_line
from ..runtime.predictor import Predictor, TileSettings
from .batch import BatchReport, Failure, failure_of
from .infer import FileResult, add_notes, has_rasterio, outputs_complete, plan_file, segment_file

# Seconds to wait for a cluster address to answer before giving up with one line.
CONNECT_TIMEOUT_S = 5.0
# Object store of a local cluster started here: results are a few short strings per image
# (the workers write the label maps themselves), so a small store is plenty.
LOCAL_OBJECT_STORE_BYTES = 200 * 2**20


def require_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError:
        raise missing("ray", extra="ray", why="--ray runs infer on a Ray cluster") from None
    return ray


@dataclass
class WorkerLoad:
    """What one actor did: images segmented and the seconds spent in inference."""

    node: str
    images: int = 0
    seconds: float = 0.0
    pids: set[int] = field(default_factory=set)  # more than one: Ray restarted it


@dataclass
class RayReport(BatchReport):
    """``BatchReport`` plus where the work ran."""

    address: str = ""
    workers: dict[str, WorkerLoad] = field(default_factory=dict)  # actor id -> load

    @property
    def images_per_second(self) -> float:
        return self.done / self.wall_seconds if self.wall_seconds else 0.0

    def nodes(self) -> dict[str, int]:
        """Images segmented per node."""
        per_node: dict[str, int] = {}
        for load in self.workers.values():
            per_node[load.node] = per_node.get(load.node, 0) + load.images
        return per_node


class SegmentWorker:
    """A Ray Data actor: one opened artifact, then one image per call.

    ``open_segmenter`` is a picklable zero-argument callable returning a ``Segmenter``
    (``runtime.load`` with its options, or the CLI's ``open_artifact``).
    """

    def __init__(self, open_segmenter: Callable[[], Any], tiles: TileSettings,
                 out_dir: str, overlay_images: bool, max_pixels: int | None,
                 resume: bool) -> None:
        import ray

        # An artifact this worker cannot open is reported in the rows, not raised: Ray would
        # wrap the reason in its own tracebacks, and the driver stops the run at the first.
        self.unopenable, self.unopenable_cli = "", ""
        try:
            self.predictor = Predictor(open_segmenter(), tiles)
        except IsdnetError as exc:
            self.unopenable, self.unopenable_cli = str(exc), exc.cli or ""
        except Exception as exc:
            self.unopenable = f"{type(exc).__name__}: {one_line(exc)}"
        self.out_dir, self.overlay_images = Path(out_dir), overlay_images
        self.max_pixels, self.resume = max_pixels, resume
        self.geo = has_rasterio()
        context = ray.get_runtime_context()
        self.actor = context.get_actor_id() or f"pid{os.getpid()}"
        self.node = ray.util.get_node_ip_address() + ":" + context.get_node_id()[:8]

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        rows: dict[str, list[Any]] = {key: [] for key in (
            "path", "status", "message", "cli", "inference", "tiled", "streamed",
            "plain_geotiff", "conversions", "actor", "node", "pid")}
        for path in batch["path"]:
            row = self._segment(Path(str(path)))
            row.update(path=str(path), actor=self.actor, node=self.node, pid=os.getpid())
            for key, values in rows.items():
                values.append(row.get(key))
        return rows

    def _segment(self, path: Path) -> dict[str, Any]:
        empty = {"message": "", "cli": "", "inference": 0.0, "tiled": False,
                 "streamed": False, "plain_geotiff": False, "conversions": ""}
        if self.unopenable:
            return {**empty, "status": "unopenable", "message": self.unopenable,
                    "cli": self.unopenable_cli}
        try:
            plan = plan_file(path, self.out_dir, overlay_images=self.overlay_images,
                             max_pixels=self.max_pixels, geo=self.geo)
            if self.resume and outputs_complete(plan):
                return {**empty, "status": "skipped"}
            result = segment_file(self.predictor, plan, max_pixels=self.max_pixels)
        except Exception as exc:
            failure = failure_of(str(path), exc)
            if failure is None:
                raise
            return {**empty, "status": "failed", "message": failure.message,
                    "cli": failure.cli or ""}
        return {**empty, "status": "done", "inference": result.inference,
                "tiled": result.tiled, "streamed": result.streamed,
                "plain_geotiff": result.plain_geotiff,
                "conversions": "\n".join(result.conversions)}


def _check_reachable(address: str) -> None:
    """A ``host:port`` or ``ray://host:port`` address that does not answer is one line
    within seconds, not Ray's retries."""
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise IsdnetError(f"Ray address {address!r} is not host:port, ray://host:port or "
                          "'auto'; give the head node's address")
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        raise IsdnetError(f"the Ray cluster at {address} does not answer "
                          f"({exc.strerror or exc}); start it (ray start --head) or check the "
                          "address") from None


def connect(address: str | None, *, num_cpus: int | None = None) -> str:
    """Join the cluster at ``address`` (``auto``, ``host:port``, ``ray://host:port``), or
    start a small local one for this process when it is None. Returns what was joined.
    The caller calls ``ray.shutdown()`` when done (``infer_on_ray`` does).

    ``ray.init`` installs its own SIGTERM handler (it dumps a stack and kills the process);
    the caller's handler is put back, so SIGTERM unwinds through ``finally`` and the Ray
    started here is shut down as on Ctrl-C.
    """
    ray = require_ray()
    if ray.is_initialized():
        return "the Ray instance already initialised in this process"
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main_thread else None
    try:
        return _init(ray, address, num_cpus)
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


def _init(ray: Any, address: str | None, num_cpus: int | None) -> str:
    quiet = {"include_dashboard": False, "log_to_driver": False,
             "logging_level": "ERROR", "configure_logging": True}
    if address is None:
        ray.init(num_cpus=num_cpus, object_store_memory=LOCAL_OBJECT_STORE_BYTES, **quiet)
        return "a local Ray instance"
    if address != "auto":
        _check_reachable(address)
    try:
        ray.init(address=address, log_to_driver=False, logging_level="ERROR")
    except (ConnectionError, RuntimeError, TimeoutError, ray.exceptions.RayError) as exc:
        raise IsdnetError(f"could not join the Ray cluster at {address} ({one_line(exc)}); "
                          "start it (ray start --head) or check the address") from None
    return f"the Ray cluster at {address}"


def infer_on_ray(open_segmenter: Callable[[], Any], paths: Sequence[Path],
                 out_dir: str | os.PathLike[str], *, address: str | None = None,
                 workers: int = 2, cpus_per_worker: float = 1.0,
                 gpus_per_worker: float = 0.0, tiles: TileSettings | None = None,
                 overlay_images: bool = False, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                 resume: bool = True, report: RayReport | None = None,
                 on_result: Callable[[dict[str, Any]], None] | None = None,
                 progress: bool = False) -> RayReport:
    """Segment ``paths`` into ``out_dir`` on Ray, as ``apps.infer.infer_files`` does on
    one process; returns a ``RayReport`` (done, skipped, failures, notes, per-worker load).

    ``open_segmenter``: a picklable zero-argument callable returning a ``Segmenter``, e.g.
    ``functools.partial(isdnet_deploy.runtime.load, "/shared/model.onnx")``; it runs once
    in each of the ``workers`` actors. Paths (inputs, output folder, artifact) must be
    valid on every node. ``address`` None starts a local Ray for this call; otherwise the
    cluster is joined (``auto``, ``host:port``, ``ray://host:port``). ``on_result`` sees
    each image's result row as it arrives (path, status, actor, node, pid…).
    """
    ray = require_ray()
    report = report or RayReport()
    out = Path(out_dir).resolve()
    owned = not ray.is_initialized()
    rows = None
    try:
        report.address = connect(address, num_cpus=None if address else max(
            1, int(workers * cpus_per_worker + 0.999)))
        report.total += len(paths)
        if not paths:
            return report
        _check_capacity(ray, workers, cpus_per_worker, gpus_per_worker)
        start = time.perf_counter()
        rows = _run(ray, open_segmenter, [str(Path(p).resolve()) for p in paths], out,
                    workers=workers, cpus=cpus_per_worker, gpus=gpus_per_worker,
                    tiles=tiles or TileSettings(), overlay_images=overlay_images,
                    max_pixels=max_pixels, resume=resume, progress=progress)
        results: list[tuple[Path, FileResult]] = []
        for row in rows:
            _record(report, row, results)
            if on_result is not None:
                on_result(row)
        report.wall_seconds += time.perf_counter() - start
        add_notes(report, results, overlay_images)
    finally:
        if rows is not None:
            rows.close()  # stops the execution now: left to the garbage collector, it would
            # run after the shutdown below and start a Ray instance of its own
        if owned and ray.is_initialized():
            ray.shutdown()
    return report


def _check_capacity(ray: Any, workers: int, cpus: float, gpus: float) -> None:
    """A pool larger than the cluster would wait for resources that never come: say so
    before starting (a cluster that autoscales should be scaled up first)."""
    available = ray.cluster_resources()
    for name, each in (("CPU", cpus), ("GPU", gpus)):
        have = available.get(name, 0.0)
        if each and workers * each > have:
            fits = int(have // each)
            raise IsdnetError(
                f"{workers} workers need {workers * each:g} {name}s but the Ray cluster has "
                f"{have:g}; use {fits} workers" if fits else
                f"{workers} workers need {workers * each:g} {name}s but the Ray cluster has "
                f"{have:g}; add nodes with {name}s or reserve fewer per worker")


def _run(ray: Any, open_segmenter: Callable[[], Any], paths: list[str], out: Path, *,
         workers: int, cpus: float, gpus: float, tiles: TileSettings, overlay_images: bool,
         max_pixels: int | None, resume: bool, progress: bool) -> Any:
    """Yield one result row per image, as the actors finish them."""
    import logging

    from ray.data import DataContext

    # Ray Data logs each execution's start and end, and that bars are off; the summary says
    # what matters, and its failures arrive as exceptions.
    logging.getLogger("ray.data").setLevel(logging.CRITICAL)
    context = DataContext.get_current()
    context.enable_progress_bars = progress
    context.print_on_execution_start = False
    dataset = ray.data.from_items([{"path": p} for p in paths],
                                  override_num_blocks=len(paths))
    dataset = dataset.map_batches(
        SegmentWorker, batch_size=1, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=cpus, num_gpus=gpus or None,
        fn_constructor_kwargs={"open_segmenter": open_segmenter, "tiles": tiles,
                               "out_dir": str(out), "overlay_images": overlay_images,
                               "max_pixels": max_pixels, "resume": resume})
    yield from dataset.iter_rows()


def _record(report: RayReport, row: dict[str, Any],
            results: list[tuple[Path, FileResult]]) -> None:
    status, path = row["status"], Path(row["path"])
    if status == "unopenable":
        what = f"the Ray worker on {row['node']} cannot open the artifact, so the run stopped"
        raise IsdnetError(f"{what}: {row['message']}",
                          cli=f"{what}: {row['cli']}" if row["cli"] else None)
    if status == "failed":
        report.failures.append(Failure(str(path), row["message"], row["cli"] or None))
        return
    if status == "skipped":
        report.skipped += 1
        return
    report.done += 1
    report.tiled += bool(row["tiled"])
    report.timings.setdefault("inference", []).append(float(row["inference"]))
    conversions = [c for c in str(row["conversions"]).split("\n") if c]
    results.append((path, FileResult(float(row["inference"]), bool(row["tiled"]),
                                     bool(row["streamed"]), bool(row["plain_geotiff"]),
                                     conversions)))
    load = report.workers.setdefault(str(row["actor"]), WorkerLoad(str(row["node"])))
    load.images += 1
    load.seconds += float(row["inference"])
    load.pids.add(int(row["pid"]))
