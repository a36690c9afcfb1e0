"""Loading official ISDNet checkpoints (mmsegmentation 0.16 layout) into ``ISDNet``.

The key map is explicit: ``module.`` prefixes are stripped, the 52 training-only keys are
dropped, and the shallow net's aliases (``stdc_net.x2.0.0`` … ``x16.0.5``, which the
official model registers a second time over the same modules) fold into
``stdc_net.features.N``. Everything else must match the model exactly.

A checkpoint is a file from elsewhere, so its sizes are checked before torch reads it
(``scan_checkpoint``): the zip directory's entry count and total uncompressed size, and,
from the object table alone (no tensor data read, nothing imported), that every storage
matches its record and every tensor fits in its storage (a stride-0 tensor can declare
any shape over one element), and the class count, which sizes the model built for it.
After loading, non-finite weights are refused by name.
"""

from __future__ import annotations

import codecs
import collections
import hashlib
import io
import logging
import math
import os
import pickle
import re
import struct
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import torch

from ..contract import MAX_CLASSES, MAX_WIDE_CLASSES
from ..errors import IsdnetError, one_line
from .isdnet import ISDNet

log = logging.getLogger(__name__)

TRAINING_ONLY_PREFIXES = (
    "auxiliary_head.",
    "decode_head.conv_seg.",
    "refine_head.conv_seg_aux_16.",
    "refine_head.conv_seg_aux_8.",
    "refine_head.sr_decoder.",
)
CLASSIFIER_KEY = "refine_head.conv_seg.conv_out.weight"
_ALIAS = re.compile(r"^refine_head\.stdc_net\.x(?:2|4|8|16)\.0\.(\d+)\.(.*)$")
_SHOW = 5
MIB = 1 << 20
# The official checkpoints' state dict is 73 MiB (a training checkpoint with optimizer
# state about twice that); 2 GiB leaves room for any ISDNet variant and refuses a file
# that would make torch allocate more.
MAX_CHECKPOINT_BYTES = 2 << 30
MAX_PICKLE_BYTES = 64 << 20
# Element sizes of the storage classes torch.save names (torch.<Name>Storage).
_STORAGE_ITEMSIZE = {
    "DoubleStorage": 8, "FloatStorage": 4, "HalfStorage": 2, "BFloat16Storage": 2,
    "LongStorage": 8, "IntStorage": 4, "ShortStorage": 2, "CharStorage": 1,
    "ByteStorage": 1, "BoolStorage": 1, "ComplexDoubleStorage": 16,
    "ComplexFloatStorage": 8, "QInt8Storage": 1, "QUInt8Storage": 1, "QInt32Storage": 4,
    "QUInt4x2Storage": 1, "QUInt2x4Storage": 1, "UntypedStorage": 1,
}


@dataclass(frozen=True)
class _Storage:
    key: str
    itemsize: int
    numel: int


@dataclass(frozen=True)
class TensorRecord:
    """A tensor as the checkpoint declares it, without its data."""

    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


