"""The torch paths on a CUDA GPU: reference parity with the CPU, the runtime's torch backend
and its optimised paths (torch.compile, fp16/bf16 autocast, channels-last, CUDA graphs),
and the FPS protocol's device synchronisation. Every test here needs a CUDA GPU; CI has
none, so they run on a lent GPU machine (benchmarks/gpu_checks.sh; results go into the
issue notes). The CPU side of the optimised paths is tests/test_torch_optimized.py."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from isdnet_deploy import runtime
from isdnet_deploy.benchmark.methods import measure_peak_gflops, torch_method
from isdnet_deploy.benchmark.protocol import run_protocol
from isdnet_deploy.metrics.parity import decided_agreement, logit_parity
from isdnet_deploy.model.checkpoint import build_model
from isdnet_deploy.runtime.torch_backend import GRAPH_CACHE, TorchBackend

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs a CUDA GPU (torch.cuda.is_available() is False)")


@pytest.fixture()
def exact_fp32():
    """TF32 off: cuDNN's default TF32 convolutions round inputs to 10-bit mantissas, which is
    a speed setting, not the reference arithmetic."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.mark.parametrize("size", [(258, 202), (1002, 762)])
def test_reference_on_cuda_matches_cpu(exact_fp32, size):
    model = build_model(7)
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(x).numpy()
        got = model.cuda()(x.cuda()).cpu().numpy()
    parity = logit_parity(ref, got)
    tol = 1e-4 + 1e-5 * parity["ref_max_abs"]
    # Summation order differs between CPU and cuDNN kernels; fp32 noise through ~60
    # layers stays within 20x the export tolerance, and no decided pixel may change.
    assert parity["max_abs_diff"] <= 20 * tol, parity
    agreement, decided = decided_agreement(ref, got, 20 * tol)
    assert decided > 0.9 * ref.shape[2] * ref.shape[3]
    assert agreement == 1.0


def test_torch_backend_on_cuda_takes_host_and_device_images(exact_fp32, official_checkpoint):
    image = np.random.default_rng(0).integers(0, 256, (200, 260, 3), dtype=np.uint8)
    cpu = runtime.load(official_checkpoint, backend="torch", device="cpu", scale=False)
    gpu = runtime.load(official_checkpoint, backend="torch", device="cuda", scale=False)
    ref_logits, got_logits = cpu.logits(image), gpu.logits(image)
    assert got_logits.shape == ref_logits.shape
    parity = logit_parity(ref_logits, got_logits)
    assert parity["max_abs_diff"] <= 20 * (1e-4 + 1e-5 * parity["ref_max_abs"]), parity
    # A device-resident input skips host preprocessing: it is the normalised NCHW tensor.
    feeds, _ = gpu.feeds(image)
    on_device = torch.from_numpy(feeds["image"]).cuda()
    np.testing.assert_array_equal(gpu.predict(on_device), gpu.predict(image))


def test_protocol_synchronises_cuda_and_records_gpu_memory():
    model = build_model(7)
    method = torch_method(model, (512, 512), device="cuda")
    assert method.device == "cuda" and method.synchronize.__self__.device.is_cuda
    [result] = run_protocol([method], warmup=2, iters=5)
    assert result.device == "cuda"
    assert len(result.latencies) == 5 and min(result.latencies) > 0
    # 17 M float32 weights alone take 66 MiB on the GPU.
    assert result.peak_device_mib is not None and result.peak_device_mib > 60


def test_async_work_is_inside_the_timed_interval():
    """Without synchronisation a CUDA launch returns at once; the protocol must time the
    kernels, so a forward of k matmuls must take about k times as long as one."""
    a = torch.randn(4096, 4096, device="cuda")

    def work(k: int):
        def forward():
            for _ in range(k):
                a @ a
        return forward

    from isdnet_deploy.benchmark.protocol import Method

    one, ten = (Method(name=f"x{k}", forward=work(k), synchronize=torch.cuda.synchronize,
                       device="cuda") for k in (1, 10))
    r_one, r_ten = run_protocol([one, ten], warmup=3, iters=10)
    assert sum(r_ten.latencies) > 5 * sum(r_one.latencies)


def test_cuda_peak_gflops_is_measured():
    assert measure_peak_gflops("cuda") > 1000.0  # any CUDA GPU of the last decade


