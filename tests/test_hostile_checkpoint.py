"""Hostile checkpoints: sizes, storages and the class count are checked from the zip
directory and the object table before torch loads anything; non-finite weights are named."""

from __future__ import annotations

import zipfile

import pytest
import torch
from helpers import official_state_dict
from hostile_helpers import refusal_under_cap

from isdnet_deploy.errors import IsdnetError
from isdnet_deploy.model import checkpoint
from isdnet_deploy.model.checkpoint import CLASSIFIER_KEY, load_model, scan_checkpoint


@pytest.fixture(scope="module")
def state() -> dict:
    return official_state_dict()


def save(path, obj, **options):
    torch.save(obj, path, **options)
    return path


def test_scan_reads_sizes_without_loading(tmp_path, state):
    path = save(tmp_path / "c.pth", {"state_dict": state, "meta": {"CLASSES": ("a",) * 7}})
    scan = scan_checkpoint(path)
    assert scan.num_classes() == 7
    assert scan.data_bytes == sum(t.numel() * t.element_size() for t in state.values())
    assert scan.tensors[CLASSIFIER_KEY].shape == tuple(state[CLASSIFIER_KEY].shape)
    legacy = save(tmp_path / "legacy.pth", {"state_dict": state},
                  _use_new_zipfile_serialization=False)
    assert scan_checkpoint(legacy).num_classes() == 7
    assert load_model(legacy).num_classes == 7


def test_stride_zero_classifier_is_refused_before_anything_is_allocated(tmp_path, state):
    """An expanded (stride-0) tensor declares 100 million classes over 128 floats; before
    the scan, ISDNet(num_classes=1e8) asked for 25.6 GB."""
    hostile = dict(state)
    hostile[CLASSIFIER_KEY] = torch.zeros(1, 128, 1, 1).expand(100_000_000, 128, 1, 1)
    path = save(tmp_path / "stride0.pth", hostile)
    result = refusal_under_cap("isdnet_deploy.model.checkpoint", "load_model", path, 3072)
    assert result["returncode"] == 0, result["stderr"]
    assert "declares shape (100000000, 128, 1, 1) over a storage of 128" in result["outcome"]
    assert result["peak_mib"] < 1024


def test_class_counts_follow_the_palette_rule(tmp_path):
    for count, fragment in ((0, "has 0 classes; a segmentation model has at least 1"),
                            (300, "has 300 classes; label maps are uint8")):
        path = save(tmp_path / f"c{count}.pth", official_state_dict(num_classes=count))
        with pytest.raises(IsdnetError, match=fragment) as info:
            load_model(path)
        assert "\n" not in str(info.value)
    with pytest.raises(IsdnetError) as info:
        load_model(tmp_path / "c300.pth")
    assert "--output-kind labels --labels-dtype int32" in info.value.for_cli()
    assert "max_classes=65536" in str(info.value)
    assert load_model(tmp_path / "c300.pth", max_classes=65536).num_classes == 300


def test_uncompressed_size_and_zip_directory_are_bounded(tmp_path, state, monkeypatch):
    path = save(tmp_path / "c.pth", {"state_dict": state})
    with pytest.raises(IsdnetError, match=r"is 73 MiB, more than the 10 MiB a checkpoint"):
        load_model(path, max_bytes=10 << 20)
    monkeypatch.setattr(checkpoint, "MAX_ZIP_ENTRIES", 100)
    with pytest.raises(IsdnetError, match=r"zip directory lists \d+ entries"):
        load_model(path)


def _rezip(source, target, change):
    """Copy a torch.save archive record by record, ``change(name, data) -> data``."""
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, change(info.filename, src.read(info.filename)))
    return target


def test_deflated_records_count_at_their_unpacked_size(tmp_path):
    """1.46 MB of deflated zeros inflated to 1.5 GB before: the declared sizes now count."""
    path = save(tmp_path / "small.pth", {"w": torch.zeros(4)})
    big = bytes(64 << 20)  # 64 MiB of zeros, about 64 KiB deflated
    bomb = tmp_path / "bomb.pth"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
        dst.writestr("small/data/padding", big)
    assert bomb.stat().st_size < 1 << 20
    with pytest.raises(IsdnetError, match="unpacks to 64 MiB, more than the 16 MiB"):
        scan_checkpoint(bomb, max_bytes=16 << 20)


