"""Peak memory of `isdnet-deploy infer` on gigapixel GeoTIFFs, streamed window by window.

    python benchmarks/geotiff_memory.py --sizes 8000,16000,32000 --work /tmp/geotiff-memory

Writes synthetic RGB GeoTIFFs of each size (square, tiled 512x512, JPEG-compressed,
georeferenced; generated window by window, so a 32000x32000 image never exists in
memory), then runs `isdnet-deploy infer` on each in a fresh process with a pixel budget
below the image (`--max-pixels`, default 1 MP), so that it streams, and reads the
process's peak resident memory (VmHWM: sampled while it runs, and wait4's ru_maxrss) and
its wall time. `--time-limit S` stops a run after S seconds (SIGTERM) and reports the
peak up to then. With `--in-memory SIZE` it also runs one size with the default budget,
i.e. decoded whole, for contrast. The model is an ONNX export with random weights
(memory does not depend on the weights) unless `--model` names one. Results: a table on
stdout and JSON (`--json`).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from isdnet_deploy.data.samples import photo_like

BLOCK = 512
MIB = 1 << 20


def generate(path: Path, size: int, seed: int = 0) -> Path:
    """A size x size RGB GeoTIFF written one band of 512 rows at a time."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    if path.exists():
        return path
    texture = photo_like(2 * BLOCK, 2 * BLOCK, seed=seed)
    rng = np.random.default_rng(seed)
    partial = path.with_suffix(".partial.tif")
    with rasterio.Env(GDAL_CACHEMAX=64), rasterio.open(
            partial, "w", driver="GTiff", width=size, height=size, count=3, dtype="uint8",
            crs="EPSG:32631", transform=from_origin(500000.0, 4650000.0, 0.5, 0.5),
            tiled=True, blockxsize=BLOCK, blockysize=BLOCK, compress="jpeg",
            photometric="ycbcr", jpeg_quality=90, BIGTIFF="IF_SAFER") as dst:
        for top in range(0, size, BLOCK):
            rows = min(BLOCK, size - top)
            band = np.empty((rows, size, 3), np.uint8)
            for left in range(0, size, BLOCK):
                dy, dx = rng.integers(0, BLOCK, 2)
                cols = min(BLOCK, size - left)
                band[:, left:left + cols] = texture[dy:dy + rows, dx:dx + cols]
            dst.write(band.transpose(2, 0, 1), window=Window(0, top, size, rows))
    partial.replace(path)
    return path


def _vmhwm_mib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 0


def measure(command: list[str], folder: Path, time_limit: float | None = None) -> dict:
    """Run ``command`` in a fresh process: exit status, wall seconds and peak resident
    memory in MiB (VmHWM: sampled every second while it runs, and its ru_maxrss from
    wait4 at the end). Past ``time_limit`` seconds it is sent SIGTERM (the CLI removes its
    temporary files) and reported as stopped."""
    start = time.perf_counter()
    with open(folder / "stdout.txt", "w") as out, open(folder / "stderr.txt", "w") as err:
        process = subprocess.Popen(command, stdout=out, stderr=err)
        peak, stopped = 0, False
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            peak = max(peak, _vmhwm_mib(process.pid))
            if time_limit and not stopped and time.perf_counter() - start > time_limit:
                process.send_signal(signal.SIGTERM)
                stopped = True
            time.sleep(1.0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return {"returncode": process.returncode, "stopped": stopped,
            "peak_mib": max(peak, usage.ru_maxrss // 1024),
            "seconds": round(time.perf_counter() - start, 1),
            "stderr": (folder / "stderr.txt").read_text()[-2000:]}


def export_model(path: Path) -> Path:
    if not path.exists():
        subprocess.run([sys.executable, "-m", "isdnet_deploy", "export", "-o", str(path),
                        "--no-progress"], check=True, capture_output=True)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="8000,16000,32000")
    parser.add_argument("--work", type=Path, default=Path("geotiff-memory"))
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--max-pixels", type=int, default=1_000_000,
                        help="Budget given to infer, below every size so that all stream.")
    parser.add_argument("--in-memory", type=int, default=None,
                        help="Also run this size with the default budget (decoded whole).")
    parser.add_argument("--time-limit", type=float, default=None,
                        help="Stop each run after this many seconds (memory is reported up "
                             "to then; on 2 shared cores 32000x32000 takes hours).")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    args.work.mkdir(parents=True, exist_ok=True)
    model = args.model or export_model(args.work / "model.onnx")
    runs = [(int(s), True) for s in args.sizes.split(",") if s.strip()]
    if args.in_memory:
        runs.append((args.in_memory, False))
    rows = []
    for size, streamed in runs:
        image = generate(args.work / f"synthetic_{size}.tif", size)
        out = args.work / f"out_{size}_{'stream' if streamed else 'whole'}"
        out.mkdir(exist_ok=True)
        command = [sys.executable, "-m", "isdnet_deploy", "infer", str(model), str(image),
                   "-o", str(out), "--no-progress"]
        if streamed:
            command += ["--max-pixels", str(args.max_pixels)]
        result = measure(command, out, args.time_limit)
        row = {"size": size, "mode": "streamed" if streamed else "whole image",
               "file_mib": round(image.stat().st_size / MIB), **result}
        rows.append(row)
        ending = "stopped at the time limit" if row["stopped"] else f"exit {row['returncode']}"
        print(f"{size}x{size} {row['mode']}: {ending}, peak {row['peak_mib']} MiB, "
              f"{row['seconds']} s", flush=True)
        if row["returncode"] and not row["stopped"]:
            print(row["stderr"], file=sys.stderr)
    print("\n| image | mode | file | peak resident memory | wall time |")
    print("|---|---|---:|---:|---:|")
    for row in rows:
        wall = f"{row['seconds']:.0f} s" + (" (stopped)" if row["stopped"] else "")
        print(f"| {row['size']}x{row['size']} | {row['mode']} | {row['file_mib']} MiB | "
              f"{row['peak_mib']} MiB | {wall} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
