"""Streaming TIFF/GeoTIFFs above the pixel budget: window by window, the in-memory tiling's
labels exactly where both apply, the georeference kept, memory that does not grow."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from hostile_helpers import ContextBackend, run_capped, tiny_onnx, write_geotiff

from isdnet_deploy import runtime
from isdnet_deploy.data.samples import photo_like
from isdnet_deploy.errors import IsdnetError
from isdnet_deploy.runtime.predictor import Predictor, TileSettings

pytestmark = pytest.mark.skipif(importlib.util.find_spec("rasterio") is None,
                                reason="streaming needs rasterio (the geo and test extras)")

IMAGE = photo_like(300, 410, seed=3)


def read_labels(path):
    import rasterio

    with rasterio.open(path) as src:
        return src.read(1), src


def stream(predictor, source, out):
    from isdnet_deploy.apps.stream import stream_geotiff

    return stream_geotiff(predictor, source, out, predictor.contract.display_palette())


@pytest.fixture(scope="module")
def geotiff(tmp_path_factory):
    return write_geotiff(tmp_path_factory.mktemp("stream") / "scene.tif", IMAGE)


@pytest.mark.parametrize(("output_kind", "overlap"), [("logits", 0.25), ("logits", 0.6),
                                                      ("logits", 17.0), ("labels", 0.25)])
def test_streamed_labels_equal_in_memory_tiling_exactly(geotiff, tmp_path, output_kind,
                                                         overlap):
    predictor = Predictor(runtime.Segmenter(ContextBackend(output_kind), scale=False),
                          TileSettings(max_size=(96, 128), overlap=overlap))
    tiled = predictor.predict(IMAGE)
    assert predictor.last_tiles > 1
    whole = runtime.Segmenter(ContextBackend(output_kind), scale=False).predict(IMAGE)
    assert (tiled != whole).mean() > 0.01  # tiles see other context: blending matters
    result = stream(predictor, geotiff, tmp_path / "labels.tif")
    labels, _ = read_labels(tmp_path / "labels.tif")
    assert result.tiles == predictor.last_tiles
    np.testing.assert_array_equal(labels, tiled)


def test_with_a_test_scale_one_tile_is_whole_image_inference(geotiff, tmp_path):
    segmenter = runtime.Segmenter(ContextBackend())  # DeepGlobe's 0.8
    whole = segmenter.predict(IMAGE)
    covering = Predictor(segmenter, TileSettings(tile=(400, 400)))
    stream(covering, geotiff, tmp_path / "one.tif")
    np.testing.assert_array_equal(read_labels(tmp_path / "one.tif")[0], whole)
    tiled = Predictor(segmenter, TileSettings(max_size=(96, 128)))
    in_memory = tiled.predict(IMAGE)
    stream(tiled, geotiff, tmp_path / "many.tif")
    # tiles are planned in file pixels here, in network pixels in memory: close, not equal
    assert (read_labels(tmp_path / "many.tif")[0] == in_memory).mean() > 0.9


def test_output_is_a_tiled_geotiff_with_the_georeference(geotiff, tmp_path):
    import rasterio

    predictor = Predictor(runtime.Segmenter(ContextBackend()), TileSettings(max_size=(96, 96)))
    stream(predictor, geotiff, tmp_path / "out" / "labels.tif")
    with rasterio.open(geotiff) as src, rasterio.open(tmp_path / "out" / "labels.tif") as out:
        assert out.crs == src.crs and out.transform == src.transform
        assert out.profile["tiled"] and out.block_shapes[0] == (256, 256)
        assert out.colormap(1)[1][:3] == tuple(predictor.contract.palette[1])
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["labels.tif"]  # no scratch left


def test_a_failure_leaves_no_file_and_no_scratch(geotiff, tmp_path):
    class Broken(ContextBackend):
        calls = 0

        def _run(self, feeds, out):
            Broken.calls += 1
            if Broken.calls > 5:
                raise MemoryError
            return super()._run(feeds, out)

    predictor = Predictor(runtime.Segmenter(Broken()), TileSettings(max_size=(96, 96)))
    with pytest.raises(IsdnetError, match="ran out of memory"):
        stream(predictor, geotiff, tmp_path / "labels.tif")
    assert list(tmp_path.iterdir()) == []


def test_one_huge_strip_cannot_be_streamed(tmp_path):
    from isdnet_deploy.apps.stream import stream_geotiff

    striped = write_geotiff(tmp_path / "strip.tif", IMAGE, block=None, BLOCKYSIZE=300,
                            compress="deflate")
    predictor = Predictor(runtime.Segmenter(ContextBackend()), TileSettings(max_size=(96, 96)))
    with pytest.raises(IsdnetError, match=r"blocks of 410x300 .*rewrite it tiled") as info:
        stream_geotiff(predictor, striped, tmp_path / "l.tif", [], max_block_pixels=50_000)
    assert "--max-pixels" in info.value.for_cli()


def test_infer_streams_tiffs_above_the_budget_and_refuses_other_formats(cli, geotiff,
                                                                      tmp_path):
    import cv2

    model = tiny_onnx(tmp_path / "tiny.onnx")
    result = cli("infer", model, geotiff, "-o", tmp_path / "out", "--max-pixels", "50000",
                 "--max-size", "128x128", "--no-scale", "--no-progress")
    assert result.exit_code == 0, result.output
    assert "streamed window by window" in result.output and "tiled: 1 of 1" in result.output
    labels, _ = read_labels(tmp_path / "out" / "scene_labels.tif")
    segmenter = runtime.load(model, scale=False)
    expected = Predictor(segmenter, TileSettings(max_size=(128, 128))).predict(IMAGE)
    np.testing.assert_array_equal(labels, expected)
    cv2.imwrite(str(tmp_path / "scene.png"), IMAGE)
    refused = cli("infer", model, tmp_path / "scene.png", "-o", tmp_path / "png",
                  "--max-pixels", "50000", "--no-progress")
    assert refused.exit_code == 1
    assert "PNG has no windowed decoding" in refused.stderr


def test_without_rasterio_a_tiff_above_the_budget_names_the_extra(cli, geotiff, tmp_path,
                                                                  monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "rasterio", None)
    result = cli("infer", tiny_onnx(tmp_path / "tiny.onnx"), geotiff, "-o", tmp_path / "o",
                 "--max-pixels", "50000", "--no-progress")
    assert result.exit_code == 1 and "isdnet-deploy[geo]" in result.stderr


def test_memory_does_not_grow_with_the_image(tmp_path):
    """Peak resident memory streaming a 1024x1024 and a 3072x3072 GeoTIFF (9 times the
    pixels; 27 MiB decoded, 108 MiB as floats) in fresh processes: the same within a few
    MiB (measured: 5 MiB apart at 1536 and 4608)."""
    code = """
        import json, resource, sys
        import numpy as np
        from hostile_helpers import ContextBackend, write_geotiff
        from isdnet_deploy import runtime
        from isdnet_deploy.apps.stream import stream_geotiff
        from isdnet_deploy.data.samples import photo_like
        from isdnet_deploy.runtime.predictor import Predictor, TileSettings
        import rasterio
        from rasterio.windows import Window
        size, folder = {size}, {folder!r}
        texture = photo_like(512, 512, seed=1)
        with rasterio.open(folder + "/in.tif", "w", driver="GTiff", height=size, width=size,
                           count=3, dtype="uint8", tiled=True, blockxsize=256,
                           blockysize=256, compress="deflate") as dst:
            for top in range(0, size, 512):
                band = np.tile(texture, (1, size // 512, 1))
                dst.write(band.transpose(2, 0, 1), window=Window(0, top, size, 512))
        before = int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) // 1024
        predictor = Predictor(runtime.Segmenter(ContextBackend(), scale=False),
                              TileSettings(max_size=(512, 512)))
        result = stream_geotiff(predictor, folder + "/in.tif", folder + "/out.tif", [])
        peak = int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) // 1024
        print(json.dumps({{"tiles": result.tiles, "before": before, "peak_mib": peak}}))
    """
    peaks = {}
    for size in (1024, 3072):
        folder = tmp_path / str(size)
        folder.mkdir()
        result = run_capped(code.format(size=size, folder=str(folder)), limit_mib=3072)
        assert result["returncode"] == 0, result["stderr"]
        peaks[size] = result
    small, large = peaks[1024], peaks[3072]
    assert large["tiles"] >= 7 * small["tiles"]
    assert large["peak_mib"] - small["peak_mib"] < 12, peaks
