"""The torch backend's optimised paths on the CPU: settings and their one-line refusals,
torch.compile (inductor) against eager fp32 through the one comparator, bf16 autocast and
channels-last, compile time kept apart from the timed forwards, a compile failure skipped
with its cause, and the CUDA-graph cache's bookkeeping (against a recording stand-in; the
real capture is in tests/test_cuda.py).

Compiling ISDNet takes minutes on two shared cores, so exactly one compilation (fp32 at
64x64, module-scoped) is shared by every test that needs a compiled network; the failure
tests stop inside dynamo before inductor runs.
"""

from __future__ import annotations

import contextlib
import json
import types

import numpy as np
import pytest
import torch

from isdnet_deploy import runtime
from isdnet_deploy.benchmark import report
from isdnet_deploy.benchmark.methods import torch_backend_method, torch_method
from isdnet_deploy.benchmark.protocol import run_interleaved, run_protocol
from isdnet_deploy.cli.compare import DECIDED_ATOL, DECIDED_RTOL, segmenter_side
from isdnet_deploy.data.samples import photo_like
from isdnet_deploy.errors import IsdnetError
from isdnet_deploy.metrics.comparator import compare, relative_tolerance
from isdnet_deploy.runtime.torch_backend import GRAPH_WARMUP, TorchBackend, TorchOptions

SIZE = (64, 64)
TINY = "64x64"


def _parity(reference: TorchBackend, candidates: dict[str, TorchBackend], count: int = 2):
    """Each candidate against ``reference`` on photo-like images, as compare does."""
    def side(name, backend):
        return segmenter_side(name, runtime.Segmenter(backend, scale=False))

    images = [(photo_like(*SIZE, seed), None) for seed in range(count)]
    return compare(side("eager fp32", reference),
                   [side(n, b) for n, b in candidates.items()], images,
                   reference.contract.num_classes,
                   tolerance=relative_tolerance(DECIDED_ATOL, DECIDED_RTOL))


@pytest.fixture(scope="module")
def eager(model):
    with TorchBackend(None, "cpu", model=model) as backend:
        yield backend


@pytest.fixture(scope="module")
def compiled(model):
    """The one compilation of this module: (backend, its benchmark method)."""
    backend = TorchBackend(None, "cpu", model=model, compile="inductor")
    method = torch_backend_method(backend, SIZE)
    yield backend, method
    backend.close()


@pytest.fixture()
def failing_inductor(monkeypatch):
    """inductor fails as it does without a C++ compiler; dynamo still traces first."""
    from torch._inductor import compile_fx
    from torch._inductor.exc import InvalidCxxCompiler

    calls = []

    def no_compiler(*args, **kwargs):
        calls.append(1)
        raise InvalidCxxCompiler()

    monkeypatch.setattr(compile_fx, "compile_fx", no_compiler)
    return calls


# --- settings ---------------------------------------------------------------------------

@pytest.mark.parametrize(("spec", "label", "kwargs"), [
    ("eager", "eager fp32", {}),
    ("compile=inductor", "compiled fp32", {"compile": "inductor"}),
    ("compile=inductor,precision=bf16,channels_last", "compiled bf16 channels-last",
     {"compile": "inductor", "precision": "bf16", "channels_last": True}),
    ("compile=inductor:max-autotune-no-cudagraphs, precision=fp16, cuda-graphs=true",
     "compiled max-autotune-no-cudagraphs fp16 cuda-graphs",
     {"compile": "inductor:max-autotune-no-cudagraphs", "precision": "fp16",
      "cuda_graphs": True}),
    ("channels_last=false,precision=bf16", "eager bf16", {"precision": "bf16"}),
])
def test_variant_specs(spec, label, kwargs):
    options = TorchOptions.parse(spec)
    assert options.label == label
    assert options == TorchOptions(**kwargs)
    assert options.is_reference == (label == "eager fp32")