class _Placeholder:
    """Any object the scan does not need: built, called and given state without effect."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def __setstate__(self, state: object) -> None:
        pass


class _StorageType:
    def __init__(self, name: str) -> None:
        self.name = name


def _rebuild_tensor(storage: object, offset: object, size: object, stride: object,
                    *rest: object) -> object:
    if not isinstance(storage, _Storage):
        return _Placeholder()
    if not (isinstance(offset, int) and isinstance(size, tuple) and isinstance(stride, tuple)
            and len(size) == len(stride)
            and all(isinstance(v, int) and not isinstance(v, bool) for v in (*size, *stride))):
        raise ValueError("a tensor has malformed size or stride")
    return TensorRecord(storage, offset, size, stride)


def _first(data: object, *rest: object) -> object:
    return data


def _rebuild_from_type(func: object, kind: object, args: object, state: object) -> object:
    return func(*args) if callable(func) and isinstance(args, tuple) else _Placeholder()


_SAFE_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _first,
    ("torch._utils", "_rebuild_parameter_with_state"): _first,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type,
    ("torch", "Size"): tuple,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("_codecs", "encode"): codecs.encode,
}


class _ScanUnpickler(pickle._Unpickler):
    """Reads a checkpoint's object table, not its data: tensors become ``TensorRecord``s,
    every other global a placeholder; nothing is imported or run. The pure-Python
    unpickler is used on purpose: its memo is a dict, where the C one allocates an array
    as long as the largest memo index a file names."""

    def __init__(self, file: BinaryIO) -> None:
        super().__init__(file)
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SAFE_GLOBALS:
            return _SAFE_GLOBALS[module, name]
        if module in ("torch", "torch.storage") and name.endswith("Storage"):
            return _StorageType(name)
        return type(name, (_Placeholder,), {})

    def persistent_load(self, pid: Any) -> Any:
        # zip: ('storage', type, key, location, numel); legacy: (..., numel, view metadata)
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] in ("storage", b"storage")):
            raise ValueError("an unknown persistent reference")
        kind, key, numel = pid[1], str(pid[2]), pid[4]
        if not isinstance(kind, _StorageType) or kind.name not in _STORAGE_ITEMSIZE:
            name = getattr(kind, "name", type(kind).__name__)
            raise ValueError(f"storage type {name} is not one this check knows")
        if not isinstance(numel, int) or numel < 0:
            raise ValueError(f"storage {key} declares {numel!r} elements")
        storage = _Storage(key, _STORAGE_ITEMSIZE[kind.name], numel)
        if self.storages.setdefault(key, storage) != storage:
            raise ValueError(f"storage {key} is declared twice with different sizes")
        return storage

MAX_ZIP_ENTRIES = 100_000  # a state dict has one record per tensor: ISDNet's has 560
MAX_ZIP_DIRECTORY = 32 * MIB


@dataclass(frozen=True)
class CheckpointScan:
    """What a checkpoint declares, read without loading it."""

    tensors: dict[str, TensorRecord]  # state-dict key -> tensor, as in the file
    data_bytes: int  # bytes the tensors' storages take

    def num_classes(self) -> int | None:
        for key in (CLASSIFIER_KEY, f"module.{CLASSIFIER_KEY}"):
            record = self.tensors.get(key)
            if record is not None and record.shape:
                return record.shape[0]
        return None


def _zip_directory(f: BinaryIO) -> tuple[int, int]:
    """(entries, bytes) of a zip file's central directory, from its end records."""
    size = f.seek(0, os.SEEK_END)
    length = min(size, 65536 + 22)
    f.seek(size - length)
    tail = f.read(length)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + 22 > len(tail):
        raise ValueError("no end of central directory")
    entries, directory = struct.unpack("<HI", tail[at + 10:at + 16])
    if entries == 0xFFFF or directory == 0xFFFFFFFF:  # ZIP64
        locator = tail.rfind(b"PK\x06\x07", 0, at)
        if locator < 0:
            raise ValueError("a ZIP64 archive without its locator")
        (offset,) = struct.unpack("<Q", tail[locator + 8:locator + 16])
        f.seek(offset)
        record = f.read(56)
        if record[:4] != b"PK\x06\x06" or len(record) < 56:
            raise ValueError("a damaged ZIP64 end record")
        entries, directory = struct.unpack("<QQ", record[32:48])
    return entries, directory


