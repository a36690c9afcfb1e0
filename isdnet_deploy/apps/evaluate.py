"""``evaluate``: artifacts on image/mask pairs, one confusion matrix per artifact."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..data.datasets import Pair, load_pair
from ..data.headers import DEFAULT_MAX_PIXELS
from ..errors import IsdnetError
from ..metrics.comparator import Comparator, Outputs, Side
from ..metrics.segmentation import ConfusionAccumulator, scores
from ..profiles import IGNORE_INDEX, Profile
from ..runtime.predictor import Predictor
from .batch import BatchReport, run_batch


@dataclass
class ArtifactResult:
    name: str
    backend: str
    accumulator: ConfusionAccumulator
    agreement_with_reference: float  # fraction of non-ignored pixels labelled as by the first

    def agreement(self) -> float:
        return self.agreement_with_reference


def evaluate_pairs(predictors: Sequence[tuple[str, Predictor]], pairs: Sequence[Pair],
                   profile: Profile, *, progress: bool = True,
                   max_pixels: int | None = DEFAULT_MAX_PIXELS
                   ) -> tuple[list[ArtifactResult], BatchReport]:
    """One confusion matrix per artifact over all pairs (ignore index 255).

    An image counts for every artifact or for none: a pair that fails to load, or that
    any artifact fails on, is recorded as a failure and left out of all matrices, so the
    artifacts are compared on the same pixels. Label agreement is measured against the
    first artifact (the reference) on non-ignored pixels, by the one comparator.
    """
    for name, predictor in predictors:
        if predictor.num_classes != profile.num_classes:
            raise IsdnetError(f"{name} has {predictor.num_classes} classes but profile "
                              f"{profile.name} has {profile.num_classes}; pick the matching "
                              "--profile")

    def side(name: str, predictor: Predictor) -> Side:
        def run(item: tuple[np.ndarray, np.ndarray]) -> Outputs:
            try:
                return Outputs(labels=predictor.predict(item[0]))
            except IsdnetError as exc:
                raise IsdnetError(f"{name}: {exc}") from None
        return name, run

    sides = [side(name, predictor) for name, predictor in predictors]
    comparator = Comparator(sides[0], sides[1:], profile.num_classes,
                            valid=lambda item: item[1] != IGNORE_INDEX)
    truth = [ConfusionAccumulator(profile.num_classes, IGNORE_INDEX) for _ in predictors]
    report = BatchReport()

    def work(pair: Pair) -> dict[str, float]:
        image, mask = load_pair(pair, profile, max_pixels)
        outputs = comparator.add((image, mask))
        if any(p.last_tiles > 1 for _, p in predictors):
            report.tiled += 1
        for accumulator, (name, _) in zip(truth, predictors, strict=True):
            accumulator.update(outputs[name].labels, mask)
        return dict(comparator.last_seconds)

    run_batch(pairs, work, label=lambda p: f"{p.image.name} / {p.label.name}",
              progress=progress, desc="evaluate", report=report)
    parity = comparator.result()
    agreement = [1.0 if comparator.count else float("nan")]
    agreement += [stats.agreement for stats in parity.candidates]
    results = [ArtifactResult(name, predictor.segmenter.backend.name, accumulator, share)
               for (name, predictor), accumulator, share in zip(predictors, truth, agreement,
                                                               strict=True)]
    return results, report


def result_scores(result: ArtifactResult, profile: Profile) -> dict[str, Any]:
    return scores(result.accumulator.matrix, profile.classes, profile.miou_excludes)