@pytest.mark.parametrize(("spec", "message"), [
    ("compile=tvm", "unknown compile setting 'tvm'"),
    ("compile=inductor:fastest", "unknown torch.compile mode 'fastest'"),
    ("compile=none:max-autotune", "unknown compile setting"),
    ("precision=fp8", "unknown precision 'fp8'"),
    ("speed=max", "unknown setting 'speed'"),
    ("precision=bf16,precision=fp16", "precision given twice"),
    ("channels_last=maybe", "use channels_last, channels_last=true"),
    ("compile=inductor:reduce-overhead,cuda_graphs", "records CUDA graphs inside inductor"),
])
def test_bad_variant_specs_are_one_line(spec, message):
    with pytest.raises(IsdnetError, match=message) as caught:
        TorchOptions.parse(spec)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"cuda_graphs": True}, "cuda_graphs=True needs device='cuda'"),
    ({"precision": "fp16"}, "precision 'fp16' needs device='cuda'"),
    ({"channels_last": "yes"}, "channels_last must be True or False"),
])
def test_cpu_refuses_what_it_cannot_run(model, kwargs, message):
    with pytest.raises(IsdnetError, match=message):
        TorchBackend(None, "cpu", model=model, **kwargs)


def test_load_takes_the_optimisation_options(official_checkpoint, model):
    """The Python API as documented; opening compiles nothing yet (torch.compile is lazy),
    and channels-last converts a copy, never the caller's model."""
    seg = runtime.load(official_checkpoint, backend="torch", compile="inductor",
                       precision="bf16", channels_last=True, cuda_graphs=False)
    with seg:
        backend = seg.backend
        assert backend.options == TorchOptions("inductor", "bf16", True, False)
        assert seg.contract.precision == "bf16"
        assert isinstance(backend.module, torch._dynamo.eval_frame.OptimizedModule)
        weight = backend.model.backbone.layer1[0].conv1.weight
        assert weight.is_contiguous(memory_format=torch.channels_last)
    copied = TorchBackend(None, "cpu", model=model, channels_last=True)
    assert copied.model is not model
    assert model.backbone.layer1[0].conv1.weight.is_contiguous()
    assert not model.backbone.layer1[0].conv1.weight.is_contiguous(
        memory_format=torch.channels_last)
    copied.close()


# --- eager variants: bf16 autocast and channels-last -----------------------------------

def test_eager_variants_against_eager_fp32(eager, model):
    with TorchBackend(None, "cpu", model=model, channels_last=True) as nhwc, \
            TorchBackend(None, "cpu", model=model, precision="bf16") as bf16:
        logits = bf16.run({"image": np.zeros((1, 3, *SIZE), np.float32)})["logits"]
        assert logits.dtype == np.float32 and logits.flags.c_contiguous
        result = _parity(eager, {"channels-last": nhwc, "bf16": bf16})
    nhwc_stats, bf16_stats = result.candidates
    # fp32 in another memory order: the same arithmetic up to summation order
    assert nhwc_stats.decided_agreement == 1.0
    assert nhwc_stats.decided_pixels > 0.5 * nhwc_stats.pixels
    assert nhwc_stats.max_abs_diff <= 20 * (DECIDED_ATOL + DECIDED_RTOL
                                            * nhwc_stats.reference_max_abs)
    # bf16 keeps 8 bits of mantissa: differences well above fp32 noise, but finite and
    # small against the logits themselves
    assert bf16_stats.nonfinite == 0
    assert bf16_stats.max_abs_diff > nhwc_stats.max_abs_diff
    assert bf16_stats.max_abs_diff < 0.2 * bf16_stats.reference_max_abs
    assert bf16_stats.min_cosine > 0.99


# --- the compiled network (one compilation) ----------------------------------------------

def test_warm_up_counts_the_compilation_and_then_nothing(compiled):
    backend, method = compiled
    assert method.name == "pytorch compiled fp32"
    assert method.compile_calls >= 1 and method.compile_s > 0
    again = backend.warm_up(torch.zeros(1, 3, *SIZE))
    assert (again.calls, again.compilations, again.graphs) == (0, 0, 0)
    assert again.seconds == 0.0


def test_compiled_fp32_keeps_every_decided_pixel(eager, compiled):
    backend, _ = compiled
    result = _parity(eager, {"compiled": backend})
    (stats,) = result.candidates
    assert stats.decided_agreement == 1.0
    assert stats.decided_pixels > 0.5 * stats.pixels
    # inductor fuses and reorders float32 sums; it stays within 20x export tolerance
    assert stats.max_abs_diff <= 20 * (DECIDED_ATOL + DECIDED_RTOL * stats.reference_max_abs)
    assert stats.nonfinite == 0


