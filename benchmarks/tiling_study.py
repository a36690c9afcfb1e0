"""How much does tiled inference change ISDNet's output compared with one whole-image pass?

    python benchmarks/tiling_study.py --size 1024 --count 2 --tiles 256,384,512 \
        --overlaps 0.25,0.5 --windows hann,uniform

Runs on generated DeepGlobe-like images (data.samples) through an ONNX export of the model
(random weights unless --checkpoint is given) on ONNX Runtime CPU. Images are fed at their
own size (no test scale), so the tile sizes are exactly what the network sees. For each
tile size, overlap and blending window it reports, pooled over the images: label
agreement with whole-image inference, the mean IoU of the tiled labels against the
whole-image labels, the max and mean |logit difference|, the tile count and the time.

A random-weights model has a receptive field and context use unlike a trained one, so
the numbers show the mechanism (borders and lost global context), not the accuracy cost
on real data; rerun with --checkpoint and real images for that.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from isdnet_deploy import runtime
from isdnet_deploy.data.images import read_image
from isdnet_deploy.data.samples import generate_sample_set
from isdnet_deploy.metrics.parity import label_agreement, logit_parity
from isdnet_deploy.runtime.predictor import Predictor
from isdnet_deploy.runtime.tiling import plan_tiles, tiled_logits


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def export_model(path: Path, checkpoint: str | None) -> None:
    from isdnet_deploy.export.onnx_export import export_onnx
    from isdnet_deploy.model.checkpoint import build_model, load_model

    model = load_model(checkpoint) if checkpoint else build_model()
    export_onnx(model, path, verify_size=(96, 128))


def study(onnx_path: Path, images: list[np.ndarray], tiles: list[int], overlaps: list[float],
          windows: list[str]) -> tuple[list[dict], float]:
    """Rows of the table, and the mean |logit| of whole-image inference for scale."""
    segmenter = runtime.load(onnx_path, scale=False)
    predictor = Predictor(segmenter)
    classes = segmenter.contract.num_classes
    whole = []
    start = time.perf_counter()
    for image in images:
        whole.append(predictor.tile_scores(image))
    whole_seconds = (time.perf_counter() - start) / len(images)
    rows = [{"tile": "whole", "overlap": "-", "window": "-", "tiles": 1, "agreement": 1.0,
             "miou": 1.0, "max_abs_diff": 0.0, "mean_abs_diff": 0.0,
             "seconds": whole_seconds}]
    for tile in tiles:
        for overlap in overlaps:
            for window in windows:
                agree = total = 0
                max_diff, mean_diffs, mious, seconds = 0.0, [], [], 0.0
                for image, reference in zip(images, whole, strict=True):
                    start = time.perf_counter()
                    logits = tiled_logits(image, predictor.tile_scores, (tile, tile), overlap,
                                          num_classes=classes, window=window)
                    seconds += time.perf_counter() - start
                    labels = label_agreement(reference.argmax(0), logits.argmax(0), classes)
                    agree += labels["pixels"] - labels["disagree_pixels"]
                    total += labels["pixels"]
                    mious.append(labels["miou"])
                    diff = logit_parity(reference, logits)
                    max_diff = max(max_diff, diff["max_abs_diff"])
                    mean_diffs.append(diff["mean_abs_diff"])
                count = len(plan_tiles(*images[0].shape[:2], (tile, tile), overlap))
                rows.append({"tile": tile, "overlap": overlap, "window": window,
                             "tiles": count, "agreement": agree / total,
                             "miou": float(np.mean(mious)), "max_abs_diff": max_diff,
                             "mean_abs_diff": float(np.mean(mean_diffs)),
                             "seconds": seconds / len(images)})
    segmenter.close()
    return rows, float(np.mean([np.abs(w).mean() for w in whole]))


def format_rows(rows: list[dict], size: int, count: int, logit_scale: float) -> str:
    lines = [f"Tiled vs whole-image inference, {count} generated DeepGlobe image(s) of "
             f"{size}x{size}, ONNX Runtime CPU (whole-image logits: mean |logit| "
             f"{logit_scale:.2f})",
             f"{'tile':>6} {'overlap':>7} {'window':>8} {'tiles':>5} {'agree %':>9} "
             f"{'mIoU %':>8} {'max|dlogit|':>11} {'mean|dlogit|':>12} {'s/image':>8}"]
    for r in rows:
        overlap = r["overlap"] if isinstance(r["overlap"], str) else f"{r['overlap']:.2f}"
        lines.append(f"{r['tile']!s:>6} {overlap:>7} {r['window']:>8} {r['tiles']:>5} "
                     f"{100 * r['agreement']:>9.3f} {100 * r['miou']:>8.2f} "
                     f"{r['max_abs_diff']:>11.4f} {r['mean_abs_diff']:>12.5f} "
                     f"{r['seconds']:>8.2f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024, help="square image side")
    parser.add_argument("--count", type=int, default=2, help="number of images")
    parser.add_argument("--tiles", type=_ints, default=[256, 384, 512])
    parser.add_argument("--overlaps", type=_floats, default=[0.25, 0.5])
    parser.add_argument("--windows", default="hann,uniform")
    parser.add_argument("--onnx", default=None, help="exported model (else one is exported)")
    parser.add_argument("--checkpoint", default=None, help="official .pth for the export")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the rows here")
    args = parser.parse_args()
    windows = [w.strip() for w in args.windows.split(",") if w.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(args.onnx) if args.onnx else Path(tmp) / "isdnet.onnx"
        if not args.onnx:
            export_model(onnx_path, args.checkpoint)
        written = generate_sample_set(Path(tmp) / "samples", "deepglobe", count=args.count,
                                      size=(args.size, args.size), seed=args.seed)
        images = [read_image(p) for p in written[::2]]
        rows, logit_scale = study(onnx_path, images, args.tiles, args.overlaps, windows)
    print(format_rows(rows, args.size, args.count, logit_scale))
    if args.json:
        Path(args.json).write_text(json.dumps({"size": args.size, "count": args.count,
                                               "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
