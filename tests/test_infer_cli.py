"""``isdnet-deploy infer`` and the batch/tiling logic behind it (apps.infer, runtime.predictor)."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from isdnet_deploy import runtime
from isdnet_deploy.apps.infer import is_geotiff
from isdnet_deploy.contract import Contract, TensorSpec
from isdnet_deploy.data.images import read_image, read_label_png, read_palette
from isdnet_deploy.data.samples import generate_sample_set
from isdnet_deploy.errors import IsdnetError
from isdnet_deploy.metrics.parity import label_agreement
from isdnet_deploy.profiles import DEEPGLOBE
from isdnet_deploy.runtime.backend import Backend
from isdnet_deploy.runtime.predictor import Predictor, TileSettings

HAS_RASTERIO = importlib.util.find_spec("rasterio") is not None
# Label agreement of 64x64 tiles (overlap 0.25, Hann blending) with whole-image inference
# on 128x128 network inputs, measured with benchmarks/tiling_study.py (--size 128 --tiles 64
# --overlaps 0.25 --count 4): 72.8%; on this file's two images 71.9% and 73.9%. It is this
# low because the random-weights model's logits depend strongly on the input's extent
# (global context), not because of blending; the bound leaves room for float noise.
MIN_TILED_AGREEMENT = 0.60


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Two 160x160 DeepGlobe-like images alone in a folder."""
    root = tmp_path_factory.mktemp("samples")
    written = generate_sample_set(root / "set", "deepglobe", count=2, size=(160, 160))
    folder = root / "images"
    folder.mkdir()
    for path in written[::2]:
        shutil.copy(path, folder / path.name)
    return folder


@pytest.fixture(scope="module")
def whole(onnx_model, images):
    """Whole-image labels of each sample from Segmenter.predict."""
    segmenter = runtime.load(onnx_model)
    return {p.stem: segmenter.predict(read_image(p)) for p in sorted(images.iterdir())}


def labels_in(out, stem):
    return read_label_png(out / f"{stem}_labels.png")


def test_infer_writes_palette_pngs_equal_to_predict(cli, onnx_model, images, whole, tmp_path):
    out = tmp_path / "out"
    result = cli("infer", onnx_model, images, "-o", out, "--overlay", "--no-progress")
    assert result.exit_code == 0, result.output
    for stem, expected in whole.items():
        np.testing.assert_array_equal(labels_in(out, stem), expected)
        palette = read_palette(out / f"{stem}_labels.png")
        assert palette[:7] == list(DEEPGLOBE.palette)
        blend = read_image(out / f"{stem}_overlay.jpg")
        assert blend.shape == (160, 160, 3)
    assert "2 of 2 inputs" in result.output
    assert "median" in result.output and "tiled" not in result.output


def test_resume_skips_whole_outputs_and_redoes_cut_or_missing_ones(cli, onnx_model, images,
                                                                    tmp_path):
    out = tmp_path / "out"
    assert cli("infer", onnx_model, images, "-o", out, "--overlay").exit_code == 0
    first, second = sorted(images.iterdir())
    whole = (out / f"{first.stem}_labels.png").read_bytes()
    (out / f"{first.stem}_labels.png").write_bytes(whole[:-12])  # cut short
    kept = (out / f"{second.stem}_labels.png").stat().st_mtime_ns
    result = cli("infer", onnx_model, images, "-o", out, "--overlay", "--resume")
    assert result.exit_code == 0, result.output
    assert "1 of 2 inputs segmented" in result.output
    assert "skipped: 1 of 2 inputs whose outputs were already complete" in result.output
    assert (out / f"{first.stem}_labels.png").read_bytes() == whole
    assert (out / f"{second.stem}_labels.png").stat().st_mtime_ns == kept
    again = cli("infer", onnx_model, images, "-o", out)  # without --resume: all redone
    assert "2 of 2 inputs segmented" in again.output and "skipped" not in again.output


def test_tile_covering_the_image_equals_whole_image(cli, onnx_model, images, whole, tmp_path):
    # 160x160 at test scale 0.8 is 128x128 on the network: a 256x256 tile covers it, and a
    # 128x128 budget does not trigger tiling.
    for flags in (("--tile", "256x256"), ("--max-size", "128x128")):
        out = tmp_path / flags[0].strip("-")
        result = cli("infer", onnx_model, images, "-o", out, "--no-progress", *flags)
        assert result.exit_code == 0, result.output
        for stem, expected in whole.items():
            np.testing.assert_array_equal(labels_in(out, stem), expected)


def test_tiled_inference_stays_within_measured_difference(cli, onnx_model, images, whole,
                                                          tmp_path):
    out = tmp_path / "out"
    result = cli("infer", onnx_model, images, "-o", out, "--no-progress", "--max-size", "64x64",
                 "--overlap", "0.25")
    assert result.exit_code == 0, result.output
    assert "tiled: 2 of 2 images" in result.output
    for stem, expected in whole.items():
        tiled = labels_in(out, stem)
        agreement = label_agreement(expected, tiled, 7)["agreement"]
        assert MIN_TILED_AGREEMENT <= agreement < 1.0, (stem, agreement)


