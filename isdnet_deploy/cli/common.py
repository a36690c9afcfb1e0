"""What every command shares: opening artifacts and the reference, the random-weights
warning, output checks. One place, so the commands behave alike."""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import click

from ..errors import IsdnetError, missing
from ..fileio import check_output_path
from ..profiles import DEFAULT_PROFILE, PROFILES, Profile, get_profile, parse_size
from ..runtime.openvino_backend import PRECISIONS as OPENVINO_PRECISIONS
from ..runtime.registry import BACKENDS
from ..runtime.torch_backend import COMPILE_MODES, PRECISIONS, TorchOptions

REFERENCE = "reference"
_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F)}
# Backends that take a ``threads`` option (TensorRT engines fix their own settings).
THREADED_BACKENDS = ("onnxruntime", "openvino", "torch")


def printable(text: str) -> str:
    """``text`` with control characters escaped, so a file name holding terminal escape
    sequences (ESC[2J clears the screen) is shown, not executed."""
    return str(text).translate(_CONTROL)


def warn_random_weights(opened: list[tuple[str, Any]]) -> None:
    """One loud line, once per command run, naming every opened artifact whose contract has
    no checkpoint hash, i.e. weights that were never trained (the word ``reference`` and
    exports made without a checkpoint). Call it when the work starts, after the inputs were
    checked, so a command that fails on its inputs prints only its error."""
    random = [name for name, contract in opened if contract.checkpoint_sha256 is None]
    context = click.get_current_context(silent=True)
    root = context.find_root() if context is not None else None
    if not random or (root is not None and root.meta.get("isdnet_random_warned")):
        return
    if root is not None:
        root.meta["isdnet_random_warned"] = True
    what = ", ".join(random) + (" has" if len(random) == 1 else " have")
    click.secho(f"WARNING: {what} RANDOM weights: predictions are meaningless (timings and "
                "parity are real); use a trained checkpoint for real labels.",
                fg="yellow", bold=True, err=True)


def output_file(path: str | None, suffix: str) -> Path | None:
    """An optional output file, checked before the work starts (None when not asked for)."""
    return None if path is None else check_output_path(path, suffix)


def reference_backend(checkpoint: str | None, profile: Profile, device: str,
                      threads: int | None, torch_options: TorchOptions | None = None) -> Any:
    """The PyTorch reference as a runtime backend: the checkpoint, or random weights with
    the profile's class count (``warn_random_weights`` tells the user when work starts);
    ``torch_options`` (default: eager fp32) say how it runs."""
    try:
        import torch  # noqa: F401
    except ImportError:
        raise missing("torch", why="the PyTorch reference needs it") from None
    from ..model.checkpoint import build_model, load_model
    from ..runtime.torch_backend import TorchBackend

    options = torch_options or TorchOptions()

    if checkpoint:
        model = load_model(checkpoint)
        # --profile names the classes only when the checkpoint has that many
        name = profile.name if model.num_classes == profile.num_classes else None
        return TorchBackend(None, device, model=model, profile=name, threads=threads,
                            **options.as_kwargs())
    quiet = logging.getLogger("isdnet_deploy")
    previous = quiet.level
    quiet.setLevel(logging.ERROR)  # build_model's own warning says the same
    try:
        model = build_model(profile.num_classes)
    finally:
        quiet.setLevel(previous)
    return TorchBackend(None, device, model=model, profile=profile.name, threads=threads,
                        **options.as_kwargs())


def open_artifact(spec: str, *, profile: str | None = None, device: str | None = None,
                  threads: int | None = None, scale: bool = True, backend: str = "auto",
                  torch_options: TorchOptions | None = None,
                  openvino_precision: str = "f32") -> tuple[Any, str]:
    """(Segmenter, display name) for an artifact path or the word ``reference``.

    ``device`` None means the backend's own default (CUDA for TensorRT engines).
    ``torch_options`` apply when the artifact opens with the torch backend,
    ``openvino_precision`` when it opens with OpenVINO.
    """
    from .. import runtime

    if spec == REFERENCE:
        prof = get_profile(profile or DEFAULT_PROFILE)
        opened = reference_backend(None, prof, device or "cpu", threads, torch_options)
        return runtime.Segmenter(opened, scale=scale), "reference (random weights)"
    kind = runtime.backend_for(spec, backend)
    options: dict[str, Any] = {}
    if threads and kind in THREADED_BACKENDS:
        options["threads"] = threads
    if kind == "torch" and profile:
        options["profile"] = get_profile(profile).name
    if kind == "torch" and torch_options is not None:
        options.update(torch_options.as_kwargs())
    if kind == "openvino":
        options["precision"] = openvino_precision
    segmenter = runtime.load(spec, backend, device, scale=scale, **options)
    own = segmenter.contract.profile
    if profile and own and own != get_profile(profile).name:
        segmenter.close()
        raise IsdnetError(f"{spec} was exported for profile {own}, not {profile}; drop "
                          f"--profile or pass --profile {own}")
    return segmenter, Path(spec).name


