"""``isdnet-deploy evaluate``: one confusion matrix per artifact, parity, bad pairs."""

from __future__ import annotations

import json
import math
import shutil

import cv2
import numpy as np
import pytest

from isdnet_deploy import runtime
from isdnet_deploy.data.images import read_image
from isdnet_deploy.data.samples import generate_sample_set
from isdnet_deploy.metrics.segmentation import DEFINITIONS
from isdnet_deploy.profiles import DEEPGLOBE


@pytest.fixture(scope="module")
def sample_set(tmp_path_factory):
    """Three 160x160 DeepGlobe pairs in the dataset's one-folder layout."""
    folder = tmp_path_factory.mktemp("deepglobe")
    generate_sample_set(folder, "deepglobe", count=3, size=(160, 160))
    return folder


@pytest.fixture
def fresh_set(sample_set, tmp_path):
    folder = tmp_path / "set"
    shutil.copytree(sample_set, folder)
    return folder


@pytest.fixture
def reference_is_fixture_model(model, monkeypatch):
    """'reference' builds ISDNet(seed 0) like the session model; reuse it (12 s saved)."""
    monkeypatch.setattr("isdnet_deploy.model.checkpoint.build_model",
                        lambda num_classes=7, seed=0: model)


def strict_json(path):
    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_reference_and_onnx_give_the_same_metrics(cli, onnx_model, sample_set, tmp_path,
                                                  reference_is_fixture_model):
    out = tmp_path / "eval.json"
    result = cli("evaluate", "reference", onnx_model, "--images", sample_set, "--json", out,
                 "--no-progress")
    assert result.exit_code == 0, result.output
    assert "Accuracy parity" in result.output
    assert "average the 6 classes other than unknown (7 in the matrix)" in result.output
    report = strict_json(out)
    assert report["definitions"] == DEFINITIONS
    assert report["images_evaluated"] == 3 and report["failures"] == []
    ref, onnx = report["artifacts"]
    assert (ref["backend"], onnx["backend"]) == ("torch", "onnxruntime")
    assert onnx["agreement_with_reference"] > 0.999
    for key in ("miou", "mean_f1", "pixel_accuracy"):
        assert abs(onnx["delta_to_reference"][key]) < 1e-3
        assert math.isclose(onnx["scores"][key] - ref["scores"][key],
                            onnx["delta_to_reference"][key], abs_tol=1e-12)
    assert np.array(ref["confusion_matrix"]).sum() == 3 * 160 * 160


def independent_scores(images, onnx_model):
    """IoU/F1/pixel accuracy straight from the written colour masks, without the toolkit's
    mask decoding or metrics."""
    colour_to_id = {tuple(c): k for k, c in enumerate(DEEPGLOBE.palette)}
    segmenter = runtime.load(onnx_model)
    inter, union, tp2, denom_f1 = np.zeros(7), np.zeros(7), np.zeros(7), np.zeros(7)
    correct = total = 0
    for image_path in images:
        mask_path = image_path.with_name(image_path.name.replace("_sat.jpg", "_mask.png"))
        rgb = cv2.cvtColor(cv2.imread(str(mask_path)), cv2.COLOR_BGR2RGB)
        truth = np.vectorize(lambda r, g, b: colour_to_id[(r, g, b)])(
            rgb[..., 0], rgb[..., 1], rgb[..., 2])
        pred = segmenter.predict(read_image(image_path))
        for k in range(7):
            p, t = pred == k, truth == k
            inter[k] += (p & t).sum()
            union[k] += (p | t).sum()
            tp2[k] += 2 * (p & t).sum()
            denom_f1[k] += p.sum() + t.sum()
        correct += (pred == truth).sum()
        total += truth.size
    with np.errstate(invalid="ignore"):
        iou, f1 = inter / union, tp2 / denom_f1
    return iou, f1, correct / total