def _tensors(root: object) -> dict[str, TensorRecord]:
    """The tensors of a loaded object table, by state-dict key (the ``state_dict`` entry of
    a full checkpoint, or the table itself); every other tensor under a '?' key. The walk
    is iterative and visits each object once, however the table shares them."""
    state = root.get("state_dict", root) if isinstance(root, dict) else root
    found: dict[str, TensorRecord] = {}
    if isinstance(state, dict):
        found.update({k: v for k, v in state.items()
                      if isinstance(k, str) and isinstance(v, TensorRecord)})
    seen = {id(record) for record in found.values()}
    stack = [root]
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, TensorRecord):
            found.setdefault(f"?{len(found)}", item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            stack.extend(item)
    return found


def _check_tensor(name: str, record: TensorRecord, source: str) -> None:
    """A tensor must fit in its storage without reusing elements: a stride-0 or otherwise
    overlapping tensor can declare any shape over a tiny storage."""
    if any(d < 0 for d in record.shape) or any(d < 0 for d in record.stride) \
            or record.offset < 0:
        raise IsdnetError(f"{source}: tensor {name} declares a negative size, stride or offset;"
                          " the file is damaged: download or copy it again")
    numel = math.prod(record.shape)
    end = record.offset + sum((d - 1) * s for d, s in zip(record.shape, record.stride,
                                                          strict=True)) + 1 if numel else 0
    if numel > record.storage.numel or end > record.storage.numel:
        raise IsdnetError(
            f"{source}: tensor {name} declares shape {tuple(record.shape)} over a storage of "
            f"{record.storage.numel} elements (stride {tuple(record.stride)}): more elements "
            "than it holds, which would be allocated when used; the file is damaged or was "
            "crafted: re-save the real state_dict with torch.save")


def scan_checkpoint(path: str | Path, max_bytes: int = MAX_CHECKPOINT_BYTES) -> CheckpointScan:
    """Sizes and tensors a torch.save file declares, checked, before anything is loaded.

    Refuses a file or an uncompressed archive larger than ``max_bytes``, a zip directory
    of absurd size, storages that disagree with their records (or, in the pre-1.6 format,
    with the bytes that follow), and tensors larger than their storage.
    """
    path = Path(path)
    source = str(path)
    _check_file(path)
    size = path.stat().st_size
    budget = (f"the {max_bytes / MIB:.0f} MiB a checkpoint may take (load_model's max_bytes= "
              "raises it for a genuine file)")
    if size > max_bytes:
        raise IsdnetError(f"{source} is {size / MIB:.0f} MiB, more than {budget}")
    try:
        with open(path, "rb") as f:
            if f.read(2) == b"PK":
                return _scan_zip(f, source, max_bytes, budget)
            f.seek(0)
            return _scan_legacy(f, source, size)
    except IsdnetError:
        raise
    except Exception as exc:  # a damaged archive or object table raises many types
        raise IsdnetError(f"{source} is truncated or corrupt ({type(exc).__name__}: "
                          f"{one_line(exc)}); download or copy it again") from exc


def _scan_zip(f: BinaryIO, source: str, max_bytes: int, budget: str) -> CheckpointScan:
    entries, directory = _zip_directory(f)
    if entries > MAX_ZIP_ENTRIES or directory > MAX_ZIP_DIRECTORY:
        raise IsdnetError(f"{source}'s zip directory lists {entries} entries in "
                          f"{directory / MIB:.1f} MiB; a checkpoint has one per tensor (at most"
                          f" {MAX_ZIP_ENTRIES}): the file is damaged or was crafted")
    f.seek(0)
    with zipfile.ZipFile(f) as archive:
        infos = {info.filename: info for info in archive.infolist()}
        total = sum(info.file_size for info in infos.values())
        if total > max_bytes:
            raise IsdnetError(f"{source} unpacks to {total / MIB:.0f} MiB, more than {budget}")
        tables = [name for name in infos if name.endswith("data.pkl")]
        if len(tables) != 1:
            raise IsdnetError(f"{source} is a zip archive but not a torch.save checkpoint "
                              f"({len(tables)} object tables); re-save it with torch.save")
        prefix = tables[0][:-len("data.pkl")]
        if infos[tables[0]].file_size > MAX_PICKLE_BYTES:
            raise IsdnetError(f"{source}'s object table is {infos[tables[0]].file_size / MIB:.0f}"
                              f" MiB, more than the {MAX_PICKLE_BYTES / MIB:.0f} MiB any "
                              "checkpoint needs: the file is damaged or was crafted")
        unpickler = _ScanUnpickler(io.BytesIO(archive.read(tables[0])))
        root = unpickler.load()
    data_bytes = 0
    for key, storage in unpickler.storages.items():
        record = infos.get(f"{prefix}data/{key}")
        wanted = storage.numel * storage.itemsize
        if record is None or record.file_size != wanted:
            held = "no record" if record is None else f"{record.file_size} bytes"
            raise IsdnetError(f"{source}: storage {key} declares {wanted} bytes but the archive "
                              f"holds {held} for it; the file is damaged: download or copy it "
                              "again")
        data_bytes += wanted
    return _checked(root, source, data_bytes)


def _scan_legacy(f: BinaryIO, source: str, size: int) -> CheckpointScan:
    """The pre-1.6 format: pickles of a magic number, a protocol version and system info,
    the object table, the storage keys, then each storage's bytes."""
    for _ in range(3):
        _ScanUnpickler(f).load()
    unpickler = _ScanUnpickler(f)
    root = unpickler.load()
    _ScanUnpickler(f).load()
    data_bytes = sum(8 + s.numel * s.itemsize for s in unpickler.storages.values())
    if data_bytes > size - f.tell():
        raise IsdnetError(f"{source}'s storages declare {data_bytes} bytes but only "
                          f"{size - f.tell()} follow them; the file is truncated or damaged: "
                          "download or copy it again")
    return _checked(root, source, data_bytes)


def _checked(root: object, source: str, data_bytes: int) -> CheckpointScan:
    tensors = _tensors(root)
    for name, record in tensors.items():
        _check_tensor(name, record, source)
    return CheckpointScan(tensors, data_bytes)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_checkpoint(path: str | Path, max_bytes: int = MAX_CHECKPOINT_BYTES,
                    scan: CheckpointScan | None = None) -> dict[str, Any]:
    """torch.load with ``weights_only=True`` and one-line errors for unusable files, after
    ``scan_checkpoint`` (unless ``scan`` is given, i.e. done already)."""
    path = Path(path)
    _check_file(path)
    if scan is None:
        scan_checkpoint(path, max_bytes)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for damaged files
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise IsdnetError(
                f"{path} holds Python objects besides tensors, which are not loaded for "
                f"safety ({one_line(exc)}); re-save only its state_dict with torch.save"
            ) from exc
        raise IsdnetError(f"{path} is truncated or corrupt ({one_line(exc)})") from exc
    if not isinstance(obj, dict):
        raise IsdnetError(f"{path} holds a {type(obj).__name__}, not a checkpoint dict")
    return obj


def _check_file(path: Path) -> None:
    """An existing torch.save file (zip, or the pre-1.6 pickle format) with its zip
    directory, checked by its first bytes."""
    if not path.exists():
        raise IsdnetError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise IsdnetError(f"checkpoint path is a directory, not a file: {path}")
    with open(path, "rb") as f:
        head = f.read(4)
    is_zip = head.startswith(b"PK")
    is_pickle = head[:1] == b"\x80"
    if not (is_zip or is_pickle):
        raise IsdnetError(f"{path} is not a PyTorch checkpoint (expected a .pth/.pt file "
                          f"written by torch.save)")
    try:
        readable_zip = not is_zip or zipfile.is_zipfile(path)
    except zipfile.BadZipFile as exc:  # is_zipfile lets some damaged end records through
        raise IsdnetError(f"{path} is corrupt ({exc}); download or copy it again") from exc
    if not readable_zip:
        raise IsdnetError(f"{path} is truncated or corrupt (its zip directory is missing); "
                          f"download or copy it again")


def extract_state_dict(obj: dict[str, Any], source: str = "checkpoint") -> dict[str, Any]:
    state = obj.get("state_dict", obj)
    if not isinstance(state, dict):
        raise IsdnetError(f"{source}: 'state_dict' is a {type(state).__name__}, not a dict")
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise IsdnetError(f"{source} contains no tensors; is it a model checkpoint?")
    return tensors


def normalize_keys(state: dict[str, torch.Tensor],
                   source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Apply the explicit key map: prefix, training-only keys, shallow-net aliases."""
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    dropped = [k for k in state if k.startswith(TRAINING_ONLY_PREFIXES)]
    if dropped:
        log.info("ignoring %d training-only keys (auxiliary heads, SR decoder)", len(dropped))
    state = {k: v for k, v in state.items() if not k.startswith(TRAINING_ONLY_PREFIXES)}

    out: dict[str, torch.Tensor] = {k: v for k, v in state.items() if not _ALIAS.match(k)}
    for key, value in state.items():
        match = _ALIAS.match(key)
        if not match:
            continue
        canonical = f"refine_head.stdc_net.features.{match[1]}.{match[2]}"
        if canonical in out:
            other = out[canonical]
            if other.shape != value.shape or not torch.equal(other, value):
                raise IsdnetError(
                    f"{source}: aliased keys disagree: {key} and {canonical} should hold the "
                    f"same weights; keep one of them or re-export the checkpoint")
        else:
            out[canonical] = value
    return out


def check_keys(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:_SHOW])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:_SHOW])})")
        raise IsdnetError(f"{source} is not an ISDNet checkpoint: keys differ: "
                          f"{'; '.join(parts)}")
    for key, tensor in expected.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise IsdnetError(f"{source}: shape mismatch for {key}: model expects "
                              f"{tuple(tensor.shape)}, checkpoint has {tuple(state[key].shape)}")


def num_classes_of(state: dict[str, torch.Tensor], source: str = "checkpoint") -> int:
    if CLASSIFIER_KEY not in state:
        raise IsdnetError(f"{source} is not an ISDNet checkpoint: it has no {CLASSIFIER_KEY} "
                          f"(first keys: {', '.join(list(state)[:_SHOW])})")
    return int(state[CLASSIFIER_KEY].shape[0])


def check_num_classes(found: int, source: str, max_classes: int = MAX_CLASSES) -> None:
    """The palette rule: labels are uint8 (ids 0..255, one palette colour each), so a model
    has 1..256 classes; a model with more can only be exported with int32 labels (16-bit
    label maps without a palette, up to 65536 classes)."""
    if 1 <= found <= max_classes:
        return
    if found < 1:
        raise IsdnetError(f"{source}'s classifier has {found} classes; a segmentation model has "
                          "at least 1: the file is damaged")
    rule = (f"{source} has {found} classes; label maps are uint8, palette-indexed (ids "
            f"0..255, one colour each), so a model has 1..{MAX_CLASSES} classes")
    if found > MAX_WIDE_CLASSES:
        raise IsdnetError(f"{rule}, or up to {MAX_WIDE_CLASSES} with int32 labels (16-bit label "
                          "maps); this checkpoint cannot be deployed")
    raise IsdnetError(f"{rule}; load it with max_classes={MAX_WIDE_CLASSES} and export it with "
                      "output='labels', labels_dtype='int32' (16-bit label maps, no palette)",
                      cli=f"{rule}; export it with --output-kind labels --labels-dtype int32 "
                          "(16-bit label maps, no palette)")


def nonfinite_weights(state: dict[str, torch.Tensor]) -> list[str]:
    """Keys of floating-point tensors holding NaN or infinity."""
    return [key for key, tensor in state.items()
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]


def describe_nonfinite(keys: list[str]) -> str:
    more = f" (+{len(keys) - _SHOW} more)" if len(keys) > _SHOW else ""
    return (f"non-finite weights (NaN or infinity) in {len(keys)} tensor(s): "
            f"{', '.join(keys[:_SHOW])}{more}")


def load_model(path: str | Path, num_classes: int | None = None, *,
               max_classes: int = MAX_CLASSES, max_bytes: int = MAX_CHECKPOINT_BYTES
               ) -> ISDNet:
    """An ``ISDNet`` in eval mode with the checkpoint's weights.

    The number of classes comes from the checkpoint's classifier; passing ``num_classes``
    only checks it. It is checked against ``max_classes`` (the palette rule,
    ``check_num_classes``) from the file's object table, before anything is loaded or
    built; non-finite weights are refused by name.
    """
    source = str(path)
    declared = scan_checkpoint(path, max_bytes)
    if declared.num_classes() is not None:
        check_num_classes(declared.num_classes(), source, max_classes)
    raw = read_checkpoint(path, max_bytes, scan=declared)
    state = normalize_keys(extract_state_dict(raw, source), source)
    found = num_classes_of(state, source)
    check_num_classes(found, source, max_classes)
    if num_classes is not None and num_classes != found:
        raise IsdnetError(f"{source} has {found} classes, but {num_classes} were asked for")
    bad = nonfinite_weights(state)
    if bad:
        raise IsdnetError(f"{source} has {describe_nonfinite(bad)}: training diverged or the "
                          "file is damaged; use an earlier checkpoint")
    model = ISDNet(num_classes=found)
    check_keys(model, state, source)
    model.load_state_dict(state, strict=True)
    model.eval()
    model.checkpoint_sha256 = file_sha256(path)
    meta = raw.get("meta") if isinstance(raw.get("meta"), dict) else {}
    model.checkpoint_meta = {k: meta[k] for k in ("CLASSES", "PALETTE") if k in meta}
    return model


LOGIT_STD = 4.0
_POOLED_NORMS = ("decode_head.image_pool.1.bn",)


def smooth_random_images(count: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """Normalised images with photo-like spatial correlation (noise at 1/16 size,
    bilinearly enlarged, plus fine grain) rather than white noise."""
    coarse = torch.randn(count, 3, max(size // 16, 2), max(size // 16, 2), generator=generator)
    image = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear",
                                            align_corners=False)
    return image + 0.2 * torch.randn(count, 3, size, size, generator=generator)


def build_model(num_classes: int = 7, seed: int = 0) -> ISDNet:
    """An ``ISDNet`` with random weights, for trying the toolkit without a checkpoint.

    BatchNorm statistics are measured on random images (one training-mode pass) and the
    fusion gains g1, g2 are non-zero, so every path of the network carries signal and
    parity checks test all of it, as with trained weights.
    """
    log.warning("building ISDNet with RANDOM weights (seed %d): outputs are meaningless; "
                "pass a checkpoint for real predictions", seed)
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = ISDNet(num_classes=num_classes)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.normal_(0.0, 0.1, generator=generator)
                module.momentum = None  # cumulative average over the calibration pass
                module.reset_running_stats()
        for fusion in (model.refine_head.fuse16, model.refine_head.fuse8):
            fusion.g1.normal_(0.0, 1.0, generator=generator)
            fusion.g2.normal_(0.0, 1.0, generator=generator)
        images = smooth_random_images(4, 512, generator)
        model.train()
        model(images)
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.momentum = 0.1
                if name in _POOLED_NORMS or name.endswith("conv_1x1.bn"):
                    # These see one spatial mean per image: 4 images give no usable
                    # variance (it comes out ~1e-6 and the layer would amplify rounding
                    # errors a thousandfold), so they keep identity statistics.
                    module.reset_running_stats()
        model.eval()
        # Trained ISDNet logits span a few units; scale the random classifier likewise so
        # absolute parity tolerances (1e-4) mean what they mean for real checkpoints.
        scale = LOGIT_STD / float(model(images).std())
        model.refine_head.conv_seg.conv_out.weight.mul_(scale)
        model.refine_head.conv_seg.conv_out.bias.mul_(scale)
    model.checkpoint_sha256 = None
    model.checkpoint_meta = {}
    return model