def open_segmenter(spec: str, **options: Any) -> Any:
    """The Segmenter that ``open_artifact`` gives, opened where it is called (in each Ray
    worker or replica); module-level so that ``functools.partial`` of it pickles."""
    return open_artifact(spec, **options)[0]


# --- option types and shared options: a bad value is a usage error (exit 2) ---------------

class SizeType(click.ParamType):
    """HxW (or a single side for a square), e.g. 1958x1958."""

    name = "HxW"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> tuple[int, int]:
        if isinstance(value, tuple):
            return value
        try:
            return parse_size(str(value))
        except IsdnetError as exc:
            self.fail(str(exc), param, ctx)


class DeviceType(click.ParamType):
    """cpu, cuda or cuda:N."""

    name = "cpu|cuda[:N]"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> str:
        from ..runtime.backend import Device

        try:
            return str(Device.parse(value)) if ":" in str(value) else Device.parse(value).kind
        except IsdnetError as exc:
            self.fail(str(exc), param, ctx)


class TorchVariantType(click.ParamType):
    """A torch backend setting: compile=none|inductor[:MODE], precision=fp32|fp16|bf16,
    channels_last, cuda_graphs, comma-separated."""

    name = "SPEC"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> TorchOptions:
        if isinstance(value, TorchOptions):
            return value
        try:
            return TorchOptions.parse(str(value))
        except IsdnetError as exc:
            self.fail(exc.for_cli(), param, ctx)


class ConsumersType(click.ParamType):
    """Comma-separated ONNX consumers, e.g. onnxruntime,openvino."""

    name = "CONSUMERS"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> tuple[str, ...]:
        from ..runtime.registry import ONNX_CONSUMERS

        if isinstance(value, tuple):
            return value
        names = tuple(dict.fromkeys(n.strip().lower() for n in str(value).split(",")
                                    if n.strip()))
        unknown = [n for n in names if n not in ONNX_CONSUMERS]
        if not names or unknown:
            self.fail(f"{unknown[0] if unknown else value!r} is not an ONNX consumer; choose "
                      f"from: {', '.join(ONNX_CONSUMERS)} (comma-separated)", param, ctx)
        return names


SIZE = SizeType()
DEVICE = DeviceType()
PROFILE = click.Choice(list(PROFILES), case_sensitive=False)
TORCH_VARIANT = TorchVariantType()
CONSUMERS = ConsumersType()
BACKEND = click.Choice(["auto", *BACKENDS])


def backend_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--backend`` (which runtime backend opens the artifact files) and
    ``--openvino-precision`` (how the OpenVINO backend computes)."""
    options = [
        click.option("--backend", type=BACKEND, default="auto", show_default=True,
                     help="Backend for the artifact files (auto: by extension, ONNX Runtime "
                          "for .onnx; openvino: OpenVINO's CPU plugin for .onnx)."),
        click.option("--openvino-precision", type=click.Choice(OPENVINO_PRECISIONS),
                     default="f32", show_default=True,
                     help="OpenVINO inference precision for --backend openvino (bf16: only on "
                          "CPUs with native BF16, AVX-512 BF16 or AMX; refused elsewhere)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def check_openvino_precision(precision: str, backend: str) -> None:
    """An OpenVINO precision with no artifact opened by OpenVINO is a usage error."""
    if precision == "f32" or backend == "openvino":
        return
    raise click.UsageError(f"--openvino-precision {precision} applies to artifacts opened "
                           "with --backend openvino; add --backend openvino")


def verify_on_option(what: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--verify-on onnxruntime,openvino``: the ONNX consumers ``what`` runs on."""
    return click.option("--verify-on", "verify_on", type=CONSUMERS, default=None,
                        metavar="onnxruntime,openvino",
                        help=f"ONNX consumers {what}, comma-separated  [default: onnxruntime, "
                             "plus openvino when it is installed].")


def consumers(verify_on: tuple[str, ...] | None) -> tuple[str, ...]:
    """The consumers to run: those named, each installed (else one line saying how to
    install it), or by default every installed one."""
    from ..runtime.registry import check_consumers, installed_consumers

    return check_consumers(installed_consumers() if verify_on is None else verify_on)


