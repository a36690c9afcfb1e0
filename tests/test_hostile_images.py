"""Hostile image files: sizes come from headers and are checked against the pixel budget
before anything is decoded; one line names the size, the budget and the option."""

from __future__ import annotations

import importlib.util
import shutil

import cv2
import numpy as np
import pytest
from hostile_helpers import (
    jpeg_declaring,
    png_declaring,
    refusal_under_cap,
    set_tiff_tags,
    tiny_onnx,
    write_geotiff,
)
from PIL import Image

from isdnet_deploy.data.datasets import load_mask
from isdnet_deploy.data.headers import DEFAULT_MAX_PIXELS, read_header
from isdnet_deploy.data.images import read_image, read_label_png
from isdnet_deploy.data.samples import generate_sample_set, photo_like
from isdnet_deploy.errors import IsdnetError
from isdnet_deploy.profiles import DEEPGLOBE

HAS_RASTERIO = importlib.util.find_spec("rasterio") is not None


@pytest.mark.parametrize("ext", [".png", ".jpg", ".tif", ".bmp", ".webp"])
@pytest.mark.parametrize("shape", [(37, 53, 3), (20, 31), (16, 9, 4)])
def test_header_sizes_equal_the_decoded_sizes(tmp_path, ext, shape):
    if ext in (".jpg", ".bmp", ".webp") and len(shape) == 3 and shape[2] == 4:
        pytest.skip(f"OpenCV writes no alpha to {ext}")
    path = tmp_path / f"a{ext}"
    assert cv2.imwrite(str(path), np.full(shape, 100, np.uint8))
    header = read_header(path)
    decoded = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert (header.height, header.width) == decoded.shape[:2]


def test_bigtiff_and_tiled_tiff_headers(tmp_path):
    image = Image.fromarray(photo_like(40, 70, seed=1))
    image.save(tmp_path / "big.tif", big_tiff=True)
    header = read_header(tmp_path / "big.tif")
    assert (header.format, header.width, header.height, header.bands) == ("TIFF", 70, 40, 3)
    if HAS_RASTERIO:
        write_geotiff(tmp_path / "tiled.tif", photo_like(40, 70, seed=1), block=16,
                      BIGTIFF="YES")
        header = read_header(tmp_path / "tiled.tif")
        assert (header.width, header.height, header.tile) == (70, 40, (16, 16))


def test_tiny_jpeg_declaring_a_gigapixel_is_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.jpg"
    path.write_bytes(jpeg_declaring(32000, 32000))
    assert path.stat().st_size < 1000
    with pytest.raises(IsdnetError) as info:
        read_image(path)
    message = info.value.for_cli()
    assert "32000x32000 pixels" in message and "1024.0 MP" in message
    assert f"{DEFAULT_MAX_PIXELS / 1e6:.1f} MP" in message and "--max-pixels" in message
    assert "JPEG has no windowed decoding" in message
    assert "max_pixels=" in str(info.value)  # the Python API names its keyword instead


def test_refusal_allocates_nothing_under_an_address_space_cap(tmp_path):
    """Before the budget, this file grew to 23.6 GiB; now the refusal stays at the cost of
    the interpreter and its imports."""
    path = tmp_path / "bomb.jpg"
    path.write_bytes(jpeg_declaring(32000, 32000))
    result = refusal_under_cap("isdnet_deploy.data.images", "read_image", path, 2048)
    assert result["returncode"] == 0, result["stderr"]
    assert "above the pixel budget" in result["outcome"]
    assert result["peak_mib"] < 400


def test_budget_raised_or_lifted(tmp_path):
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), photo_like(60, 80, seed=2))
    with pytest.raises(IsdnetError, match=r"80x60 pixels .* above the pixel budget of 0\.0 MP"):
        read_image(path, max_pixels=100)
    assert read_image(path, max_pixels=4800).shape == (60, 80, 3)
    assert read_image(path, max_pixels=0).shape == (60, 80, 3)


def test_deflate_png_bomb_and_masks(tmp_path):
    path = tmp_path / "bomb_mask.png"
    path.write_bytes(png_declaring(30000, 30000))
    for reader in (lambda: read_image(path), lambda: read_label_png(path),
                   lambda: load_mask(path, DEEPGLOBE)):
        with pytest.raises(IsdnetError, match=r"30000x30000 pixels.*above the pixel budget"):
            reader()


def test_pillows_own_bomb_check_is_one_line_when_the_budget_is_lifted(tmp_path):
    path = tmp_path / "labels.png"
    path.write_bytes(png_declaring(20000, 20000, mode="P"))
    with pytest.raises(IsdnetError, match="too large for Pillow") as info:
        read_label_png(path, max_pixels=0)
    assert "\n" not in str(info.value)
    assert isinstance(info.value.__cause__, Image.DecompressionBombError)


