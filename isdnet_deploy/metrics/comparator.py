"""The one comparison path: a reference and candidates run on the same inputs, judged alike.

Export verification (PyTorch vs the exported file on each ONNX consumer), precision
verification (FP32 vs FP16/INT8), ``isdnet-deploy compare`` and ``evaluate`` all go through
``Comparator``; as in Polygraphy's comparator it knows nothing about backends. A *side* is
a name and a callable that turns one input item into ``Outputs`` (labels, and the raw
logits when the side has them); callers build sides from whatever they run (a runtime
``Segmenter``, a backend on prepared feeds, the PyTorch model).

Figures per candidate: max/mean |logit difference| and the smallest cosine similarity
(where both sides give logits of the same shape), NaN/Inf count, the confusion matrix of
its labels against the reference's (argmax agreement, mIoU), agreement on *decided* pixels
when a tolerance is given (pixels whose reference top-2 margin exceeds twice the tolerance;
near-ties may go either way), the input on which it disagreed most, and time per call.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import IsdnetError
from .parity import decided_agreement, logit_parity
from .segmentation import scores


@dataclass
class Outputs:
    """What one side gave for one input: HxW labels, and 1xCxhxw logits if it has them."""

    labels: np.ndarray
    logits: np.ndarray | None = None


Side = tuple[str, Callable[[Any], Outputs]]
Tolerance = Callable[[Outputs], float]


def median_ms(seconds: Sequence[float]) -> float:
    return 1000.0 * statistics.median(seconds) if seconds else math.nan


@dataclass
class ParityStats:
    """Running figures of one candidate against the reference."""

    name: str
    num_classes: int
    confusion: np.ndarray = field(init=False)
    max_abs_diff: float | None = None
    sum_abs_diff: float = 0.0
    values: int = 0
    min_cosine: float | None = None
    reference_max_abs: float = 0.0
    nonfinite: int = 0
    decided_same: int = 0
    decided_pixels: int = 0
    worst_index: int | None = None
    worst_disagree: int = -1
    seconds: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.confusion = np.zeros((self.num_classes, self.num_classes), np.int64)

    def check(self, ref: Outputs, cand: Outputs) -> None:
        """Refuse outputs that cannot be compared, before any figure changes."""
        if ref.labels.shape != cand.labels.shape:
            raise IsdnetError(f"{self.name} gives labels of shape {cand.labels.shape}, the "
                              f"reference {ref.labels.shape}; compare at the same size and test "
                              "scale")
        if ref.logits is not None and cand.logits is not None and (
                np.shape(ref.logits) != np.shape(cand.logits)):
            raise IsdnetError(f"{self.name} gives logits of shape {np.shape(cand.logits)}, the "
                              f"reference {np.shape(ref.logits)}; compare at the same size and "
                              "test scale")
        for what, labels in (("the reference", ref.labels), (self.name, cand.labels)):
            if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
                raise IsdnetError(f"{what} gave class id {int(labels.max())} outside "
                                  f"0..{self.num_classes - 1}; compare artifacts of the same "
                                  "model and profile")

    def add(self, index: int, ref: Outputs, cand: Outputs, tolerance: float | None,
            valid: np.ndarray | None) -> None:
        """Add one input's outputs (already passed ``check``)."""
        if ref.logits is not None and cand.logits is not None:
            self._add_logits(ref.logits, cand.logits)
        ref_labels, cand_labels = ref.labels, cand.labels
        if valid is not None:
            ref_labels, cand_labels = ref_labels[valid], cand_labels[valid]
        n = self.num_classes
        ids = ref_labels.ravel().astype(np.int64) * n + cand_labels.ravel().astype(np.int64)
        conf = np.bincount(ids, minlength=n * n).reshape(n, n)
        self.confusion += conf
        disagree = int(conf.sum() - np.trace(conf))
        if disagree > self.worst_disagree:
            self.worst_index, self.worst_disagree = index, disagree
        # Decided pixels are judged where the reference's logits are: on the candidate's
        # logits when it has them (labels may be resized back to the image's own size).
        decided_on = cand.logits if cand.logits is not None else cand.labels
        if (tolerance is not None and ref.logits is not None and valid is None
                and np.shape(decided_on)[-2:] == np.shape(ref.logits)[-2:]):
            agreement, count = decided_agreement(ref.logits, decided_on, tolerance)
            self.decided_pixels += count
            self.decided_same += round(agreement * count)

    def _add_logits(self, ref: np.ndarray, cand: np.ndarray) -> None:
        parity = logit_parity(ref, cand)
        count = int(np.size(cand))
        self.nonfinite += parity["nonfinite"]
        diff = parity["max_abs_diff"]
        self.max_abs_diff = diff if self.max_abs_diff is None or math.isnan(diff) else max(
            self.max_abs_diff, diff)
        self.sum_abs_diff += parity["mean_abs_diff"] * count
        self.values += count
        cosine = parity["cosine_similarity"]
        self.min_cosine = cosine if self.min_cosine is None else min(self.min_cosine, cosine)
        self.reference_max_abs = max(self.reference_max_abs, parity["ref_max_abs"])

    @property
    def pixels(self) -> int:
        return int(self.confusion.sum())

    @property
    def agreement(self) -> float:
        """Fraction of (valid) pixels whose label equals the reference's."""
        return float(np.trace(self.confusion)) / self.pixels if self.pixels else math.nan

    @property
    def decided_agreement(self) -> float:
        """Agreement on decided pixels; 1.0 when no pixel was decided (or no tolerance)."""
        return self.decided_same / self.decided_pixels if self.decided_pixels else 1.0

    @property
    def mean_abs_diff(self) -> float | None:
        return self.sum_abs_diff / self.values if self.values else None

    def miou_vs_reference(self) -> float:
        """mIoU of the candidate's labels, the reference's taken as ground truth (classes
        neither uses are left out)."""
        return scores(self.confusion, [str(k) for k in range(self.num_classes)])["miou"]

    def to_dict(self) -> dict[str, Any]:
        result = scores(self.confusion, [str(k) for k in range(self.num_classes)])
        logits = None
        if self.values:
            logits = {"max_abs_diff": self.max_abs_diff, "mean_abs_diff": self.mean_abs_diff,
                      "min_cosine_similarity": self.min_cosine, "nonfinite": self.nonfinite,
                      "reference_max_abs": self.reference_max_abs}
        return {"name": self.name, "logits": logits, "agreement": self.agreement,
                "disagree_pixels": self.pixels - int(np.trace(self.confusion)),
                "pixels": self.pixels, "miou_vs_reference": result["miou"],
                "class_iou_vs_reference": [result["classes"][str(k)]["iou"]
                                           for k in range(self.num_classes)],
                "decided_agreement": self.decided_agreement if self.decided_pixels else None,
                "decided_pixels": self.decided_pixels, "median_ms": median_ms(self.seconds)}


