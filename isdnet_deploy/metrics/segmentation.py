"""Segmentation accuracy from one dataset-wide confusion matrix.

Scores are computed from a single confusion matrix summed over every image of the set
(the convention of mmsegmentation and the ISDNet paper), never averaged per image: large
images and rare classes weigh what their pixel counts say.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import IsdnetError
from ..profiles import IGNORE_INDEX

DEFINITIONS = f"""\
Accuracy definitions (isdnet-deploy)
- Confusion matrix C: one matrix for the whole dataset, summed over all images; rows are
  ground-truth classes, columns predicted classes; C[t, p] counts pixels of class t
  predicted as p. Pixels whose ground truth is the ignore index ({IGNORE_INDEX}) are left out.
- For class k: TP = C[k, k], FP = column sum - TP, FN = row sum - TP.
- IoU_k = TP / (TP + FP + FN).
- F1_k (Dice) = 2 TP / (2 TP + FP + FN).
- Precision_k = TP / (TP + FP); Recall_k (class accuracy) = TP / (TP + FN).
- A ratio whose denominator is 0 is NaN (undefined). In particular a class absent from
  both the prediction and the ground truth has IoU and F1 = NaN.
- mIoU = mean of IoU_k over the evaluated classes, leaving out NaN values (classes absent
  from both prediction and ground truth) and the excluded classes. DeepGlobe: the matrix
  covers all 7 classes, 'unknown' included, and mIoU is the mean over the other six.
- mF1 = mean of F1_k, same classes as mIoU. mAcc = mean of Recall_k, same classes.
- Pixel accuracy = trace(C) / sum(C): correctly labelled pixels over all non-ignored
  pixels, every class (excluded ones too) counted.
"""


def _check_pair(pred: np.ndarray, target: np.ndarray) -> None:
    if pred.shape != target.shape:
        raise IsdnetError(f"prediction shape {pred.shape} differs from ground-truth shape "
                          f"{target.shape}; resize the prediction to the mask size first")


def confusion_matrix(pred: np.ndarray, target: np.ndarray, num_classes: int,
                     ignore_index: int | None = IGNORE_INDEX) -> np.ndarray:
    """int64 (num_classes, num_classes) matrix, rows = target, cols = pred.

    Target pixels equal to ``ignore_index`` are skipped; any other id outside
    0..num_classes-1, in target or prediction, is an error (it means a wrong profile).
    """
    pred = np.asarray(pred)
    target = np.asarray(target)
    _check_pair(pred, target)
    if ignore_index is not None:
        keep = target != ignore_index
        pred, target = pred[keep], target[keep]
    pred = pred.ravel().astype(np.int64, copy=False)
    target = target.ravel().astype(np.int64, copy=False)
    for name, values in (("ground truth", target), ("prediction", pred)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            bad = np.unique(values[(values < 0) | (values >= num_classes)])[:10]
            raise IsdnetError(
                f"{name} holds class ids {bad.tolist()} outside 0..{num_classes - 1}; "
                "check that the dataset profile matches the labels")
    counts = np.bincount(target * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


class ConfusionAccumulator:
    """Sums the confusion matrices of a dataset's images into one."""

    def __init__(self, num_classes: int, ignore_index: int | None = IGNORE_INDEX) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
        self.images = 0

    def update(self, pred: np.ndarray, target: np.ndarray) -> np.ndarray:
        """Add one image; returns that image's own matrix (for per-image reports)."""
        conf = confusion_matrix(pred, target, self.num_classes, self.ignore_index)
        self.matrix += conf
        self.images += 1
        return conf

    def merge(self, other: ConfusionAccumulator) -> None:
        if other.num_classes != self.num_classes:
            raise IsdnetError(f"cannot merge confusion matrices of {other.num_classes} and "
                              f"{self.num_classes} classes")
        self.matrix += other.matrix
        self.images += other.images

    def scores(self, class_names: Sequence[str], exclude: Sequence[str] = ()) -> dict[str, Any]:
        return scores(self.matrix, class_names, exclude)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _nanmean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else math.nan


def scores(conf: np.ndarray, class_names: Sequence[str],
           exclude: Sequence[str] = ()) -> dict[str, Any]:
    """Per-class and mean scores from a confusion matrix; see DEFINITIONS.

    NaN marks undefined values (e.g. IoU of a class absent from prediction and ground
    truth); such classes are listed under ``absent`` and left out of the means.
    """
    conf = np.asarray(conf, dtype=np.int64)
    n = len(class_names)
    if conf.shape != (n, n):
        raise IsdnetError(f"confusion matrix is {conf.shape} but {n} class names were given")
    unknown = [name for name in exclude if name not in class_names]
    if unknown:
        raise IsdnetError(f"excluded classes {unknown} are not among {list(class_names)}")
    tp = np.diag(conf).astype(np.float64)
    support = conf.sum(axis=1)
    predicted = conf.sum(axis=0)
    fp = predicted - tp
    fn = support - tp
    iou = _ratio(tp, tp + fp + fn)
    f1 = _ratio(2 * tp, 2 * tp + fp + fn)
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    included = np.array([name not in exclude for name in class_names])
    total = int(conf.sum())
    per_class = {
        name: {"iou": float(iou[k]), "f1": float(f1[k]), "precision": float(precision[k]),
               "recall": float(recall[k]), "support": int(support[k]),
               "predicted": int(predicted[k])}
        for k, name in enumerate(class_names)
    }
    return {
        "miou": _nanmean(iou[included]),
        "mean_f1": _nanmean(f1[included]),
        "mean_accuracy": _nanmean(recall[included]),
        "pixel_accuracy": float(tp.sum() / total) if total else math.nan,
        "pixels": total,
        "classes": per_class,
        "evaluated": [c for c, inc in zip(class_names, included, strict=True) if inc],
        "excluded": [c for c in class_names if c in exclude],
        "absent": [c for k, c in enumerate(class_names) if included[k] and np.isnan(iou[k])],
    }


def jsonable(value: Any) -> Any:
    """Replace NaN and infinities by None recursively, since strict JSON has neither."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def format_scores(result: dict[str, Any]) -> str:
    """A plain-text table of a ``scores`` result, percentages with two decimals."""

    def pct(x: float) -> str:
        return "   n/a" if math.isnan(x) else f"{100 * x:6.2f}"

    width = max(len(c) for c in result["classes"]) + 2
    lines = [f"{'class':<{width}}{'IoU':>7}{'F1':>7}{'Prec':>7}{'Recall':>7}{'pixels':>12}"]
    for name, s in result["classes"].items():
        mark = " (excluded)" if name in result["excluded"] else ""
        lines.append(f"{name:<{width}} {pct(s['iou'])} {pct(s['f1'])} {pct(s['precision'])} "
                     f"{pct(s['recall'])}{s['support']:>12}{mark}")
    lines.append(f"mIoU {pct(result['miou'])}  mF1 {pct(result['mean_f1'])}  "
                 f"mAcc {pct(result['mean_accuracy'])}  aAcc {pct(result['pixel_accuracy'])}  "
                 f"over {len(result['evaluated']) - len(result['absent'])} classes")
    if result["absent"]:
        lines.append(f"absent from prediction and ground truth (left out): "
                     f"{', '.join(result['absent'])}")
    return "\n".join(lines)