@pytest.mark.skipif(not HAS_RASTERIO, reason="writes tiled TIFFs with rasterio (test extra)")
def test_tiff_with_huge_tiles_or_bands(tmp_path):
    rgb = photo_like(32, 32, seed=3)
    write_geotiff(tmp_path / "t.tif", rgb, block=16)
    # 60000x60000 tiles over a 32x32 image: decoders allocate whole tiles
    huge = set_tiff_tags(shutil.copy(tmp_path / "t.tif", tmp_path / "tiles.tif"),
                         {322: 60000, 323: 60000})
    assert read_header(huge).tile == (60000, 60000)
    with pytest.raises(IsdnetError, match=r"in 60000x60000 tiles \(3600\.0 MP per tile\)"):
        read_image(huge)
    Image.fromarray(rgb).save(tmp_path / "six.tif")
    set_tiff_tags(tmp_path / "six.tif", {277: 60000})  # 60000 samples per pixel
    with pytest.raises(IsdnetError, match="has 60000 bands"):
        read_image(tmp_path / "six.tif")


def test_padded_file_and_foreign_formats(tmp_path):
    small = tmp_path / "padded.png"
    cv2.imwrite(str(small), np.zeros((10, 10, 3), np.uint8))
    with open(small, "r+b") as f:
        f.truncate(80 << 20)  # sparse: 80 MiB of nothing after a 10x10 image
    with pytest.raises(IsdnetError, match="MiB file for a 10x10"):
        read_image(small)
    pgm = tmp_path / "photo.jpg"
    pgm.write_bytes(b"P5\n32000 32000\n255\n" + bytes(64))
    with pytest.raises(IsdnetError, match=r"cannot decode image .*not a JPEG, PNG or TIFF"):
        read_image(pgm)


def test_infer_batch_goes_on_past_bombs(cli, tmp_path):
    model = tiny_onnx(tmp_path / "tiny.onnx")
    folder = tmp_path / "images"
    generate_sample_set(tmp_path / "set", "deepglobe", count=1, size=(96, 96))
    folder.mkdir()
    good = next((tmp_path / "set").glob("*_sat.jpg"))
    shutil.copy(good, folder / good.name)
    (folder / "bomb.jpg").write_bytes(jpeg_declaring(32000, 32000))
    (folder / "bomb_p.png").write_bytes(png_declaring(20000, 20000, mode="P"))
    result = cli("infer", model, folder, "-o", tmp_path / "out", "--no-progress")
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert (tmp_path / "out" / f"{good.stem}_labels.png").is_file()
    assert "failed: 2 of 3 inputs" in result.stderr
    for name, size in (("bomb.jpg", "32000x32000"), ("bomb_p.png", "20000x20000")):
        line = next(line for line in result.stderr.splitlines() if name in line)
        assert size in line and "--max-pixels" in line
    lifted = cli("infer", model, folder, "-o", tmp_path / "out2", "--no-progress",
                 "--max-pixels", "1")
    assert "failed: 3 of 3 inputs" in lifted.stderr


def test_evaluate_refuses_a_bomb_mask_and_goes_on(cli, tmp_path):
    model = tiny_onnx(tmp_path / "tiny.onnx")
    folder = tmp_path / "set"
    generate_sample_set(folder, "deepglobe", count=2, size=(96, 96))
    mask = sorted(folder.glob("*_mask.png"))[0]
    mask.write_bytes(png_declaring(25000, 25000, mode="P"))
    result = cli("evaluate", model, "--images", folder, "--no-progress")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "1 of 2 image/mask pairs failed" in result.stderr
    assert "25000x25000 pixels" in result.stderr and "on 1 images" in result.output


def test_compare_and_calibration_take_the_budget(cli, tmp_path):
    from isdnet_deploy.engine.calibration import ImageSource
    from isdnet_deploy.runtime.onnxruntime_backend import OnnxRuntimeBackend

    model = tiny_onnx(tmp_path / "tiny.onnx")
    folder = tmp_path / "set"
    generate_sample_set(folder, "deepglobe", count=1, size=(96, 96))
    other = shutil.copy(model, tmp_path / "other.onnx")
    result = cli("compare", model, other, "--images", folder, "--max-pixels", "5000",
                 "--no-progress")
    assert result.exit_code == 1
    assert "96x96 pixels" in result.stderr and "--max-pixels (now 5000" in result.stderr
    assert cli("compare", model, other, "--images", folder, "--no-progress").exit_code == 0
    contract = OnnxRuntimeBackend(model).contract
    images = sorted(folder.glob("*_sat.jpg"))
    with pytest.raises(IsdnetError, match="above the pixel budget"):
        ImageSource(contract, (64, 64), images, 1, 0, max_pixels=5000).feeds(0)
    assert ImageSource(contract, (64, 64), images, 1, 0).feeds(0)["image"].shape == (
        1, 3, 64, 64)
    assert "--max-pixels" in cli("quantize", "--help").output


def test_bigtiff_directory_offset_beyond_any_file_is_one_line(tmp_path):
    """Fuzz-found: a BigTIFF whose first directory sits at 2**64 - 1 made seek() raise
    ValueError instead of a refusal."""
    import struct

    from isdnet_deploy.data.headers import read_header

    path = tmp_path / "big.tif"
    path.write_bytes(b"II" + struct.pack("<HHHQ", 43, 8, 0, (1 << 64) - 1) + bytes(32))
    with pytest.raises(IsdnetError, match="past the file's end"):
        read_header(path)
