"""Segmentation metrics and backend-parity metrics."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest

from isdnet_deploy.errors import IsdnetError
from isdnet_deploy.metrics.parity import (
    decided_agreement,
    disagreement_heatmap,
    label_agreement,
    logit_parity,
)
from isdnet_deploy.metrics.segmentation import (
    DEFINITIONS,
    ConfusionAccumulator,
    confusion_matrix,
    format_scores,
    jsonable,
    scores,
)
from isdnet_deploy.profiles import DEEPGLOBE, IGNORE_INDEX

# Worked example: 3 classes, two ignored pixels in the target's bottom-right corner.
TARGET = np.array([[0, 0, 1, 1],
                   [0, 0, 1, 1],
                   [2, 2, 2, 2],
                   [2, 2, 255, 255]], dtype=np.uint8)
PRED = np.array([[0, 1, 1, 1],
                 [0, 0, 1, 0],
                 [2, 2, 1, 2],
                 [2, 2, 2, 2]], dtype=np.uint8)
NAMES = ("a", "b", "c")


def loop_confusion(pred, target, n, ignore=IGNORE_INDEX):
    conf = [[0] * n for _ in range(n)]
    for p, t in zip(pred.ravel().tolist(), target.ravel().tolist(), strict=True):
        if t != ignore:
            conf[t][p] += 1
    return conf


def loop_iou_f1(conf):
    """Per-class IoU and F1 by explicit sums (None when undefined)."""
    n = len(conf)
    ious, f1s = [], []
    for k in range(n):
        tp = conf[k][k]
        fp = sum(conf[t][k] for t in range(n) if t != k)
        fn = sum(conf[k][p] for p in range(n) if p != k)
        ious.append(tp / (tp + fp + fn) if tp + fp + fn else None)
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None)
    return ious, f1s


def test_hand_worked_4x4():
    conf = confusion_matrix(PRED, TARGET, 3)
    # Rows = target: a -> 3 a, 1 b; b -> 1 a, 3 b; c -> 1 b, 5 c (2 pixels ignored).
    assert conf.dtype == np.int64
    assert conf.tolist() == [[3, 1, 0], [1, 3, 0], [0, 1, 5]]
    s = scores(conf, NAMES)
    # a: TP3 FP1 FN1; b: TP3 FP2 FN1; c: TP5 FP0 FN1.
    assert s["classes"]["a"]["iou"] == pytest.approx(3 / 5)
    assert s["classes"]["b"]["iou"] == pytest.approx(3 / 6)
    assert s["classes"]["c"]["iou"] == pytest.approx(5 / 6)
    assert s["miou"] == pytest.approx((3 / 5 + 3 / 6 + 5 / 6) / 3)
    assert s["classes"]["a"]["f1"] == pytest.approx(6 / 8)
    assert s["classes"]["b"]["f1"] == pytest.approx(6 / 9)
    assert s["classes"]["c"]["f1"] == pytest.approx(10 / 11)
    assert s["mean_f1"] == pytest.approx((6 / 8 + 6 / 9 + 10 / 11) / 3)
    assert s["classes"]["b"]["precision"] == pytest.approx(3 / 5)
    assert s["classes"]["c"]["recall"] == pytest.approx(5 / 6)
    assert s["mean_accuracy"] == pytest.approx((3 / 4 + 3 / 4 + 5 / 6) / 3)
    assert s["pixel_accuracy"] == pytest.approx(11 / 14)
    assert s["pixels"] == 14
    assert s["classes"]["c"]["support"] == 6 and s["classes"]["b"]["predicted"] == 5


def test_against_loop_implementation():
    rng = np.random.default_rng(3)
    n = 5
    target = rng.integers(0, n, (37, 23)).astype(np.uint8)
    target[rng.random(target.shape) < 0.1] = IGNORE_INDEX
    pred = np.where(rng.random(target.shape) < 0.6, target % n, rng.integers(0, n, target.shape))
    conf = confusion_matrix(pred, target, n)
    expected = loop_confusion(pred, target, n)
    assert conf.tolist() == expected
    ious, f1s = loop_iou_f1(expected)
    s = scores(conf, [str(k) for k in range(n)])
    for k in range(n):
        assert s["classes"][str(k)]["iou"] == pytest.approx(ious[k])
        assert s["classes"][str(k)]["f1"] == pytest.approx(f1s[k])
    assert s["miou"] == pytest.approx(sum(ious) / n)
    correct = sum(expected[k][k] for k in range(n))
    assert s["pixel_accuracy"] == pytest.approx(correct / sum(map(sum, expected)))


def test_ignore_index_pixels_do_not_count_even_with_odd_predictions():
    target = np.array([[0, 255], [1, 255]], dtype=np.uint8)
    pred = np.array([[0, 200], [1, 7]], dtype=np.uint8)  # garbage only where ignored
    conf = confusion_matrix(pred, target, 2)
    assert conf.tolist() == [[1, 0], [0, 1]]
    with pytest.raises(IsdnetError, match=r"class ids \[255\]"):
        confusion_matrix(pred, target, 2, ignore_index=None)


def test_out_of_range_ids_and_shape_mismatch_are_errors():
    with pytest.raises(IsdnetError, match=r"ground truth holds class ids \[3\]"):
        confusion_matrix(np.zeros((2, 2), int), np.array([[0, 3], [1, 1]]), 3)
    with pytest.raises(IsdnetError, match=r"prediction holds class ids \[9\]"):
        confusion_matrix(np.array([[9, 0], [0, 0]]), np.zeros((2, 2), int), 3)
    with pytest.raises(IsdnetError, match="differs from ground-truth shape"):
        confusion_matrix(np.zeros((2, 3), int), np.zeros((3, 2), int), 3)
    with pytest.raises(IsdnetError, match="not among"):
        scores(np.eye(2, dtype=np.int64), ("x", "y"), exclude=("z",))


def test_absent_class_is_nan_and_left_out_of_mean():
    target = np.array([[0, 0, 1, 1]])
    pred = np.array([[0, 1, 1, 1]])
    s = scores(confusion_matrix(pred, target, 3), NAMES)
    assert math.isnan(s["classes"]["c"]["iou"]) and math.isnan(s["classes"]["c"]["f1"])
    assert s["absent"] == ["c"]
    assert s["miou"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert jsonable(s)["classes"]["c"]["iou"] is None
    json.dumps(jsonable(s), allow_nan=False)
    assert "left out" in format_scores(s)


def test_deepglobe_miou_excludes_unknown_but_matrix_keeps_it():
    # 7 classes, one pixel per class in the target; 'unknown' (0) is predicted as urban (1).
    target = np.arange(7).reshape(1, 7)
    pred = target.copy()
    pred[0, 0] = 1
    acc = ConfusionAccumulator(DEEPGLOBE.num_classes)
    acc.update(pred, target)
    s = acc.scores(DEEPGLOBE.classes, DEEPGLOBE.miou_excludes)
    assert acc.matrix.shape == (7, 7)
    assert s["classes"]["unknown"]["iou"] == 0.0
    # Urban gets the unknown pixel as a false positive: IoU 1/2; the other five are perfect.
    assert s["classes"]["urban"]["iou"] == pytest.approx(0.5)
    assert s["miou"] == pytest.approx((0.5 + 5 * 1.0) / 6)
    assert s["excluded"] == ["unknown"] and len(s["evaluated"]) == 6
    assert s["pixel_accuracy"] == pytest.approx(6 / 7)  # every class counts here
    text = format_scores(s)
    assert "(excluded)" in text and "over 6 classes" in text


def test_accumulation_equals_one_big_matrix_not_per_image_average():
    rng = np.random.default_rng(0)
    acc = ConfusionAccumulator(4)
    preds, targets, per_image = [], [], []
    for shape in ((8, 9), (16, 5), (3, 30)):
        t = rng.integers(0, 4, shape)
        p = np.where(rng.random(shape) < 0.5, t, rng.integers(0, 4, shape))
        own = acc.update(p, t)
        per_image.append(scores(own, "wxyz")["miou"])
        preds.append(p.ravel())
        targets.append(t.ravel())
    big = confusion_matrix(np.concatenate(preds), np.concatenate(targets), 4)
    assert np.array_equal(acc.matrix, big)
    assert acc.images == 3
    assert acc.scores("wxyz")["miou"] == pytest.approx(scores(big, "wxyz")["miou"])
    # Hand example where the two conventions differ: a tiny perfect image and a large bad one.
    small = confusion_matrix(np.array([0, 1]), np.array([0, 1]), 2)
    large = confusion_matrix(np.zeros(98, int), np.r_[np.zeros(49, int), np.ones(49, int)], 2)
    pooled = scores(small + large, "ab")["miou"]  # a: 50/99, b: 1/50
    assert pooled == pytest.approx((50 / 99 + 1 / 50) / 2)
    averaged = (scores(small, "ab")["miou"] + scores(large, "ab")["miou"]) / 2
    assert abs(pooled - averaged) > 0.1
    other = ConfusionAccumulator(4)
    other.merge(acc)
    assert np.array_equal(other.matrix, acc.matrix)
    with pytest.raises(IsdnetError):
        other.merge(ConfusionAccumulator(3))


def test_definitions_state_every_metric():
    for word in ("IoU", "F1", "Dice", "Precision", "Recall", "Pixel accuracy", "mIoU", "NaN",
                 "unknown", "ignore index", str(IGNORE_INDEX), "whole dataset"):
        assert word in DEFINITIONS


def test_logit_parity_numbers():
    rng = np.random.default_rng(1)
    ref = rng.standard_normal((3, 5, 6)).astype(np.float32)
    cand = ref.copy()
    cand[1, 2, 3] += 0.25
    cand[0, 0, 0] -= 0.125
    p = logit_parity(ref[None], cand)  # (1,C,H,W) against (C,H,W)
    assert p["max_abs_diff"] == pytest.approx(0.25)
    assert p["mean_abs_diff"] == pytest.approx(0.375 / ref.size)
    r, c = ref.astype(float).ravel().tolist(), cand.astype(float).ravel().tolist()
    dot = sum(a * b for a, b in zip(r, c, strict=True))
    cos = dot / math.sqrt(sum(a * a for a in r) * sum(b * b for b in c))
    assert p["cosine_similarity"] == pytest.approx(cos, abs=1e-12)
    assert p["nonfinite"] == 0
    identical = logit_parity(ref, ref)
    assert identical["max_abs_diff"] == 0.0 and identical["cosine_similarity"] == pytest.approx(1)
    cand[2, 0, 0] = np.inf
    assert logit_parity(ref, cand)["nonfinite"] == 1
    with pytest.raises(IsdnetError, match="differ in shape"):
        logit_parity(ref, ref[:, :4])
    with pytest.raises(IsdnetError, match=r"\(C,H,W\)"):
        logit_parity(ref[0], ref[0])


def test_label_agreement():
    ref = np.array([[0, 0, 1, 1], [2, 2, 2, 2]])
    cand = np.array([[0, 1, 1, 1], [2, 2, 2, 0]])
    a = label_agreement(ref, cand, 3)
    assert a["agreement"] == pytest.approx(6 / 8)
    assert a["disagree_pixels"] == 2 and a["pixels"] == 8
    # Class 0: TP1 FP1 FN1 -> 1/3; class 1: TP2 FP1 -> 2/3; class 2: TP3 FN1 -> 3/4.
    assert a["class_iou"] == pytest.approx([1 / 3, 2 / 3, 3 / 4])
    assert a["miou"] == pytest.approx((1 / 3 + 2 / 3 + 3 / 4) / 3)
    # Logits are accepted and turned into labels by argmax.
    logits = np.eye(3)[ref].transpose(2, 0, 1)[None]
    assert label_agreement(logits, cand, 3)["agreement"] == pytest.approx(6 / 8)


def test_disagreement_heatmap(tmp_path):
    ref = np.zeros((64, 80), np.uint8)
    cand = ref.copy()
    cand[10, 20] = 1
    cand[50:52, 60:70] = 2
    image = np.full((64, 80, 3), 200, np.uint8)
    out = disagreement_heatmap(ref, cand, tmp_path / "diff.png", image=image)
    png = cv2.cvtColor(cv2.imread(str(out)), cv2.COLOR_BGR2RGB)
    assert png.shape == (64, 80, 3)
    assert (png[cand != ref] == (255, 0, 0)).all()
    far = png[30, 5]
    assert far[0] == far[1] == far[2]  # untouched area stays gray
    assert png[10, 21, 0] > png[10, 21, 1]  # the haze reddens the neighbourhood
    assert sorted(p.name for p in tmp_path.iterdir()) == ["diff.png"]
    plain = disagreement_heatmap(ref, ref, tmp_path / "same.png")
    same = cv2.imread(str(plain))
    assert (same == same[0, 0]).all()
    with pytest.raises(IsdnetError, match="background"):
        disagreement_heatmap(ref, cand, tmp_path / "bad.png", image=image[:10])
    assert not (tmp_path / "bad.png").exists()


def test_decided_agreement_ignores_pixels_tied_within_tolerance():
    ref = np.zeros((1, 2, 1, 3), np.float32)
    ref[0, :, 0, 0] = (0.0, 1.0)     # decided for class 1
    ref[0, :, 0, 1] = (0.0, 0.001)   # tied within 2 * 0.01
    ref[0, :, 0, 2] = (2.0, 0.0)     # decided for class 0
    agreement, count = decided_agreement(ref, np.array([[1, 0, 0]]), tolerance=0.01)
    assert (agreement, count) == (1.0, 2)  # the tied pixel may go either way
    agreement, count = decided_agreement(ref, np.array([[1, 1, 1]]), tolerance=0.01)
    assert (agreement, count) == (0.5, 2)
    # Candidate logits are accepted too, and no decided pixel means full agreement.
    assert decided_agreement(ref, ref, tolerance=10.0) == (1.0, 0)
