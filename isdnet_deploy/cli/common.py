"""What every command shares: opening artifacts and the reference, the random-weights
warning, output checks. One place, so the commands behave alike."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click

from ..errors import IsdnetError, missing
from ..fileio import check_output_path
from ..profiles import DEFAULT_PROFILE, Profile, get_profile

REFERENCE = "reference"
# Backends that take a ``threads`` option (TensorRT engines fix their own settings).
THREADED_BACKENDS = ("onnxruntime", "torch")


def warn_random_weights(what: str) -> None:
    """One loud line per command run, whichever artifact first turns out random."""
    context = click.get_current_context(silent=True)
    if context is not None:
        root = context.find_root()
        if root.meta.get("isdnet_random_warned"):
            return
        root.meta["isdnet_random_warned"] = True
    click.secho(f"WARNING: {what} has RANDOM weights: its predictions are meaningless "
                "(timings and parity are real); use a trained checkpoint for real labels.",
                fg="yellow", bold=True, err=True)


def output_file(path: str | None, suffix: str) -> Path | None:
    """An optional output file, checked before the work starts (None when not asked for)."""
    return None if path is None else check_output_path(path, suffix)


def reference_backend(checkpoint: str | None, profile: Profile, device: str,
                      threads: int | None) -> Any:
    """The PyTorch reference as a runtime backend: the checkpoint, or random weights
    (warned) with the profile's class count."""
    try:
        import torch  # noqa: F401
    except ImportError:
        raise missing("torch", why="the PyTorch reference needs it") from None
    from ..model.checkpoint import build_model, load_model
    from ..runtime.torch_backend import TorchBackend

    if checkpoint:
        model = load_model(checkpoint)
        # --profile names the classes only when the checkpoint has that many
        name = profile.name if model.num_classes == profile.num_classes else None
        return TorchBackend(None, device, model=model, profile=name, threads=threads)
    warn_random_weights(f"the PyTorch reference ({profile.name}, {profile.num_classes} classes)")
    quiet = logging.getLogger("isdnet_deploy")
    previous = quiet.level
    quiet.setLevel(logging.ERROR)  # build_model's own warning says the same
    try:
        model = build_model(profile.num_classes)
    finally:
        quiet.setLevel(previous)
    return TorchBackend(None, device, model=model, profile=profile.name, threads=threads)


def open_artifact(spec: str, *, profile: str | None = None, device: str | None = None,
                  threads: int | None = None, scale: bool = True, backend: str = "auto"
                  ) -> tuple[Any, str]:
    """(Segmenter, display name) for an artifact path or the word ``reference``.

    ``device`` None means the backend's own default (CUDA for TensorRT engines).
    """
    from .. import runtime

    if spec == REFERENCE:
        prof = get_profile(profile or DEFAULT_PROFILE)
        opened = reference_backend(None, prof, device or "cpu", threads)
        return runtime.Segmenter(opened, scale=scale), "reference (random weights)"
    kind = runtime.backend_for(spec, backend)
    options: dict[str, Any] = {}
    if threads and kind in THREADED_BACKENDS:
        options["threads"] = threads
    if kind == "torch" and profile:
        options["profile"] = get_profile(profile).name
    segmenter = runtime.load(spec, backend, device, scale=scale, **options)
    own = segmenter.contract.profile
    if profile and own and own != get_profile(profile).name:
        segmenter.close()
        raise IsdnetError(f"{spec} was exported for profile {own}, not {profile}; drop "
                          f"--profile or pass --profile {own}")
    return segmenter, Path(spec).name