def test_compile_time_is_reported_apart(eager, compiled):
    _, compiled_method = compiled
    reference = torch_backend_method(eager, SIZE)
    assert reference.compile_s is None  # eager: nothing to prepare
    results = run_protocol([reference, compiled_method], warmup=1, iters=2, progress=False)
    assert [r.compile_s for r in results] == [None, compiled_method.compile_s]
    assert all(len(r.latencies) == 2 for r in results)
    # the compile time is not inside the timed forwards
    assert sum(results[1].latencies) < compiled_method.compile_s
    table = report.format_table(results)
    assert "compile s" in table and "never part of the timed forwards" in table
    rebuilt, _ = report.from_json(json.loads(json.dumps(report.to_json(results))))
    assert rebuilt[1].compile_s == compiled_method.compile_s
    inter = run_interleaved([reference, compiled_method], rounds=1, iters=1, warmup=0,
                            progress=False)
    assert inter.fps[compiled_method.name][0] > 0


def test_eager_tables_have_no_compile_column(eager):
    results = run_protocol([torch_method(eager.model, SIZE)], warmup=0, iters=1,
                           progress=False)
    assert "compile s" not in report.format_table(results)


# --- compile failures -------------------------------------------------------------------

def test_compile_failure_is_one_line_and_remembered(model, failing_inductor):
    backend = TorchBackend(None, "cpu", model=model, compile="inductor")
    x = torch.zeros(1, 3, *SIZE)
    with pytest.raises(IsdnetError) as caught:
        backend.forward(x)
    message = str(caught.value)
    assert message.startswith("torch.compile (inductor) failed: InvalidCxxCompiler")
    assert "C++ compiler" in message and "\n" not in message
    with pytest.raises(IsdnetError, match="failed: InvalidCxxCompiler"):
        backend.run({"image": x.numpy()})
    assert len(failing_inductor) == 1  # refused at once, not compiled again
    backend.close()


def test_benchmark_skips_a_variant_that_fails_to_compile(cli, tmp_path, failing_inductor):
    out = tmp_path / "bench.json"
    result = cli("benchmark", "--size", TINY, "--warmup", 0, "--iters", 1, "--no-peak",
                 "--no-flops", "--torch-variant", "compile=inductor", "--json", out)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    data = json.loads(out.read_text())
    assert [r["name"] for r in data["results"]] == ["pytorch eager"]
    (skipped,) = data["settings"]["skipped"]
    assert skipped["method"] == "pytorch compiled fp32"
    assert "InvalidCxxCompiler" in skipped["reason"] and "--torch-compile none" in skipped["reason"]
    assert f"skipped: pytorch compiled fp32: {skipped['reason']}" in result.stdout


# --- the command line -------------------------------------------------------------------

@pytest.fixture(scope="module")
def variant_runs(tmp_path_factory):
    """benchmark and compare with two eager variants (no compilation), their JSON written
    where benchmarks/gpu_checks.sh writes it, for benchmarks/gpu_table.py."""
    from click.testing import CliRunner

    from isdnet_deploy.cli import main

    folder = tmp_path_factory.mktemp("variants")
    variants = ["--torch-variant", "channels_last", "--torch-variant", "precision=bf16"]
    runner = CliRunner()
    bench = runner.invoke(main, ["benchmark", "--size", TINY, "--warmup", "0", "--iters", "1",
                                 "--no-peak", "--no-flops", "--interleave", "--rounds", "1",
                                 *variants, "--json", str(folder / "fps_deepglobe.json")])
    compared = runner.invoke(main, ["compare", "reference", *variants, "--random", "1",
                                    "--size", TINY, "--json",
                                    str(folder / "parity_deepglobe.json")])
    return folder, bench, compared


