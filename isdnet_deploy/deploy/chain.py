"""One recipe, run from checkpoint to engine: export -> precision -> engine -> benchmark.

Each step calls the function its own command calls (``export_onnx``, ``convert_fp16`` /
``quantize_int8``, ``build_engine``, the benchmark protocol), so the chain verifies exactly
as they do: the export against PyTorch on ONNX Runtime before its file appears, the
precision transform against the FP32 ONNX before its file appears.

Resuming: every finished step is recorded in ``deploy-journal.json`` (written atomically)
with a fingerprint of what it depends on (its recipe settings, the checkpoint's or its input
file's sha256, the calibration images, the tool version) and the sha256 of every file it
wrote. A rerun reuses a step whose fingerprint is unchanged and whose files still hash the
same, and runs the others, so a failure in the precision step costs only that step on the
next run. ``manifest.json`` is deleted when a run starts and written only when every step
succeeded: a folder with a manifest holds a finished, consistent deployment.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shlex
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import IsdnetError, MissingDependencyError, one_line
from ..fileio import atomic_write_bytes, check_writable_dir
from ..profiles import get_profile
from .recipe import RECIPES_DIR, Recipe, size_tuple

STEPS = ("export", "precision", "engine", "benchmark")
JOURNAL = "deploy-journal.json"
MANIFEST = "manifest.json"
ONNX_FILE = "model.onnx"
ENGINE_FILE = "model.engine"
JOURNAL_VERSION = 1
MIB = 2**20
TENSORRT_MISSING = ("engine step skipped: TensorRT not installed; the ONNX in {folder} is "
                    "ready for `isdnet-deploy build`")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(MIB), b""):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(settings: dict[str, Any]) -> str:
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class StepOutcome:
    """``status``: ran, reused, skipped (with the reason in ``result``), or not asked."""

    name: str
    status: str
    seconds: float = 0.0
    artifacts: dict[str, str] = field(default_factory=dict)  # file name -> sha256
    result: dict[str, Any] = field(default_factory=dict)


class Journal:
    """The finished steps of earlier runs in one folder; see the module docstring."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / JOURNAL
        self.steps: dict[str, dict[str, Any]] = self._read()

    def _read(self) -> dict[str, dict[str, Any]]:
        """An unreadable or foreign journal is no journal: every step runs again."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            steps = data["steps"] if data.get("version") == JOURNAL_VERSION else {}
            return {k: v for k, v in steps.items() if k in STEPS and isinstance(v, dict)}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return {}

    def reusable(self, name: str, print_: str) -> dict[str, Any] | None:
        entry = self.steps.get(name)
        if entry is None or entry.get("fingerprint") != print_:
            return None
        for file, digest in entry.get("artifacts", {}).items():
            path = self.folder / file
            if not path.is_file() or sha256_file(path) != digest:
                return None
        return entry

    def record(self, name: str, entry: dict[str, Any]) -> None:
        from ..metrics.segmentation import jsonable

        self.steps[name] = entry
        data = {"version": JOURNAL_VERSION, "steps": self.steps}
        atomic_write_bytes(self.path, json.dumps(jsonable(data), indent=2,
                                                 allow_nan=False).encode())


@dataclass
class DeployResult:
    folder: Path
    manifest: dict[str, Any]
    steps: list[StepOutcome]


def rerun_command(recipe: Recipe, checkpoint: str | None, folder: Path,
                  calib: str | None) -> str:
    """The command line that runs (or resumes) this deployment."""
    shipped = Path(recipe.source).resolve().parent == RECIPES_DIR
    words = ["isdnet-deploy", "deploy"] + ([checkpoint] if checkpoint else [])
    words += ["--recipe", recipe.name if shipped else recipe.source, "-o", str(folder)]
    words += ["--calib", calib] if calib else []
    for override in recipe.overrides:
        words += ["--set", override]
    return " ".join(shlex.quote(w) for w in words)


class _Chain:
    def __init__(self, recipe: Recipe, checkpoint: str | None, folder: Path,
                 calib: str | None, progress: bool, echo: Callable[[str], None]) -> None:
        self.recipe, self.checkpoint, self.folder = recipe, checkpoint, folder
        self.calib, self.progress, self.echo = calib, progress, echo
        self.journal = Journal(folder)
        self._model: Any = None
        profile = get_profile(recipe.profile)
        # ``weights`` identifies them in fingerprints (a moved checkpoint is the same one);
        # ``source`` also says where they came from, for the manifest.
        if checkpoint:
            self.weights = {"sha256": sha256_file(Path(checkpoint))}
            self.source = {"checkpoint": checkpoint, **self.weights}
        else:
            self.weights = {"random_weights": {"seed": 0, "num_classes": profile.num_classes}}
            self.source = {"checkpoint": None, **self.weights}
        self.calib_files = self._calibration_files()

    def _calibration_files(self) -> list[list[Any]]:
        """Names, sizes and times of the calibration images (``check_inputs`` checked the
        folder): part of the precision step's fingerprint."""
        if self.calib is None:
            return []
        from ..engine.calibration import list_calibration_images

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the mask note is shown by the precision step
            images = list_calibration_images(self.calib)
        return [[str(p.relative_to(self.calib)), p.stat().st_size, p.stat().st_mtime_ns]
                for p in images]

    # --- the model, loaded only when a step needs it -------------------------------------

    def model(self) -> Any:
        if self._model is not None:
            return self._model
        from ..contract import MAX_CLASSES, MAX_WIDE_CLASSES
        from ..model.checkpoint import build_model, load_model

        profile = get_profile(self.recipe.profile)
        ex = self.recipe["export"]
        if self.checkpoint:
            wide = ex["output"] == "labels" and ex["labels_dtype"] == "int32"
            model = load_model(self.checkpoint,
                               max_classes=MAX_WIDE_CLASSES if wide else MAX_CLASSES)
            if model.num_classes != profile.num_classes:
                raise IsdnetError(
                    f"{self.checkpoint} has {model.num_classes} classes but recipe "
                    f"{self.recipe.name} is for {profile.name} ({profile.num_classes} "
                    "classes); pick a recipe for the checkpoint's dataset")
        else:
            model = build_model(profile.num_classes)
        self._model = model
        return model

    # --- one step: reuse, or run and journal ---------------------------------------------

    def step(self, name: str, settings: dict[str, Any],
             work: Callable[[], tuple[list[str], dict[str, Any]]]) -> StepOutcome:
        print_ = fingerprint({"step": name, "tool_version": __version__, **settings})
        entry = self.journal.reusable(name, print_)
        if entry is not None:
            files = ", ".join(entry["artifacts"]) or "its figures"
            self.echo(f"{name}: reused from the last run (same settings and inputs; {files} "
                      "unchanged)")
            return StepOutcome(name, "reused", entry["seconds"], entry["artifacts"],
                               entry["result"])
        start = time.perf_counter()
        try:
            files, result = work()
        except IsdnetError as exc:
            raise self._failed(name, str(exc), exc.for_cli()) from None
        except Exception as exc:  # a library's own error (ONNX Runtime, TensorRT, torch)
            text = f"{type(exc).__name__}: {one_line(exc)}"
            raise self._failed(name, text, text) from exc
        seconds = time.perf_counter() - start
        artifacts = {f: sha256_file(self.folder / f) for f in files}
        self.journal.record(name, {
            "fingerprint": print_, "artifacts": artifacts, "result": result,
            "seconds": seconds,
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")})
        return StepOutcome(name, "ran", seconds, artifacts, result)

    def _failed(self, name: str, message: str, cli: str) -> IsdnetError:
        done = [s for s in STEPS[:STEPS.index(name)] if s in self.journal.steps]
        resume = (f"; rerunning the same command reuses {', '.join(done)}" if done else "")
        text = "deploy step {step} failed: {why}; no manifest was written{resume}"
        return IsdnetError(text.format(step=name, why=message, resume=resume),
                           cli=text.format(step=name, why=cli, resume=resume))

    # --- the steps ---------------------------------------------------------------------------

    def export(self) -> StepOutcome:
        from ..export.onnx_export import export_onnx

        ex, verify = self.recipe["export"], self.recipe["verify"]
        settings = {"profile": self.recipe.profile, "export": ex, "weights": self.weights,
                    "verify": {k: verify[k] for k in ("size", "atol", "rtol")}}

        def work() -> tuple[list[str], dict[str, Any]]:
            report = export_onnx(
                self.model(), self.folder / ONNX_FILE, pyramid=ex["pyramid"],
                input=ex["input"], output=ex["output"], labels_dtype=ex["labels_dtype"],
                dynamic=ex["shapes"] == "dynamic", size=size_tuple(ex["size"]),
                output_resize=ex["output_resize"], opset=ex["opset"],
                simplify=ex["simplify"], verify=True, verify_size=size_tuple(verify["size"]),
                atol=verify["atol"], rtol=verify["rtol"], profile=self.recipe.profile,
                fast_pyramid=ex["fast_pyramid"])
            return [ONNX_FILE], {"file_bytes": report.file_bytes,
                                 "verified_on": list(report.verification),
                                 "parity": dataclasses.asdict(report.parity)}

        outcome = self.step("export", settings, work)
        p = outcome.result["parity"]
        diff = ("labels output, judged on agreement" if p["max_abs_diff"] is None
                else f"max |logit diff| {p['max_abs_diff']:.2e} (tolerance "
                     f"{p['tolerance']:.2e})")
        self.echo(f"export: {ONNX_FILE} ({outcome.result['file_bytes'] / MIB:.1f} MiB); "
                  f"ONNX Runtime vs PyTorch at {p['size'][0]}x{p['size'][1]}: {diff}, "
                  f"decided-pixel agreement {p['decided_agreement']:.4%}: PASSED")
        return outcome

    def precision(self, onnx: StepOutcome) -> StepOutcome:
        prec = self.recipe["precision"]
        mode = prec["mode"]
        if mode == "fp32":
            return StepOutcome("precision", "not asked", result={"mode": "fp32"})
        output = f"model.{mode}.onnx"
        settings = {"precision": prec, "inputs": self.recipe["verify"]["inputs"],
                    "onnx": onnx.artifacts[ONNX_FILE], "calibration": self.calib_files}

        def work() -> tuple[list[str], dict[str, Any]]:
            from ..engine import precision as transforms

            common = {"num_verify": self.recipe["verify"]["inputs"],
                      "size": size_tuple(prec["size"]),
                      "min_agreement": prec["min_agreement"], "seed": prec["seed"],
                      "progress": self.progress}
            src, dst = self.folder / ONNX_FILE, self.folder / output
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                if mode == "fp16":
                    report = transforms.convert_fp16(src, dst, tuple(prec["keep_fp32"]),
                                                     verify_images=self.calib, **common)
                else:
                    report = transforms.quantize_int8(
                        src, dst, self.calib, num_synthetic=prec["synthetic_images"],
                        max_images=prec["calibration_images"], target=prec["int8_target"],
                        **common)
            notes = [str(w.message) for w in caught
                     if issubclass(w.category, (transforms.CalibrationWarning,
                                                transforms.AgreementWarning))]
            result = report.to_dict()
            result.update(source=ONNX_FILE, output=output, warnings=notes)
            return [output], result

        outcome = self.step("precision", settings, work)
        r = outcome.result
        for note in r["warnings"]:
            self.echo(f"WARNING: {note}")
        self.echo(f"precision: {output} ({r['output_bytes'] / MIB:.1f} MiB); vs FP32 on "
                  f"{r['num_verify']} input(s) of {r['size'][0]}x{r['size'][1]} (ONNX Runtime "
                  f"CPU): argmax agreement {r['agreement']:.4%}, mIoU vs FP32 "
                  f"{r['miou_vs_fp32']:.4f}")
        return outcome

    def engine(self, onnx_file: str, onnx_sha: str) -> StepOutcome:
        engine = self.recipe["engine"]
        if engine["target"] == "none":
            return StepOutcome("engine", "not asked")
        from ..runtime import tensorrt_support

        try:
            trt = tensorrt_support.import_tensorrt()
        except MissingDependencyError:
            message = TENSORRT_MISSING.format(folder=self.folder)
            self.echo(message)
            return StepOutcome("engine", "skipped", result={"reason": message})
        # An engine only loads in the TensorRT that built it: another version builds anew.
        settings = {"engine": engine, "onnx": onnx_sha,
                    "tensorrt": tensorrt_support.tensorrt_version(trt)}

        def work() -> tuple[list[str], dict[str, Any]]:
            from ..engine.build import build_engine
            from ..runtime.engine_sidecar import sidecar_path

            path = self.folder / ENGINE_FILE
            report = build_engine(
                self.folder / onnx_file, path, min_shape=size_tuple(engine["min"]),
                opt_shape=size_tuple(engine["opt"]), max_shape=size_tuple(engine["max"]),
                workspace_mib=engine["workspace_mib"], opt_level=engine["opt_level"],
                device=engine["device"], progress=self.progress)
            result = {"onnx": onnx_file, "engine_bytes": report.engine_bytes,
                      "precision": report.precision, "strongly_typed": report.strongly_typed,
                      "profile": report.profile.to_dict(),
                      "tensorrt_version": report.tensorrt_version,
                      "gpu": dataclasses.asdict(report.gpu),
                      "build_seconds": report.build_seconds, "notes": report.notes}
            return [ENGINE_FILE, sidecar_path(path).name], result

        outcome = self.step("engine", settings, work)
        r = outcome.result
        profile = " / ".join(f"{k} {v[0]}x{v[1]}" for k, v in r["profile"].items())
        self.echo(f"engine: {ENGINE_FILE} ({r['precision']}, profile {profile}) built from "
                  f"{r['onnx']} with TensorRT {r['tensorrt_version']} on {r['gpu']['name']}")
        return outcome

    def benchmark(self, artifact: str, artifact_sha: str, device: str) -> StepOutcome:
        bench = self.recipe["benchmark"]
        settings = {"benchmark": bench, "artifact": artifact, "sha256": artifact_sha,
                    "device": device, "weights": self.weights}

        def work() -> tuple[list[str], dict[str, Any]]:
            import torch

            from .. import runtime
            from ..benchmark.methods import segmenter_method, torch_method
            from ..benchmark.protocol import run_protocol

            reference_device, note = device, None
            if device != "cpu" and not torch.cuda.is_available():
                reference_device = "cpu"
                note = (f"this torch has no CUDA: the PyTorch reference ran on the CPU and "
                        f"{artifact} on {device}, so the speed-up compares two devices")
            size = size_tuple(bench["size"])
            with runtime.load(self.folder / artifact, device=device) as segmenter:
                methods = [torch_method(self.model(), size, device=reference_device),
                           segmenter_method(segmenter, size)]
                results = run_protocol(methods, warmup=bench["warmup"], iters=bench["iters"],
                                       rewarm_tries=1, progress=self.progress)
                parity = _parity_with_pytorch(segmenter, self.model(), size,
                                              self.recipe["verify"])
            rows = [{"name": r.name, "device": r.device, "fps": r.fps,
                     "median_ms": r.median_ms, "mean_ms": r.mean_ms, "p90_ms": r.p90_ms,
                     "speedup": r.speedup} for r in results]
            return [], {"artifact": artifact, "size": list(size), "warmup": bench["warmup"],
                        "iters": bench["iters"], "reference_device": reference_device,
                        "note": note, "methods": rows, "parity_with_pytorch": parity}

        outcome = self.step("benchmark", settings, work)
        r = outcome.result
        if r["note"]:
            self.echo(f"WARNING: {r['note']}")
        ref, art = r["methods"]
        self.echo(f"benchmark at {r['size'][0]}x{r['size'][1]} ({r['warmup']} warm-up + "
                  f"{r['iters']} timed forwards): {ref['name']} ({ref['device']}) "
                  f"{ref['fps']:.2f} FPS, {art['name']} ({art['device']}) {art['fps']:.2f} FPS "
                  f"= {art['speedup']:.2f}x")
        p = r["parity_with_pytorch"]
        self.echo(f"  {r['artifact']} vs PyTorch on one image at {r['size'][0]}x{r['size'][1]}: "
                  f"argmax agreement {p['agreement']:.4%}, mIoU {p['miou_vs_pytorch']:.4f}"
                  + ("" if p["max_abs_diff"] is None else
                     f", max |logit diff| {p['max_abs_diff']:.2e}"))
        return outcome


def _parity_with_pytorch(segmenter: Any, model: Any, size: tuple[int, int],
                         verify: dict[str, Any]) -> dict[str, Any]:
    """The final artifact (an engine included, which no earlier step compared with anything)
    against the PyTorch reference on one seeded photo-like image, by the project's one
    comparator. Reported, not gated: reduced precision was gated against FP32 already."""
    import numpy as np
    import torch

    from ..export.onnx_export import sample_inputs
    from ..metrics.comparator import Comparator, Outputs, relative_tolerance

    contract = segmenter.contract
    feeds, normalised = sample_inputs(contract, size)
    device = next(model.parameters()).device

    def reference(_: object) -> Outputs:
        with torch.no_grad():
            logits = model(torch.from_numpy(normalised).to(device)).float().cpu().numpy()
        return Outputs(labels=logits.argmax(axis=1)[0], logits=logits)

    def candidate(_: object) -> Outputs:
        (output,) = segmenter.backend.run(feeds).values()
        if contract.output_kind == "labels":
            return Outputs(labels=output.reshape(output.shape[-2:]))
        logits = np.asarray(output, np.float32)
        return Outputs(labels=logits.argmax(axis=1)[0], logits=logits)

    comparator = Comparator(("pytorch", reference), [("artifact", candidate)],
                            contract.num_classes,
                            tolerance=relative_tolerance(verify["atol"], verify["rtol"]))
    comparator.add(None)
    stats = comparator.stats[0]
    return {"agreement": stats.agreement,
            "decided_agreement": stats.decided_agreement if stats.decided_pixels else None,
            "miou_vs_pytorch": float(stats.miou_vs_reference()),
            "max_abs_diff": stats.max_abs_diff}


def check_inputs(checkpoint: str | None, folder: str | Path, calib: str | None = None) -> Path:
    """The output folder (created, writability tried), the checkpoint and the calibration
    images, before any work."""
    folder = check_writable_dir(folder)
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise IsdnetError(f"checkpoint {checkpoint} does not exist; check the path")
    if calib is not None:
        from ..engine.calibration import list_calibration_images

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the mask note is shown by the precision step
            list_calibration_images(calib)
    return folder


def deploy(recipe: Recipe, checkpoint: str | None, folder: str | Path, *,
           calib: str | None = None, progress: bool = False,
           echo: Callable[[str], None] = print) -> DeployResult:
    """Run ``recipe`` on ``checkpoint`` (None: random weights) into ``folder``; see the
    module docstring. Raises ``IsdnetError`` naming the failed step; then no manifest."""
    folder = check_inputs(checkpoint, folder, calib)
    (folder / MANIFEST).unlink(missing_ok=True)
    chain = _Chain(recipe, checkpoint, folder, calib, progress, echo)

    exported = chain.export()
    precision = chain.precision(exported)
    ((final_onnx, final_sha),) = (precision.artifacts or exported.artifacts).items()
    engine = chain.engine(final_onnx, final_sha)
    if engine.artifacts:
        bench = chain.benchmark(ENGINE_FILE, engine.artifacts[ENGINE_FILE],
                                recipe["engine"]["device"])
    else:
        bench = chain.benchmark(final_onnx, final_sha, "cpu")
    steps = [exported, precision, engine, bench]
    manifest = _manifest(recipe, chain, steps, rerun_command(recipe, checkpoint, folder, calib))
    from ..metrics.segmentation import jsonable

    atomic_write_bytes(folder / MANIFEST,
                       json.dumps(jsonable(manifest), indent=2, allow_nan=False).encode())
    return DeployResult(folder, manifest, steps)


def _manifest(recipe: Recipe, chain: _Chain, steps: list[StepOutcome],
              command: str) -> dict[str, Any]:
    from ..benchmark.machine import machine_info

    artifacts = []
    for outcome in steps:
        for file, digest in outcome.artifacts.items():
            size = (chain.folder / file).stat().st_size
            artifacts.append({"file": file, "sha256": digest, "bytes": size,
                              "step": outcome.name})
    return {
        "recipe": {"name": recipe.name, "source": recipe.source,
                   "overrides": recipe.overrides, "resolved": recipe.data},
        "weights": chain.source,
        "artifacts": artifacts,
        "steps": {s.name: {"status": s.status, "seconds": s.seconds, **s.result}
                  for s in steps},
        "command": command,
        "tool_version": __version__,
        "machine": machine_info(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
