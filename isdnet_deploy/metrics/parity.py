"""How closely a candidate backend (ONNX Runtime, TensorRT…) reproduces the reference.

Logits are compared numerically and labels by agreement, because FP16 engines can move
logits noticeably yet change almost no argmax decision — and the decision is what matters.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..errors import IsdnetError
from ..fileio import atomic_write_bytes
from ..profiles import IGNORE_INDEX
from .segmentation import confusion_matrix, scores

DISAGREE_COLOUR = (255, 0, 0)


def _logits(x: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 3:
        raise IsdnetError(f"{what} logits must be (C,H,W) or (1,C,H,W), got shape {x.shape}")
    return x


def _labels(x: np.ndarray, what: str) -> np.ndarray:
    """Labels as (H,W); logits are turned into labels by argmax over classes."""
    x = np.asarray(x)
    if x.ndim in (3, 4):
        return _logits(x, what).argmax(axis=0)
    if x.ndim != 2:
        raise IsdnetError(f"{what} labels must be (H,W) (or logits), got shape {x.shape}")
    return x


def logit_parity(ref_logits: np.ndarray, cand_logits: np.ndarray) -> dict[str, Any]:
    """Max and mean |difference| and cosine similarity of the flattened logits.

    Computed in float64 so the comparison itself adds no rounding. ``nonfinite`` counts
    NaN/Inf values in the candidate (an FP16 overflow shows up there first).
    """
    ref = _logits(ref_logits, "reference").astype(np.float64)
    cand = _logits(cand_logits, "candidate").astype(np.float64)
    if ref.shape != cand.shape:
        raise IsdnetError(f"reference logits {ref.shape} and candidate logits {cand.shape} "
                          "differ in shape; run both at the same input size")
    ref_flat, cand_flat = ref.ravel(), cand.ravel()
    with np.errstate(invalid="ignore", over="ignore"):  # NaN/Inf are reported, not warned
        diff = np.abs(ref - cand)
        norms = float(np.linalg.norm(ref_flat) * np.linalg.norm(cand_flat))
        if norms > 0:
            cosine = float(np.dot(ref_flat, cand_flat) / norms)
        else:
            cosine = 1.0 if not ref_flat.any() and not cand_flat.any() else 0.0
    return {
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "cosine_similarity": cosine,
        "ref_max_abs": float(np.abs(ref).max()),
        "nonfinite": int((~np.isfinite(cand)).sum()),
        "shape": list(ref.shape),
    }


def decided_agreement(ref_logits: np.ndarray, cand_labels: np.ndarray,
                      tolerance: float) -> tuple[float, int]:
    """Label agreement on *decided* pixels, those whose reference top-2 logit margin exceeds
    ``2 * tolerance`` (pixels tied within float noise may go either way), and their count.

    ``ref_logits`` is (1,)C x H x W; ``cand_labels`` is H x W labels or candidate logits.
    With no decided pixel the agreement is 1.0.
    """
    ref = _logits(ref_logits, "reference")
    top2 = np.sort(ref, axis=0)[-2:]
    decided = (top2[1] - top2[0]) > 2 * tolerance
    same = _labels(cand_labels, "candidate") == ref.argmax(axis=0)
    count = int(decided.sum())
    return (float(same[decided].mean()) if count else 1.0), count


def label_agreement(ref_labels: np.ndarray, cand_labels: np.ndarray,
                    num_classes: int) -> dict[str, Any]:
    """Fraction of pixels with the same label, and mIoU of candidate against reference.

    The mIoU treats the reference labels as ground truth over all ``num_classes`` (none
    excluded); classes that neither labelling uses are left out of the mean, and reference
    pixels equal to IGNORE_INDEX are skipped.
    """
    ref = _labels(ref_labels, "reference")
    cand = _labels(cand_labels, "candidate")
    if ref.shape != cand.shape:
        raise IsdnetError(f"reference labels {ref.shape} and candidate labels {cand.shape} "
                          "differ in shape; run both at the same input size")
    conf = confusion_matrix(cand, ref, num_classes, ignore_index=IGNORE_INDEX)
    result = scores(conf, [str(k) for k in range(num_classes)])
    total = int(conf.sum())
    agree = int(np.trace(conf))
    return {
        "agreement": agree / total if total else float("nan"),
        "disagree_pixels": total - agree,
        "pixels": total,
        "miou": result["miou"],
        "class_iou": [result["classes"][str(k)]["iou"] for k in range(num_classes)],
    }


def disagreement_heatmap(ref_labels: np.ndarray, cand_labels: np.ndarray,
                         path: str | os.PathLike[str],
                         image: np.ndarray | None = None) -> Path:
    """Write a PNG marking where candidate and reference labels differ.

    Disagreeing pixels are pure red over a dimmed grayscale copy of ``image`` (or mid
    gray). Around them a red haze scaled by local disagreement density keeps isolated
    pixels visible when a large map is viewed zoomed out.
    """
    ref = _labels(ref_labels, "reference")
    cand = _labels(cand_labels, "candidate")
    if ref.shape != cand.shape:
        raise IsdnetError(f"reference labels {ref.shape} and candidate labels {cand.shape} "
                          "differ in shape")
    h, w = ref.shape
    if image is None:
        gray = np.full((h, w), 128.0, dtype=np.float32)
    else:
        if image.shape[:2] != (h, w):
            raise IsdnetError(f"heatmap background is {image.shape[1]}x{image.shape[0]} but "
                              f"labels are {w}x{h} (WxH)")
        rgb = image if image.ndim == 3 else np.repeat(image[:, :, None], 3, axis=2)
        gray = cv2.cvtColor(rgb.astype(np.uint8), cv2.COLOR_RGB2GRAY).astype(np.float32)
        gray = 64.0 + 0.5 * gray
    canvas = np.repeat(gray[:, :, None], 3, axis=2)
    differ = ref != cand
    if differ.any():
        k = max(3, (max(h, w) // 128) | 1)
        density = cv2.blur(differ.astype(np.float32), (k, k))
        haze = 0.6 * (density / density.max())[:, :, None]
        red = np.array(DISAGREE_COLOUR, dtype=np.float32)
        canvas = (1.0 - haze) * canvas + haze * red
        canvas[differ] = red
    out = np.clip(canvas + 0.5, 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(out, cv2.COLOR_RGB2BGR))
    if not ok:
        raise IsdnetError(f"OpenCV could not encode {path}")
    return atomic_write_bytes(path, buf.tobytes())
