"""Loading official ISDNet checkpoints (mmsegmentation 0.16 layout) into ``ISDNet``.

The key map is explicit: ``module.`` prefixes are stripped, the 52 training-only keys are
dropped, and the shallow net's aliases (``stdc_net.x2.0.0`` … ``x16.0.5``, which the
official model registers a second time over the same modules) fold into
``stdc_net.features.N``. Everything else must match the model exactly.
"""

from __future__ import annotations

import hashlib
import logging
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from ..errors import IsdnetError
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


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """torch.load with ``weights_only=True`` and one-line errors for unusable files."""
    path = Path(path)
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
    if is_zip and not zipfile.is_zipfile(path):
        raise IsdnetError(f"{path} is truncated or corrupt (its zip directory is missing); "
                          f"download or copy it again")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for damaged files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise IsdnetError(
                f"{path} holds Python objects besides tensors, which are not loaded for "
                f"safety ({first[:120]}); re-save only its state_dict with torch.save"
            ) from None
        raise IsdnetError(f"{path} is truncated or corrupt ({first[:160]})") from None
    if not isinstance(obj, dict):
        raise IsdnetError(f"{path} holds a {type(obj).__name__}, not a checkpoint dict")
    return obj


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


def load_model(path: str | Path, num_classes: int | None = None) -> ISDNet:
    """An ``ISDNet`` in eval mode with the checkpoint's weights.

    The number of classes comes from the checkpoint's classifier; passing ``num_classes``
    only checks it.
    """
    source = str(path)
    raw = read_checkpoint(path)
    state = normalize_keys(extract_state_dict(raw, source), source)
    found = num_classes_of(state, source)
    if num_classes is not None and num_classes != found:
        raise IsdnetError(f"{source} has {found} classes, but {num_classes} were asked for")
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