def test_metrics_equal_an_independent_computation(cli, onnx_model, sample_set, tmp_path):
    out = tmp_path / "eval.json"
    result = cli("evaluate", onnx_model, "--images", sample_set, "--json", out, "--no-progress")
    assert result.exit_code == 0, result.output
    scores = strict_json(out)["artifacts"][0]["scores"]
    iou, f1, accuracy = independent_scores(sorted(sample_set.glob("*_sat.jpg")), onnx_model)
    for k, name in enumerate(DEEPGLOBE.classes):
        got_iou, got_f1 = scores["classes"][name]["iou"], scores["classes"][name]["f1"]
        if np.isnan(iou[k]):
            assert got_iou is None
        else:
            assert got_iou == pytest.approx(iou[k], abs=1e-12)
            assert got_f1 == pytest.approx(f1[k], abs=1e-12)
    kept = iou[1:][~np.isnan(iou[1:])]  # 'unknown' left out of the DeepGlobe mean
    assert scores["miou"] == pytest.approx(kept.mean(), abs=1e-12)
    assert scores["pixel_accuracy"] == pytest.approx(accuracy, abs=1e-12)
    assert f"{100 * kept.mean():.2f}" in result.output


def test_bad_pairs_are_listed_and_the_rest_evaluated(cli, onnx_model, fresh_set, tmp_path):
    mask = cv2.imread(str(fresh_set / "synth000_mask.png"))
    mask[:5, :5] = (0, 0, 255)  # BGR red: the one 0/255 colour DeepGlobe does not use
    cv2.imwrite(str(fresh_set / "synth000_mask.png"), mask)
    small = cv2.imread(str(fresh_set / "synth001_mask.png"))[:100]
    cv2.imwrite(str(fresh_set / "synth001_mask.png"), small)
    (fresh_set / "synth002_sat.jpg").write_bytes(b"garbage")
    generate_sample_set(tmp_path / "more", "deepglobe", count=1, size=(160, 160), seed=5)
    for path in (tmp_path / "more").iterdir():
        shutil.copy(path, fresh_set / path.name.replace("synth000", "synth100"))
    out = tmp_path / "eval.json"
    result = cli("evaluate", onnx_model, "--images", fresh_set, "--json", out,
                 "--no-progress")
    assert result.exit_code == 1
    assert "3 of 4 image/mask pairs failed" in result.stderr
    lines = result.stderr.splitlines()
    for name, message in (("synth000_mask.png", "not in the deepglobe palette"),
                          ("synth001_mask.png", "must match pixel for pixel"),
                          ("synth002_sat.jpg", "cannot decode")):
        assert any(name in line and message in line for line in lines), name
    report = strict_json(out)
    assert report["images_evaluated"] == 1 and len(report["failures"]) == 3
    assert np.array(report["artifacts"][0]["confusion_matrix"]).sum() == 160 * 160


def test_unpaired_files_are_listed(cli, onnx_model, fresh_set, tmp_path):
    shutil.copy(fresh_set / "synth000_sat.jpg", fresh_set / "lonely_sat.jpg")
    shutil.copy(fresh_set / "synth000_mask.png", fresh_set / "orphan_mask.png")
    out = tmp_path / "eval.json"
    result = cli("evaluate", onnx_model, "--images", fresh_set, "--json", out,
                 "--no-progress")
    assert result.exit_code == 0, result.output
    assert "lonely_sat.jpg" in result.stderr and "orphan_mask.png" in result.stderr
    report = strict_json(out)
    assert [p.rsplit("/", 1)[-1] for p in report["unpaired_images"]] == ["lonely_sat.jpg"]
    assert [p.rsplit("/", 1)[-1] for p in report["unpaired_masks"]] == ["orphan_mask.png"]
    assert report["images_evaluated"] == 3


def test_empty_folders_fail_in_one_line(cli, onnx_model, sample_set, tmp_path):
    (tmp_path / "empty").mkdir()
    result = cli("evaluate", onnx_model, "--images", tmp_path / "empty")
    assert result.exit_code == 1
    assert "no images" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(sample_set / "synth000_sat.jpg", images)
    result = cli("evaluate", onnx_model, "--images", images, "--labels", tmp_path / "empty")
    assert result.exit_code == 1 and "no masks" in result.stderr


def test_profile_must_match_the_artifact(cli, onnx_model, sample_set):
    result = cli("evaluate", onnx_model, "--images", sample_set, "--profile", "inria")
    assert result.exit_code == 1
    assert "exported for profile deepglobe" in result.stderr