def test_reference_artifact_is_loudly_random(cli, model, images, whole, tmp_path,
                                             monkeypatch):
    monkeypatch.setattr("isdnet_deploy.model.checkpoint.build_model",
                        lambda num_classes=7, seed=0: model)
    out = tmp_path / "out"
    result = cli("infer", "reference", images, "-o", out, "--no-progress")
    assert result.exit_code == 0, result.output
    assert "RANDOM weights" in result.stderr
    for stem, expected in whole.items():  # the ONNX export of the same weights
        assert label_agreement(expected, labels_in(out, stem), 7)["agreement"] > 0.999


def _bad_corrupt(path):
    target = path / "broken.jpg"
    target.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return target, "cannot decode"


def _bad_16bit(path):
    target = path / "deep.png"
    cv2.imwrite(str(target), np.full((64, 64, 3), 4000, np.uint16))
    return target, "16-bit"


def _bad_4band(path):
    target = path / "nir.tif"
    cv2.imwrite(str(target), np.full((64, 64, 4), 90, np.uint8))  # no alpha marker
    return target, "4 bands"


@pytest.mark.parametrize("make_bad", [_bad_corrupt, _bad_16bit, _bad_4band])
def test_batch_continues_past_a_bad_file_and_fails_listing_it(cli, onnx_model, images,
                                                              tmp_path, make_bad):
    folder = tmp_path / "in"
    shutil.copytree(images, folder)
    bad, message = make_bad(folder)
    out = tmp_path / "out"
    result = cli("infer", onnx_model, folder, "-o", out, "--no-progress")
    assert result.exit_code == 1
    assert "1 of 3 inputs failed" in result.stderr
    failure = next(line for line in result.stderr.splitlines() if bad.name in line)
    assert message in failure
    assert not (out / f"{bad.stem}_labels.png").exists()
    assert len(list(out.glob("*_labels.png"))) == 2
    assert not list(out.glob(".*"))  # no temporary leftovers
    assert "Traceback" not in result.output


def test_empty_or_missing_inputs(cli, onnx_model, images, tmp_path):
    (tmp_path / "empty").mkdir()
    result = cli("infer", onnx_model, tmp_path / "empty", "-o", tmp_path / "out")
    assert result.exit_code == 1
    assert "no images" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    result = cli("infer", onnx_model, images, tmp_path / "nope.jpg", "-o", tmp_path / "out",
                 "--no-progress")
    assert result.exit_code == 1
    assert "nope.jpg: no such file" in result.stderr
    assert len(list((tmp_path / "out").glob("*_labels.png"))) == 2


def test_tile_options_are_checked(cli, onnx_model, images, tmp_path):
    result = cli("infer", onnx_model, images, "-o", tmp_path, "--tile", "64", "--max-size", "64")
    assert result.exit_code == 2 and "give one of them" in result.stderr
    result = cli("infer", onnx_model, images, "-o", tmp_path, "--tile", "16x16")
    assert result.exit_code == 2 and ">= 32" in result.stderr


# --- tiling policy, on a per-pixel fake backend (tiled == whole exactly) ----------------------

WEIGHTS = np.random.default_rng(0).standard_normal((7, 3)).astype(np.float32)


class PerPixel(Backend):
    """Class scores from each pixel alone, so tiling cannot change them; records shapes."""

    name = "per-pixel"

    def __init__(self, output_kind="logits", fixed=None, extra=None):
        h, w = fixed or ("height", "width")
        output = (TensorSpec("logits", "float32", "NCHW", [1, 7, h, w])
                  if output_kind == "logits" else TensorSpec("labels", "uint8", "HW", [h, w]))
        super().__init__(Contract(
            inputs=[TensorSpec("image", "float32", "NCHW", [1, 3, h, w])], outputs=[output],
            output_kind=output_kind, dynamic=fixed is None,
            fixed_size=list(fixed) if fixed else None, classes=list(DEEPGLOBE.classes),
            palette=[list(c) for c in DEEPGLOBE.palette], test_scale=1.0, extra=extra or {}))
        self.shapes = []

    def _run(self, feeds, out):
        x = feeds["image"][0]
        self.shapes.append(tuple(x.shape[1:]))
        logits = np.einsum("kc,chw->khw", WEIGHTS, x)[None].astype(np.float32)
        if self.contract.output_kind == "labels":
            return {"labels": logits[0].argmax(0).astype(np.uint8)}
        return {"logits": logits}


IMAGE = cv2.GaussianBlur(np.random.default_rng(1).integers(0, 256, (150, 190, 3), np.uint8),
                         (0, 0), 3)