def test_benchmark_times_variants_side_by_side(variant_runs):
    folder, result, _ = variant_runs
    assert result.exit_code == 0, result.output
    data = json.loads((folder / "fps_deepglobe.json").read_text())
    names = ["pytorch eager", "pytorch eager fp32 channels-last", "pytorch eager bf16"]
    assert [r["name"] for r in data["results"]] == names
    assert list(data["interleave"]["fps"]) == names
    assert data["results"][0]["speedup"] == 1.0
    assert [v["precision"] for v in data["settings"]["torch_variants"]] == ["fp32", "bf16"]
    assert all(r["compile_s"] is None for r in data["results"])  # nothing compiled
    assert "compile s" not in result.stdout


def test_compare_runs_variants_through_the_comparator(variant_runs):
    folder, _, result = variant_runs
    assert result.exit_code == 0, result.output
    data = json.loads((folder / "parity_deepglobe.json").read_text())
    nhwc, bf16 = data["candidates"]
    assert nhwc["name"] == "pytorch eager fp32 channels-last"
    assert nhwc["torch_options"]["channels_last"] is True
    assert nhwc["decided_agreement"] == 1.0 and nhwc["decided_pixels"] > 0
    assert bf16["precision"] == "bf16" and bf16["logits"]["max_abs_diff"] > 0
    assert data["decided_tolerance"] == {"atol": DECIDED_ATOL, "rtol": DECIDED_RTOL}
    assert "decided agreement" in result.stdout