def test_benchmark_cli_on_cuda(cli, tmp_path, official_checkpoint):
    out = tmp_path / "cuda.json"
    result = cli("benchmark", official_checkpoint, "--checkpoint", official_checkpoint,
                 "--device", "cuda", "--size", "512x512", "--warmup", "2", "--iters", "5",
                 "--no-flops", "--json", out)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert len(report["results"]) == 2  # the reference and the artifact
    assert all(m["device"] == "cuda" for m in report["results"]), report["results"]
    assert all(m["peak_device_mib"] > 60 for m in report["results"])


# --- the optimised torch paths ---------------------------------------------------------

def _tolerance(parity):
    return 1e-4 + 1e-5 * parity["ref_max_abs"]


def test_compiled_fp32_keeps_every_decided_pixel_on_cuda(exact_fp32):
    model = build_model(7)
    x = torch.randn(1, 3, 256, 320, generator=torch.Generator().manual_seed(2)).cuda()
    with TorchBackend(None, "cuda", model=model) as eager, \
            TorchBackend(None, "cuda", model=model, compile="inductor") as compiled:
        warm = compiled.warm_up(x)
        ref, got = eager.forward(x).cpu().numpy(), compiled.forward(x).cpu().numpy()
    assert warm.compilations >= 1 and warm.seconds > 0
    parity = logit_parity(ref, got)
    assert parity["max_abs_diff"] <= 20 * _tolerance(parity), parity
    agreement, decided = decided_agreement(ref, got, _tolerance(parity))
    assert decided > 0.5 * ref.shape[2] * ref.shape[3]
    assert agreement == 1.0


@pytest.mark.parametrize("options", [
    {"compile": "inductor", "precision": "fp16", "channels_last": True, "cuda_graphs": True},
    {"precision": "bf16", "cuda_graphs": True},
])
def test_reduced_precision_and_graphs_track_fp32(official_checkpoint, options):
    """Random weights make labels chaotic under any rounding, so agreement is judged in
    benchmarks/gpu_checks.sh with a trained checkpoint; here the logits must stay finite
    and close, and the exact Python API must run end to end."""
    image = np.random.default_rng(0).integers(0, 256, (256, 320, 3), dtype=np.uint8)
    with runtime.load(official_checkpoint, backend="torch", device="cuda", scale=False) as ref, \
            runtime.load(official_checkpoint, backend="torch", device="cuda", scale=False,
                         **options) as fast:
        expected = ref.logits(image)
        got = fast.logits(image)
        assert fast.backend._graphs.captured == 1
        again = fast.logits(image)  # replayed: same graph, same result
        assert fast.backend._graphs.captured == 1
    assert got.dtype == np.float32 and np.isfinite(got).all()
    np.testing.assert_array_equal(got, again)
    parity = logit_parity(expected, got)
    assert parity["cosine_similarity"] > 0.99, parity
    assert parity["max_abs_diff"] < 0.2 * parity["ref_max_abs"], parity


def test_cuda_graphs_replay_the_plain_forward_and_keep_a_bounded_cache(exact_fp32):
    model = build_model(7)
    with TorchBackend(None, "cuda", model=model) as plain, \
            TorchBackend(None, "cuda", model=model, cuda_graphs=True) as graphed:
        for i, width in enumerate(range(96, 96 + 16 * (GRAPH_CACHE + 1), 16)):
            x = torch.randn(1, 3, 64, width, device="cuda")
            expected = plain.forward(x).cpu()
            got = graphed.forward(x).cpu()
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
            assert graphed._graphs.captured == i + 1
        assert len(graphed._graphs.entries) == GRAPH_CACHE  # the oldest size was dropped


def test_benchmark_cli_times_optimised_variants_on_cuda(cli, tmp_path):
    out = tmp_path / "variants.json"
    result = cli("benchmark", "--device", "cuda", "--size", "512x512", "--warmup", "2",
                 "--iters", "5", "--no-flops", "--interleave", "--rounds", "1",
                 "--torch-variant", "precision=fp16,cuda_graphs",
                 "--torch-variant", "compile=inductor,precision=bf16,cuda_graphs",
                 "--json", out)
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())["results"]
    assert [r["name"] for r in rows] == ["pytorch eager", "pytorch eager fp16 cuda-graphs",
                                         "pytorch compiled bf16 cuda-graphs"]
    assert rows[0]["compile_s"] is None
    assert rows[1]["compile_s"] > 0 and rows[2]["compile_s"] > 0
    assert all(r["device"] == "cuda" and r["peak_device_mib"] > 0 for r in rows)
    assert "compile s" in result.stdout
