"""The torch paths on a CUDA GPU: reference parity with the CPU, the runtime's torch backend,
and the FPS protocol's device synchronisation. Every test here needs a CUDA GPU; CI has
none, so they run on a lent GPU machine (results go into the issue notes)."""

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
    assert method.synchronize is torch.cuda.synchronize
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