def max_pixels_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--max-pixels N``: the pixel budget every image's header is checked against before
    it is decoded (``data.headers``; 0 = no limit)."""
    from ..data.headers import DEFAULT_MAX_PIXELS

    return click.option(
        "--max-pixels", type=click.IntRange(min=0), default=DEFAULT_MAX_PIXELS,
        show_default=True, metavar="N",
        help="Refuse images (and masks) that declare more pixels than N, before decoding "
             "them; 0 = no limit. infer streams TIFF/GeoTIFFs above it tile by tile "
             "(needs rasterio).")(command)


def progress_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--no-progress``; bars are also off whenever stderr is not a terminal."""
    return click.option("--no-progress", is_flag=True,
                        help="No progress bars (also off when stderr is not a terminal).")(
        command)


def show_progress(no_progress: bool) -> bool:
    return not no_progress and sys.stderr.isatty()


def json_option(what: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--json FILE`` (``-`` or a bare ``--json`` at the end: stdout), the same in every
    command."""
    return click.option("--json", "json_path", default=None, metavar="FILE|-",
                        is_flag=False, flag_value="-",
                        help=f"Write {what} as JSON to FILE ('-' or a bare --json: stdout).")


def check_json_path(path: str | None) -> str | Path | None:
    """Check a --json destination before the work starts."""
    if path is None or path == "-":
        return path
    return check_output_path(path, ".json")


def write_json(path: str | Path | None, data: dict[str, Any]) -> None:
    """The one JSON spelling: indented, strict (no NaN), atomically written or printed."""
    from ..benchmark import report
    from ..metrics.segmentation import jsonable

    if path is None:
        return
    if path == "-":
        click.echo(json.dumps(jsonable(data), indent=2, allow_nan=False))
        return
    report.write_json(path, jsonable(data))
    click.echo(f"wrote {printable(path)}", err=True)


# --- the torch backend's optimisation options ---------------------------------------------

def torch_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--torch-compile``, ``--torch-precision``, ``--channels-last``, ``--cuda-graphs``,
    handed to the command as one ``torch_options: TorchOptions`` (how artifacts that open
    with the torch backend run; an impossible setting is a usage error)."""
    @functools.wraps(command)
    def with_torch_options(*args: Any, torch_compile: str, torch_precision: str,
                           channels_last: bool, cuda_graphs: bool, **kwargs: Any) -> Any:
        try:
            options = TorchOptions(torch_compile, torch_precision, channels_last, cuda_graphs)
        except IsdnetError as exc:
            raise click.UsageError(exc.for_cli()) from None
        return command(*args, torch_options=options, **kwargs)

    options = [
        click.option("--torch-compile", default="none", show_default=True,
                     metavar="none|inductor[:MODE]",
                     help="torch.compile for torch-backend artifacts (.pth, 'reference'); "
                          f"MODE: {', '.join(COMPILE_MODES)}."),
        click.option("--torch-precision", type=click.Choice(PRECISIONS), default="fp32",
                     show_default=True,
                     help="Autocast precision for torch-backend artifacts (fp16: CUDA only)."),
        click.option("--channels-last", is_flag=True,
                     help="NHWC memory order for torch-backend artifacts."),
        click.option("--cuda-graphs", is_flag=True,
                     help="Record one CUDA graph per input size and replay it (torch "
                          "backend, --device cuda only)."),
    ]
    for option in reversed(options):
        with_torch_options = option(with_torch_options)
    return with_torch_options


def torch_variant_option(what: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--torch-variant SPEC``, repeatable: the PyTorch reference again under other
    settings, e.g. ``compile=inductor,precision=bf16``."""
    return click.option("--torch-variant", "torch_variants", type=TORCH_VARIANT, multiple=True,
                        help=f"{what} Repeat for several. SPEC: comma-separated "
                             "compile=none|inductor[:MODE], precision=fp32|fp16|bf16, "
                             "channels_last, cuda_graphs (e.g. compile=inductor,precision=bf16).")


def check_torch_settings(settings: Iterable[TorchOptions], device: str | None) -> None:
    """Settings the device cannot run are usage errors, found before any work starts."""
    from ..runtime.backend import Device

    for options in settings:
        try:
            options.check_device(Device.parse(device or "cpu"))
        except IsdnetError as exc:
            raise click.UsageError(exc.for_cli()) from None


def is_torch_artifact(spec: str, backend: str = "auto") -> bool:
    """Whether ``spec`` opens with the torch backend (a .pth file or ``reference``)."""
    from .. import runtime

    return spec == REFERENCE or runtime.backend_for(spec, backend) == "torch"


def require_torch_artifact(options: TorchOptions, specs: Iterable[str], backend: str = "auto",
                           instead: str = "") -> None:
    """Torch settings with no torch-backend artifact to apply them to are a usage error."""
    if options.is_reference or any(is_torch_artifact(s, backend) for s in specs):
        return
    raise click.UsageError(f"--torch-compile/--torch-precision/--channels-last/--cuda-graphs "
                           f"apply to torch-backend artifacts (.pth or 'reference'), and none "
                           f"is given{instead}")
