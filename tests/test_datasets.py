"""Image I/O, mask decoding, image/mask pairing and synthetic sample sets."""

from __future__ import annotations

import importlib.util
import sys

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from isdnet_deploy.cli.samples import samples_command
from isdnet_deploy.data.datasets import Pair, load_mask, load_pair, pair_files
from isdnet_deploy.data.images import (
    IGNORE_COLOUR,
    colorize,
    overlay,
    read_geotiff,
    read_image,
    read_label_png,
    read_palette,
    write_geotiff_labels,
    write_image,
    write_label_png,
)
from isdnet_deploy.data.samples import generate_sample_set, sample_dirs, synthetic_pair
from isdnet_deploy.errors import IsdnetError, MissingDependencyError
from isdnet_deploy.profiles import CITYSCAPES, DEEPGLOBE, IGNORE_INDEX, INRIA, get_profile

HAS_RASTERIO = importlib.util.find_spec("rasterio") is not None


def rgb_array(h=12, w=17, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def touch_images(folder, *names):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        cv2.imwrite(str(folder / name), np.zeros((32, 32, 3), np.uint8))


# ---------------------------------------------------------------- read_image / write_image


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_read_image_is_rgb_not_bgr(tmp_path, ext):
    rgb = rgb_array()
    Image.fromarray(rgb).save(tmp_path / f"a{ext}")
    assert np.array_equal(read_image(tmp_path / f"a{ext}"), rgb)


def test_read_jpeg(tmp_path):
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[..., 0] = 220  # a flat red survives JPEG almost exactly
    Image.fromarray(rgb).save(tmp_path / "a.jpg", quality=95)
    out = read_image(tmp_path / "a.jpg")
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    assert abs(int(out[8, 8, 0]) - 220) <= 3 and out[8, 8, 2] < 10


def test_grayscale_becomes_three_equal_channels(tmp_path):
    gray = rgb_array()[..., 0]
    Image.fromarray(gray).save(tmp_path / "g.png")
    out = read_image(tmp_path / "g.png")
    assert out.shape == (*gray.shape, 3)
    for c in range(3):
        assert np.array_equal(out[..., c], gray)


def test_sixteen_bit_and_float_are_rejected_with_depth(tmp_path):
    cv2.imwrite(str(tmp_path / "g16.png"), np.full((8, 8), 4000, np.uint16))
    with pytest.raises(IsdnetError, match=r"g16\.png is 16-bit.*gdal_translate -ot Byte"):
        read_image(tmp_path / "g16.png")
    cv2.imwrite(str(tmp_path / "f.tif"), np.zeros((8, 8, 3), np.float32))
    with pytest.raises(IsdnetError, match="32-bit floating point"):
        read_image(tmp_path / "f.tif")


def test_alpha_is_dropped_but_other_fourth_bands_are_rejected(tmp_path):
    rgba = np.dstack([rgb_array(), np.full((12, 17), 77, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    assert np.array_equal(read_image(tmp_path / "a.png"), rgba[..., :3])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.tif")  # ExtraSamples = alpha
    assert np.array_equal(read_image(tmp_path / "a.tif"), rgba[..., :3])
    cv2.imwrite(str(tmp_path / "nir.tif"), rgba)  # 4 bands, no alpha marker
    with pytest.raises(IsdnetError, match=r"nir\.tif has 4 bands .*RGB\+NIR"):
        read_image(tmp_path / "nir.tif")


def test_corrupt_empty_and_missing_files(tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(IsdnetError, match=r"cannot decode image .*bad\.jpg"):
        read_image(tmp_path / "bad.jpg")
    Image.fromarray(rgb_array(64, 64)).save(tmp_path / "t.png")
    (tmp_path / "t.png").write_bytes((tmp_path / "t.png").read_bytes()[:100])
    with pytest.raises(IsdnetError, match=r"t\.png"):
        read_image(tmp_path / "t.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(IsdnetError, match="empty"):
        read_image(tmp_path / "empty.png")
    with pytest.raises(IsdnetError, match="does not exist"):
        read_image(tmp_path / "nope.png")


def test_write_image_round_trip_and_atomicity(tmp_path):
    rgb = rgb_array()
    write_image(tmp_path / "x.png", rgb)
    assert np.array_equal(read_image(tmp_path / "x.png"), rgb)
    with pytest.raises(IsdnetError, match="HxWx3 uint8"):
        write_image(tmp_path / "x.png", rgb.astype(np.float32))
    assert np.array_equal(read_image(tmp_path / "x.png"), rgb)  # old file untouched
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]  # no temp file left


# ---------------------------------------------------------------- label PNGs, overlay


def test_palette_png_round_trip(tmp_path):
    labels = np.random.default_rng(1).integers(0, 7, (20, 30)).astype(np.uint8)
    labels[0, :5] = IGNORE_INDEX
    path = write_label_png(tmp_path / "l.png", labels, DEEPGLOBE.palette)
    with Image.open(path) as im:
        assert im.mode == "P"
    assert np.array_equal(read_label_png(path), labels)
    palette = read_palette(path)
    assert palette[:7] == [tuple(c) for c in DEEPGLOBE.palette]
    assert palette[IGNORE_INDEX] == IGNORE_COLOUR
    # A viewer expanding the palette sees the class colours.
    shown = np.array(Image.open(path).convert("RGB"))
    assert np.array_equal(shown, colorize(labels, DEEPGLOBE.palette))
    assert [p.name for p in tmp_path.iterdir()] == ["l.png"]


def test_label_png_errors(tmp_path):
    with pytest.raises(IsdnetError, match=r"0\.\.255"):
        write_label_png(tmp_path / "l.png", np.full((4, 4), 300), DEEPGLOBE.palette)
    assert not (tmp_path / "l.png").exists()
    Image.fromarray(rgb_array()).save(tmp_path / "rgb.png")
    with pytest.raises(IsdnetError, match="RGB colour mask"):
        read_label_png(tmp_path / "rgb.png")
    Image.fromarray(np.full((4, 4), 3, np.uint8)).save(tmp_path / "gray.png")
    assert (read_label_png(tmp_path / "gray.png") == 3).all()


def test_overlay():
    image = rgb_array(4, 4)
    labels = np.zeros((4, 4), np.uint8)
    labels[0, 0] = 5
    labels[3, 3] = IGNORE_INDEX
    assert np.array_equal(overlay(image, labels, DEEPGLOBE.palette, alpha=0.0), image)
    full = overlay(image, labels, DEEPGLOBE.palette, alpha=1.0)
    assert tuple(full[0, 0]) == DEEPGLOBE.palette[5]
    assert tuple(full[3, 3]) == tuple(image[3, 3])  # ignored pixels show the image
    half = overlay(image, labels, DEEPGLOBE.palette, alpha=0.5)
    expected = np.floor(0.5 * image[1, 1].astype(float) + 0.5 * 0 + 0.5)
    assert np.array_equal(half[1, 1], expected)
    with pytest.raises(IsdnetError, match="WxH"):
        overlay(image, labels[:2], DEEPGLOBE.palette)


# ---------------------------------------------------------------- pairing


def test_deepglobe_pairs_in_one_folder_with_unpaired_lists(tmp_path):
    touch_images(tmp_path, "1_sat.jpg", "1_mask.png", "2_sat.jpg", "2_mask.png",
                 "3_sat.jpg", "9_mask.png")
    (tmp_path / "notes.txt").write_text("not an image")
    for labels_dir in (None, tmp_path):
        pairs, lone_images, lone_masks = pair_files(tmp_path, labels_dir, DEEPGLOBE)
        assert [(p.key, p.image.name, p.label.name) for p in pairs] == [
            ("1", "1_sat.jpg", "1_mask.png"), ("2", "2_sat.jpg", "2_mask.png")]
        assert [p.name for p in lone_images] == ["3_sat.jpg"]
        assert [p.name for p in lone_masks] == ["9_mask.png"]


def test_deepglobe_pairs_across_folders(tmp_path):
    touch_images(tmp_path / "img", "5_sat.jpg", "6_sat.jpg")
    touch_images(tmp_path / "gt", "5_mask.png", "6.png")
    pairs, lone_images, lone_masks = pair_files(tmp_path / "img", tmp_path / "gt", DEEPGLOBE)
    assert [p.label.name for p in pairs] == ["5_mask.png", "6.png"]
    assert lone_images == [] and lone_masks == []


def test_inria_pairs_images_and_gt(tmp_path):
    touch_images(tmp_path / "images", "austin1.tif", "austin2.tif", "chicago1.tif")
    touch_images(tmp_path / "gt", "austin1.tif", "austin2.png", "vienna9.tif")
    pairs, lone_images, lone_masks = pair_files(tmp_path / "images", tmp_path / "gt", INRIA)
    assert [(p.image.name, p.label.name) for p in pairs] == [
        ("austin1.tif", "austin1.tif"), ("austin2.tif", "austin2.png")]
    assert [p.name for p in lone_images] == ["chicago1.tif"]
    assert [p.name for p in lone_masks] == ["vienna9.tif"]
    with pytest.raises(IsdnetError, match="separate folders"):
        pair_files(tmp_path / "images", None, INRIA)


def test_plain_same_stem_pairs(tmp_path):
    touch_images(tmp_path / "i", "a.jpg", "b.png")
    touch_images(tmp_path / "l", "a.png", "b.png")
    pairs, _, _ = pair_files(tmp_path / "i", tmp_path / "l", CITYSCAPES)
    assert [p.key for p in pairs] == ["a", "b"]


def test_pairing_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    touch_images(tmp_path / "masks", "1_mask.png")
    with pytest.raises(IsdnetError, match=r"no images .* in .*empty"):
        pair_files(tmp_path / "empty", tmp_path / "masks", DEEPGLOBE)
    touch_images(tmp_path / "imgs", "1_sat.jpg")
    with pytest.raises(IsdnetError, match=r"no masks in .*empty.*_mask\.png"):
        pair_files(tmp_path / "imgs", tmp_path / "empty", DEEPGLOBE)
    with pytest.raises(IsdnetError, match="does not exist"):
        pair_files(tmp_path / "missing", None, DEEPGLOBE)
    touch_images(tmp_path / "other", "7_mask.png")
    with pytest.raises(IsdnetError, match=r"no image .* has a mask.*1_sat\.jpg.*7_mask\.png"):
        pair_files(tmp_path / "imgs", tmp_path / "other", DEEPGLOBE)
    touch_images(tmp_path / "dup", "x.tif", "x.png")
    with pytest.raises(IsdnetError, match="both pair with 'x'"):
        pair_files(tmp_path / "imgs", tmp_path / "dup", INRIA)


# ---------------------------------------------------------------- masks


def test_deepglobe_colour_mask_thresholded_at_128(tmp_path):
    labels = np.random.default_rng(2).integers(0, 7, (16, 16)).astype(np.uint8)
    colours = colorize(labels, DEEPGLOBE.palette).astype(int)
    noise = np.random.default_rng(3).integers(0, 100, colours.shape)
    noisy = np.where(colours == 255, colours - noise, colours + noise).astype(np.uint8)
    assert not np.array_equal(noisy, colours)
    Image.fromarray(noisy).save(tmp_path / "m.png")
    assert np.array_equal(load_mask(tmp_path / "m.png", DEEPGLOBE), labels)


def test_unknown_colours_are_listed_with_counts(tmp_path):
    mask = colorize(np.zeros((10, 10), np.uint8), DEEPGLOBE.palette)
    mask[:3] = (255, 0, 0)  # 30 px of red: not a DeepGlobe colour even after thresholding
    mask[9, 9] = (200, 30, 10)  # thresholds to red as well
    Image.fromarray(mask).save(tmp_path / "m.png")
    with pytest.raises(IsdnetError, match=r"1 colour\(s\) not in the deepglobe palette "
                                          r"\(31 px\): \(255,0,0\) \(31 px\)"):
        load_mask(tmp_path / "m.png", DEEPGLOBE)
    city = colorize(np.ones((4, 4), np.uint8), CITYSCAPES.palette)
    city[0, 0] = (1, 2, 3)
    Image.fromarray(city).save(tmp_path / "c.png")
    with pytest.raises(IsdnetError, match=r"\(1,2,3\) \(1 px\)"):
        load_mask(tmp_path / "c.png", CITYSCAPES)


def test_inria_mask_values(tmp_path):
    truth = np.zeros((8, 8), np.uint8)
    truth[2:5, 3:7] = 1
    cv2.imwrite(str(tmp_path / "a.tif"), truth * 255)
    cv2.imwrite(str(tmp_path / "b.png"), truth)
    assert np.array_equal(load_mask(tmp_path / "a.tif", INRIA), truth)
    assert np.array_equal(load_mask(tmp_path / "b.png", INRIA), truth)
    odd = truth * 255
    odd[0, :2] = 128
    cv2.imwrite(str(tmp_path / "c.tif"), odd)
    with pytest.raises(IsdnetError, match=r"values 128 \(2 px\); inria masks hold only 0/255"):
        load_mask(tmp_path / "c.tif", INRIA)
    mixed = truth * 255
    mixed[0, 0] = 1
    cv2.imwrite(str(tmp_path / "d.tif"), mixed)
    with pytest.raises(IsdnetError, match="mixes 1 and 255"):
        load_mask(tmp_path / "d.tif", INRIA)


def test_id_masks_and_ignore(tmp_path):
    ids = np.array([[0, 1, 6], [255, 2, 3]], np.uint8)
    write_label_png(tmp_path / "p.png", ids, DEEPGLOBE.palette)
    assert np.array_equal(load_mask(tmp_path / "p.png", DEEPGLOBE), ids)
    cv2.imwrite(str(tmp_path / "g.png"), np.array([[0, 18, 40]], np.uint8))
    with pytest.raises(IsdnetError, match=r"values 40 \(1 px\)"):
        load_mask(tmp_path / "g.png", CITYSCAPES)


def test_size_mismatch_names_both_sizes(tmp_path):
    Image.fromarray(rgb_array(40, 50)).save(tmp_path / "1_sat.jpg")
    Image.fromarray(np.zeros((40, 48, 3), np.uint8)).save(tmp_path / "1_mask.png")
    pair = Pair("1", tmp_path / "1_sat.jpg", tmp_path / "1_mask.png")
    with pytest.raises(IsdnetError, match=r"is 50x40 but mask .* is 48x40"):
        load_pair(pair, DEEPGLOBE)


# ---------------------------------------------------------------- samples


@pytest.mark.parametrize("profile", [DEEPGLOBE, INRIA])
def test_samples_are_deterministic_and_pairable(tmp_path, profile):
    a = generate_sample_set(tmp_path / "a", profile, count=2, size=(64, 96), seed=7)
    b = generate_sample_set(tmp_path / "b", profile, count=2, size=(64, 96), seed=7)
    c = generate_sample_set(tmp_path / "c", profile, count=2, size=(64, 96), seed=8)
    assert len(a) == 4
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    assert [p.read_bytes() for p in a] != [p.read_bytes() for p in c]
    pairs, lone_images, lone_masks = pair_files(*sample_dirs(tmp_path / "a", profile), profile)
    assert len(pairs) == 2 and not lone_images and not lone_masks
    seen = set()
    for pair in pairs:
        image, mask = load_pair(pair, profile)
        assert image.shape == (64, 96, 3) and mask.shape == (64, 96)
        assert mask.max() < profile.num_classes
        seen.update(np.unique(mask).tolist())
    assert len(seen) >= 2  # more than one class appears


def test_sample_layouts(tmp_path):
    dg = generate_sample_set(tmp_path / "dg", "deepglobe", count=1, size=(32, 32))
    assert [p.name for p in dg] == ["synth000_sat.jpg", "synth000_mask.png"]
    inria = generate_sample_set(tmp_path / "in", INRIA, count=1, size=(32, 32))
    assert [p.relative_to(tmp_path / "in").as_posix() for p in inria] == [
        "images/synth1.tif", "gt/synth1.tif"]
    assert set(np.unique(cv2.imread(str(inria[1]), cv2.IMREAD_UNCHANGED))) <= {0, 255}
    with pytest.raises(IsdnetError, match=">= 32"):
        generate_sample_set(tmp_path / "x", INRIA, size=(16, 64))


def test_samples_cli(tmp_path):
    result = CliRunner().invoke(samples_command, ["-o", str(tmp_path / "s"), "--profile",
                                                  "inria", "--count", "2", "--size", "48x64"])
    assert result.exit_code == 0, result.output
    assert "wrote 2 inria image/mask pairs of 48x64" in result.output
    assert sorted(p.name for p in (tmp_path / "s" / "gt").iterdir()) == ["synth1.tif",
                                                                        "synth2.tif"]
    bad = CliRunner().invoke(samples_command, ["-o", str(tmp_path / "t"), "--size", "8x8"])
    assert bad.exit_code == 2 and ">= 32" in bad.output  # a usage error, named by the option


# ---------------------------------------------------------------- GeoTIFF


def test_geotiff_without_rasterio_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "rasterio", None)  # makes `import rasterio` fail
    with pytest.raises(MissingDependencyError, match=r"isdnet-deploy\[geo\]"):
        read_geotiff(tmp_path / "x.tif")


@pytest.mark.skipif(not HAS_RASTERIO, reason="needs rasterio (pip install 'isdnet-deploy[geo]')")
def test_geotiff_round_trip_keeps_georeference(tmp_path):
    import rasterio
    from rasterio.transform import from_origin

    rgb = rgb_array(24, 40)
    transform = from_origin(500000.0, 4650000.0, 0.5, 0.5)
    with rasterio.open(tmp_path / "in.tif", "w", driver="GTiff", height=24, width=40, count=3,
                       dtype="uint8", crs="EPSG:32631", transform=transform) as dst:
        dst.write(np.transpose(rgb, (2, 0, 1)))
    image, georef = read_geotiff(tmp_path / "in.tif")
    assert np.array_equal(image, rgb)
    labels = (rgb[..., 0] % 7).astype(np.uint8)
    for like in (tmp_path / "in.tif", georef):
        out = write_geotiff_labels(tmp_path / "out.tif", labels, like, DEEPGLOBE.palette)
        with rasterio.open(out) as src:
            assert src.crs.to_epsg() == 32631 and src.transform == transform
            assert np.array_equal(src.read(1), labels)
            assert src.colormap(1)[5][:3] == DEEPGLOBE.palette[5]
    with pytest.raises(IsdnetError, match="resize labels back"):
        write_geotiff_labels(tmp_path / "bad.tif", labels[:5], georef)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif", "out.tif"]


@pytest.mark.parametrize("profile", ["deepglobe", "inria", "cityscapes"])
def test_synthetic_pair_matches_the_written_sample_set(tmp_path, profile):
    image, labels = synthetic_pair(profile, 96, 80, [5, 0])
    assert image.shape == (96, 80, 3) and image.dtype == np.uint8
    assert labels.shape == (96, 80) and labels.max() < get_profile(profile).num_classes
    assert len(np.unique(labels)) > 1  # regions, not one flat class
    generate_sample_set(tmp_path, profile, count=1, size=(96, 80), seed=5)
    images_dir, _ = sample_dirs(tmp_path, profile)
    written = sorted(p for p in images_dir.iterdir() if p.is_file() and "_mask" not in p.name)
    if profile != "deepglobe":  # JPEG is lossy; the lossless formats must match exactly
        np.testing.assert_array_equal(read_image(written[0]), image)
    np.testing.assert_array_equal(synthetic_pair(profile, 96, 80, [5, 0])[1], labels)


def test_synthetic_pair_rejects_tiny_sizes():
    with pytest.raises(IsdnetError, match="too small"):
        synthetic_pair("deepglobe", 16, 64)