@dataclass
class ParityResult:
    reference: str
    inputs: int
    reference_seconds: list[float]
    candidates: list[ParityStats]

    def __getitem__(self, name: str) -> ParityStats:
        for stats in self.candidates:
            if stats.name == name:
                return stats
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {"reference": self.reference, "inputs": self.inputs,
                "reference_median_ms": median_ms(self.reference_seconds),
                "candidates": [c.to_dict() for c in self.candidates]}


class Comparator:
    """Runs a reference and candidates on inputs one at a time and keeps their figures.

    ``add`` runs every side before any figure changes, so an input that one side fails on
    (its error propagates) counts for none of them and all are judged on the same inputs.
    ``valid(item)`` may give a boolean HxW mask of the pixels to count (e.g. not ignored in
    the ground truth); ``tolerance(reference_outputs)`` enables decided-pixel agreement.
    """

    def __init__(self, reference: Side, candidates: Sequence[Side], num_classes: int, *,
                 tolerance: Tolerance | None = None,
                 valid: Callable[[Any], np.ndarray | None] | None = None) -> None:
        names = [reference[0], *(name for name, _ in candidates)]
        if len(set(names)) != len(names):
            raise IsdnetError(f"sides to compare need distinct names, got {names}")
        self.reference = reference
        self.candidates = list(candidates)
        self.tolerance = tolerance
        self.valid = valid
        self.stats = [ParityStats(name, num_classes) for name, _ in candidates]
        self.reference_seconds: list[float] = []
        self.last_seconds: dict[str, float] = {}
        self.count = 0

    def add(self, item: Any) -> dict[str, Outputs]:
        """Run every side on ``item`` and add the figures; returns the outputs by name."""
        outputs: dict[str, Outputs] = {}
        seconds: dict[str, float] = {}
        for name, run in [self.reference, *self.candidates]:
            start = time.perf_counter()
            outputs[name] = run(item)
            seconds[name] = time.perf_counter() - start
        ref = outputs[self.reference[0]]
        for stats in self.stats:
            stats.check(ref, outputs[stats.name])
        tolerance = self.tolerance(ref) if self.tolerance is not None else None
        valid = self.valid(item) if self.valid is not None else None
        for stats in self.stats:
            stats.add(self.count, ref, outputs[stats.name], tolerance, valid)
            stats.seconds.append(seconds[stats.name])
        self.reference_seconds.append(seconds[self.reference[0]])
        self.last_seconds = seconds
        self.count += 1
        return outputs

    def result(self) -> ParityResult:
        return ParityResult(self.reference[0], self.count, list(self.reference_seconds),
                            self.stats)


def compare(reference: Side, candidates: Sequence[Side], inputs: Iterable[Any],
            num_classes: int, **options: Any) -> ParityResult:
    """Every input through the reference and each candidate; see ``Comparator``."""
    comparator = Comparator(reference, candidates, num_classes, **options)
    for item in inputs:
        comparator.add(item)
    return comparator.result()


def relative_tolerance(atol: float, rtol: float) -> Tolerance:
    """``atol + rtol * max|reference logit|``: float32 itself differs from float64 by about
    1e-5 of the largest logit in this network, so a bare absolute bound would reject
    correct artifacts of models with large logits."""
    def tolerance(ref: Outputs) -> float:
        scale = float(np.abs(ref.logits).max()) if ref.logits is not None else 0.0
        return atol + rtol * scale
    return tolerance