def test_storage_that_disagrees_with_its_record(tmp_path):
    path = save(tmp_path / "c.pth", {"w": torch.zeros(1000)})
    cut = _rezip(path, tmp_path / "cut.pth",
                 lambda name, data: data[:40] if "/data/" in name and ".data" not in name
                 else data)
    with pytest.raises(IsdnetError, match="declares 4000 bytes but the archive holds 40"):
        load_model(cut)


def test_damaged_object_table_is_one_line(tmp_path):
    path = save(tmp_path / "c.pth", {"w": torch.zeros(3)})
    broken = _rezip(path, tmp_path / "broken.pth",
                    lambda name, data: data[:len(data) // 2] if name.endswith("data.pkl")
                    else data)
    with pytest.raises(IsdnetError, match="truncated or corrupt") as info:
        load_model(broken)
    assert "\n" not in str(info.value)


def test_memo_index_bomb_in_the_object_table(tmp_path):
    """LONG_BINPUT with a huge index makes the C unpickler allocate an index-sized array;
    the scan's pure-Python unpickler keeps its memo in a dict."""
    path = save(tmp_path / "c.pth", {"w": torch.zeros(3)})
    table = b"\x80\x02}r\xff\xff\xff\x7f."  # PROTO 2, EMPTY_DICT, LONG_BINPUT 2**31-1, STOP
    hostile = _rezip(path, tmp_path / "memo.pth",
                     lambda name, data: table if name.endswith("data.pkl") else data)
    scan = scan_checkpoint(hostile)
    assert scan.tensors == {} and scan.num_classes() is None


def test_non_finite_weights_are_named_at_load(tmp_path, state):
    hostile = dict(state)
    hostile["decode_head.bottleneck.conv.weight"] = state[
        "decode_head.bottleneck.conv.weight"].clone()
    hostile["decode_head.bottleneck.conv.weight"][0, 0, 0, 0] = float("nan")
    hostile["backbone.stem.0.weight"] = state["backbone.stem.0.weight"] * float("inf")
    path = save(tmp_path / "nan.pth", hostile)
    with pytest.raises(IsdnetError, match=r"non-finite weights \(NaN or infinity\) in 2 "
                                          r"tensor\(s\): backbone\.stem\.0\.weight, "
                                          r"decode_head\.bottleneck\.conv\.weight"):
        load_model(path)


def test_export_verification_names_non_finite_weights(model, tmp_path):
    import copy

    from isdnet_deploy.export.onnx_export import export_onnx

    broken = copy.deepcopy(model)
    with torch.no_grad():
        broken.refine_head.conv_seg.conv_out.bias[0] = float("nan")
    with pytest.raises(IsdnetError, match=r"non-finite weights \(NaN or infinity\) in 1 "
                                          r"tensor\(s\): refine_head\.conv_seg\.conv_out\.bias"):
        export_onnx(broken, tmp_path / "nan.onnx", verify_size=(64, 64))
    assert list(tmp_path.iterdir()) == []


def test_many_classes_export_with_int32_labels_and_infer(tmp_path, cli):
    """A 300-class checkpoint: refused for uint8 labels with the palette rule, exported with
    int32 labels, and then every infer works (16-bit label maps, no palette)."""
    from PIL import Image

    from isdnet_deploy.data.images import read_label_png
    from isdnet_deploy.data.samples import photo_like

    path = save(tmp_path / "many.pth", official_state_dict(num_classes=300))
    refused = cli("export", path, "-o", tmp_path / "many.onnx", "--no-progress")
    assert refused.exit_code == 1
    assert "--output-kind labels --labels-dtype int32" in refused.stderr
    assert not (tmp_path / "many.onnx").exists()
    out = tmp_path / "wide.onnx"
    done = cli("export", path, "-o", out, "--output-kind", "labels", "--labels-dtype",
               "int32", "--verify-size", "64x64", "--no-progress")
    assert done.exit_code == 0, done.output
    Image.fromarray(photo_like(64, 80, seed=4)).save(tmp_path / "tile.png")
    result = cli("infer", out, tmp_path / "tile.png", "-o", tmp_path / "labels", "--overlay",
                 "--no-progress")
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "labels" / "tile_labels.png") as written:
        assert written.mode.startswith("I;16")  # 16-bit ids, no palette
    labels = read_label_png(tmp_path / "labels" / "tile_labels.png")
    assert labels.shape == (64, 80) and int(labels.max()) < 300
    assert (tmp_path / "labels" / "tile_overlay.png").is_file()