def test_gpu_table_from_the_runs(variant_runs, tmp_path):
    """benchmarks/gpu_table.py on real benchmark/compare output, and its verdict on the
    goal once the run is (re-labelled as) the 1958x1958 one."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_table.py"
    spec = importlib.util.spec_from_file_location("gpu_table", path)
    gpu_table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_table)

    folder, _, _ = variant_runs
    table = gpu_table.gpu_table(folder)
    assert "| deepglobe 64x64 | pytorch eager bf16 |" in table
    assert "| pytorch eager fp32 channels-last |" in table
    assert "not judged, the 1958x1958 run" in table

    fps = json.loads((folder / "fps_deepglobe.json").read_text())
    parity = json.loads((folder / "parity_deepglobe.json").read_text())
    fps["settings"]["size"] = [1958, 1958]
    ratios = fps["interleave"]["median_ratio"]
    ratios["pytorch eager bf16"] = 3.5
    ratios["pytorch eager fp32 channels-last"] = 1.2
    for candidate in parity["candidates"]:
        candidate["agreement"] = 0.999 if "bf16" in candidate["name"] else 1.0
    (tmp_path / "fps_deepglobe.json").write_text(json.dumps(fps))
    (tmp_path / "parity_deepglobe.json").write_text(json.dumps(parity))
    assert "Goal met: pytorch eager bf16 runs 3.50x" in gpu_table.gpu_table(tmp_path)
    parity["candidates"][1]["agreement"] = 0.99  # fast but not faithful enough
    (tmp_path / "parity_deepglobe.json").write_text(json.dumps(parity))
    assert "Goal NOT met: the fastest variant, pytorch eager bf16, runs 3.50x" in (
        gpu_table.gpu_table(tmp_path))


def test_torch_options_apply_to_a_torch_candidate(cli, tmp_path, official_checkpoint):
    out = tmp_path / "compare.json"
    result = cli("compare", official_checkpoint, official_checkpoint, "--torch-precision",
                 "bf16", "--random", 1, "--size", TINY, "--json", out)
    assert result.exit_code == 0, result.output
    (cand,) = json.loads(out.read_text())["candidates"]
    assert cand["name"].endswith("(torch eager bf16)")
    assert json.loads(out.read_text())["reference"].endswith("(torch eager fp32)")


def test_infer_with_torch_options(cli, tmp_path):
    import cv2

    cv2.imwrite(str(tmp_path / "a.png"), photo_like(80, 96, 1))
    result = cli("infer", "reference", tmp_path / "a.png", "-o", tmp_path / "out",
                 "--torch-precision", "bf16", "--channels-last", "--no-scale")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "a_labels.png").is_file()


@pytest.mark.parametrize(("args", "message"), [
    (["benchmark", "--torch-variant", "cuda_graphs"], "--cuda-graphs needs --device cuda"),
    (["benchmark", "--torch-variant", "precision=fp16"], "fp16 needs --device cuda"),
    (["benchmark", "--torch-variant", "compile=tvm"], "unknown compile setting 'tvm'"),
    (["benchmark", "--torch-variant", "eager"], "is the baseline, always timed"),
    (["benchmark", "--torch-variant", "bf16"], "unknown setting 'bf16'"),
    (["benchmark", "--torch-variant", "precision=bf16", "--torch-variant", "precision=bf16"],
     "given twice"),
    (["benchmark", "--no-reference", "{onnx}", "--torch-variant", "precision=bf16"],
     "drop --no-reference"),
    (["benchmark", "{onnx}", "--torch-compile", "inductor"],
     "apply to torch-backend artifacts"),
    (["benchmark", "--torch-compile", "inductor:fast"], "unknown torch.compile mode"),
    (["compare", "{onnx}", "--torch-variant", "precision=bf16"],
     "REFERENCE must be a .pth checkpoint or 'reference'"),
    (["compare", "reference"], "nothing to compare"),
    (["infer", "reference", "{onnx}", "-o", "{tmp}/out", "--cuda-graphs"],
     "--cuda-graphs needs --device cuda"),
    (["infer", "{onnx}", "{onnx}", "-o", "{tmp}/out", "--torch-precision", "bf16"],
     "apply to torch-backend artifacts"),
])
def test_impossible_settings_are_usage_errors(cli, onnx_model, tmp_path, args, message):
    args = [a.format(onnx=onnx_model, tmp=tmp_path) for a in args]
    result = cli(*args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_cuda_graphs_without_a_gpu_is_one_line(cli):
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present; tests/test_cuda.py runs the graphs")
    result = cli("benchmark", "--device", "cuda", "--torch-variant", "cuda_graphs",
                 "--size", TINY)
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1] == ("error: --device cuda asked for, but torch sees no CUDA GPU; use "
                         "--device cpu")
    assert "Traceback" not in result.output


# --- the CUDA-graph cache, against a recording stand-in ----------------------------------

class _Recorder:
    """Just enough of torch.cuda for _GraphCache, recording what happened: a 'graph'
    replays what the forward registered while it was being captured."""

    def __init__(self):
        self.events = []
        self.capturing = None
        recorder = self

        class Graph:
            replay_fn = None

            def replay(self):
                recorder.events.append("replay")
                self.replay_fn()

        @contextlib.contextmanager
        def graph(captured):
            recorder.capturing = captured
            recorder.events.append("capture")
            yield
            recorder.capturing = None

        def stream(*args, **kwargs):
            return types.SimpleNamespace(wait_stream=lambda other: None)

        self.cuda = types.SimpleNamespace(
            CUDAGraph=Graph, graph=graph, Stream=stream, current_stream=stream,
            stream=lambda s: contextlib.nullcontext())


def test_graph_cache_captures_once_per_shape_and_drops_the_oldest():
    from isdnet_deploy.runtime.torch_backend import _GraphCache

    recorder = _Recorder()

    def forward(x):
        recorder.events.append(("forward", tuple(x.shape)))
        out = x * 2
        if recorder.capturing is not None:  # what a replay recomputes: from x's memory
            recorder.capturing.replay_fn = lambda: out.copy_(x * 2)
        return out

    cache = _GraphCache(recorder, forward, limit=2)
    a, b, c = torch.ones(1, 1, 2, 2), torch.ones(1, 1, 3, 3), torch.ones(1, 1, 4, 4)
    assert torch.equal(cache.run(a), a * 2)
    assert recorder.events == ([("forward", (1, 1, 2, 2))] * GRAPH_WARMUP
                               + ["capture", ("forward", (1, 1, 2, 2)), "replay"])
    recorder.events.clear()
    assert torch.equal(cache.run(3 * a), 6 * a)  # same shape: new values copied in, replayed
    assert recorder.events == ["replay"]
    cache.run(b)
    cache.run(a)  # a becomes the most recently used
    cache.run(c)  # over the limit: b, the least recently used, is dropped
    assert list(cache.entries) == [(1, 1, 2, 2), (1, 1, 4, 4)]
    assert cache.captured == 3
    recorder.events.clear()
    assert torch.equal(cache.run(5 * b), 10 * b)
    assert "capture" in recorder.events  # b is captured again