EXPECTED = np.einsum("kc,hwc->khw", WEIGHTS, (IMAGE - np.float32(DEEPGLOBE.mean))
                     / np.float32(DEEPGLOBE.std)).argmax(0)


@pytest.mark.parametrize(("output_kind", "where"), [("logits", "contract"),
                                                    ("labels", "contract"),
                                                    ("logits", "sidecar")])
def test_engine_profile_max_makes_tiles_of_at_most_that_size(output_kind, where):
    if where == "contract":
        backend = PerPixel(output_kind, extra={"profile_max": [64, 96]})
    else:  # a TensorRT engine's optimization profile, as its sidecar records it
        backend = PerPixel(output_kind)
        backend.sidecar = SimpleNamespace(profile={"min": [32, 32], "max": [64, 96]})
    predictor = Predictor(runtime.Segmenter(backend))
    np.testing.assert_array_equal(predictor.predict(IMAGE), EXPECTED)
    assert predictor.last_tiles > 1
    assert all(h <= 64 and w <= 96 for h, w in backend.shapes)


def test_static_artifact_tiles_and_pads_to_its_fixed_size():
    backend = PerPixel(fixed=(48, 64))
    predictor = Predictor(runtime.Segmenter(backend))
    np.testing.assert_array_equal(predictor.predict(IMAGE), EXPECTED)
    np.testing.assert_array_equal(predictor.predict(IMAGE[:40, :50]), EXPECTED[:40, :50])
    assert set(backend.shapes) == {(48, 64)}
    with pytest.raises(IsdnetError, match="only accepts 48x64"):
        Predictor(runtime.Segmenter(backend), TileSettings(tile=(64, 64)))


def test_tile_larger_than_the_engine_accepts_is_refused():
    backend = PerPixel(extra={"profile_max": [64, 64]})
    with pytest.raises(IsdnetError, match="at most 64x64"):
        Predictor(runtime.Segmenter(backend), TileSettings(tile=(128, 128)))


def _write_plain_geotiff(path, rgb):
    """A GeoTIFF (pixel scale + tie point + geokey tags) written with Pillow only."""
    from PIL import Image, TiffImagePlugin

    ifd = TiffImagePlugin.ImageFileDirectory_v2()
    for tag, value, kind in ((33550, (10.0, 10.0, 0.0), 12),
                             (33922, (0.0, 0.0, 0.0, 500000.0, 4000000.0, 0.0), 12),
                             (34735, (1, 1, 0, 0), 3)):
        ifd[tag] = value
        ifd.tagtype[tag] = kind
    Image.fromarray(rgb).save(path, tiffinfo=ifd)


def test_geotiff_without_rasterio_gives_png_and_a_note(cli, onnx_model, images, tmp_path,
                                                       monkeypatch):
    monkeypatch.setitem(sys.modules, "rasterio", None)  # makes `import rasterio` fail
    rgb = read_image(next(images.iterdir()))
    _write_plain_geotiff(tmp_path / "scene.tif", rgb)
    assert is_geotiff(tmp_path / "scene.tif") and not is_geotiff(next(images.iterdir()))
    result = cli("infer", onnx_model, tmp_path / "scene.tif", "-o", tmp_path / "out",
                 "--no-progress")
    assert result.exit_code == 0, result.output
    assert "note: 1 GeoTIFF" in result.output and "isdnet-deploy[geo]" in result.output
    expected = runtime.load(onnx_model).predict(rgb)
    np.testing.assert_array_equal(labels_in(tmp_path / "out", "scene"), expected)


@pytest.mark.skipif(not HAS_RASTERIO, reason="needs rasterio (pip install 'isdnet-deploy[geo]')")
def test_geotiff_round_trip_keeps_georeference(cli, onnx_model, images, tmp_path):
    import rasterio
    from rasterio.crs import CRS
    from rasterio.transform import from_origin

    rgb = read_image(next(images.iterdir()))
    transform = from_origin(500000.0, 4000000.0, 0.5, 0.5)
    with rasterio.open(tmp_path / "scene.tif", "w", driver="GTiff", height=160, width=160,
                       count=3, dtype="uint8", crs=CRS.from_epsg(32633),
                       transform=transform) as dst:
        dst.write(rgb.transpose(2, 0, 1))
    result = cli("infer", onnx_model, tmp_path / "scene.tif", "-o", tmp_path / "out",
                 "--no-progress")
    assert result.exit_code == 0, result.output
    with rasterio.open(tmp_path / "out" / "scene_labels.tif") as src:
        assert src.crs == CRS.from_epsg(32633) and src.transform == transform
        labels = src.read(1)
        assert src.colormap(1)[1][:3] == DEEPGLOBE.palette[1]
    np.testing.assert_array_equal(labels, runtime.load(onnx_model).predict(rgb))
