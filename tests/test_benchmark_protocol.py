"""The FPS protocol with cheap fake methods: counts, ordering, arithmetic, re-warm, reports."""

from __future__ import annotations

import json
import mmap
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from itertools import groupby

import numpy as np
import pytest

from isdnet_deploy.benchmark import report
from isdnet_deploy.benchmark.machine import machine_info, measure_matmul_gflops
from isdnet_deploy.benchmark.protocol import (
    SOURCE_RUSAGE,
    SOURCE_VMHWM,
    Method,
    _reset_host_peak,
    run_interleaved,
    run_protocol,
)
from isdnet_deploy.errors import IsdnetError


class Recorder:
    """A fake method that logs every forward/synchronize call and sleeps a set time."""

    def __init__(self, name: str, seconds: float = 0.0, log: list | None = None) -> None:
        self.name = name
        self.seconds = seconds
        self.log = log if log is not None else []
        self.forwards = 0
        self.syncs = 0

    def forward(self) -> None:
        self.forwards += 1
        self.log.append((self.name, "forward"))
        if self.seconds:
            time.sleep(self.seconds)

    def synchronize(self) -> None:
        self.syncs += 1
        self.log.append((self.name, "sync"))

    def method(self, **kwargs) -> Method:
        return Method(self.name, self.forward, self.synchronize, **kwargs)


def test_counts_and_sync_around_every_timed_forward():
    rec = Recorder("a")
    (result,) = run_protocol([rec.method()], warmup=7, iters=13, progress=False)
    assert rec.forwards == 7 + 13
    # one sync ending the warm-up, then one before and one after each timed forward
    assert rec.syncs == 1 + 2 * 13
    events = [e for _, e in rec.log]
    assert events[:7] == ["forward"] * 7
    assert events[7:] == ["sync"] + ["sync", "forward", "sync"] * 13
    assert len(result.latencies) == 13
    assert (result.warmup, result.iters) == (7, 13)


def test_paper_defaults():
    rec = Recorder("a")
    (result,) = run_protocol([rec.method()], progress=False)
    assert rec.forwards == 20 + 100
    assert result.iters == 100 and len(result.latencies) == 100


def test_fps_and_latency_statistics_follow_from_the_timings():
    (r,) = run_protocol([Recorder("sleep", 0.002).method()], warmup=2, iters=15, progress=False)
    lat = np.array(r.latencies)
    assert r.total_s == pytest.approx(lat.sum())
    assert r.fps == pytest.approx(15 / r.total_s)
    assert r.mean_ms == pytest.approx(lat.mean() * 1e3)
    assert r.median_ms == pytest.approx(np.median(lat) * 1e3)
    assert r.min_ms == pytest.approx(lat.min() * 1e3)
    assert r.max_ms == pytest.approx(lat.max() * 1e3)
    assert r.min_ms <= r.median_ms <= r.p90_ms <= r.p99_ms <= r.max_ms
    # time.sleep never returns early, so every timed forward took at least 2 ms
    assert r.min_ms >= 2.0
    assert r.speedup == 1.0 and r.rewarm is None


def test_context_is_entered_around_warmup_and_timed_loops():
    state = {"inside": False, "enters": 0, "outside_calls": 0}

    @contextmanager
    def ctx():
        state["enters"] += 1
        state["inside"] = True
        yield
        state["inside"] = False

    def forward():
        if not state["inside"]:
            state["outside_calls"] += 1

    run_protocol([Method("m", forward, context=ctx)], warmup=3, iters=4, progress=False)
    assert state["enters"] == 1
    assert state["outside_calls"] == 0
    assert state["inside"] is False


def test_rewarm_reports_came_back_for_a_stable_reference():
    ref, other = Recorder("ref", 0.002), Recorder("other", 0.001)
    results = run_protocol([ref.method(), other.method()], warmup=2, iters=10,
                           rewarm_tolerance=0.5, rewarm_tries=3, progress=False)
    info = results[1].rewarm
    assert info is not None and info.came_back
    assert info.tries == 1 and len(info.fps_per_try) == 1
    assert info.target_fps == pytest.approx(results[0].fps)
    # the reference ran once for its own result and once more to re-warm
    assert ref.forwards == 2 * (2 + 10)
    assert results[1].speedup == pytest.approx(results[1].fps / results[0].fps)


def test_rewarm_gives_up_after_bounded_tries_when_the_reference_slows_down():
    warmup, iters, tries = 2, 5, 3
    ref = Recorder("ref", 0.001)
    first_round = warmup + iters

    def slowing_forward():
        ref.forward()
        if ref.forwards >= first_round:
            ref.seconds = 0.006  # every later forward is ~6x slower than the measured one

    methods = [Method("ref", slowing_forward, ref.synchronize), Recorder("b").method()]
    results = run_protocol(methods, warmup=warmup, iters=iters, rewarm_tolerance=0.10,
                           rewarm_tries=tries, progress=False)
    info = results[1].rewarm
    assert not info.came_back
    assert info.tries == tries and len(info.fps_per_try) == tries
    assert info.achieved_fps == info.fps_per_try[-1] < info.target_fps
    assert ref.forwards == (1 + tries) * first_round


def test_rewarm_runs_before_each_later_method():
    log: list = []
    recs = [Recorder(n, log=log) for n in ("a", "b", "c")]
    run_protocol([r.method() for r in recs], warmup=1, iters=2, rewarm_tolerance=10.0,
                 progress=False)
    runs = [(name, len(list(group)))
            for name, group in groupby(n for n, e in log if e == "forward")]
    # a's own round and its first re-warm are back to back: 2 x (1 warm-up + 2 timed)
    assert runs == [("a", 6), ("b", 3), ("a", 3), ("c", 3)]


def test_device_memory_and_gflops_columns():
    resets = []
    m = Method("gpu-ish", lambda: time.sleep(0.001), flops=2e6,
               cuda_reset_peak=lambda: resets.append(1), cuda_peak_memory=lambda: 3 * 2**20)
    (r,) = run_protocol([m], warmup=1, iters=5, progress=False, peak_gflops=10.0)
    assert resets == [1]
    assert r.peak_device_mib == pytest.approx(3.0)
    assert r.gflops_per_s == pytest.approx(2e6 * r.fps / 1e9)
    assert r.percent_of_peak == pytest.approx(100 * r.gflops_per_s / 10.0)
    assert r.peak_host_mib > 0
    assert r.peak_host_source in (SOURCE_VMHWM, SOURCE_RUSAGE)


def test_host_peak_is_per_method_on_linux():
    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("needs a writable /proc/self/clear_refs (Linux) to reset the peak RSS")
    if not _reset_host_peak():
        pytest.skip("this kernel accepts /proc/self/clear_refs but does not reset VmHWM")
    def touch_64_mib() -> None:
        # A fresh anonymous mapping always brings new resident pages; a malloc'd array can
        # be served from free heap pages that are resident already (after other tests
        # freed memory), and then no method's peak moves.
        with mmap.mmap(-1, 64 * 2**20) as block:
            for offset in range(0, len(block), mmap.PAGESIZE):
                block[offset] = 1

    big = Method("big", touch_64_mib)
    small = Method("small", lambda: None)
    r_big, r_small = run_protocol([big, small], warmup=0, iters=1, rewarm_tries=1,
                                  rewarm_tolerance=100.0, progress=False)
    # the rewarm re-ran "big" before "small", but small's peak was reset after it
    assert r_big.peak_host_source == SOURCE_VMHWM
    assert r_big.peak_host_mib - r_small.peak_host_mib > 32


def test_interleave_alternates_and_median_ratio_of_half_speed_method():
    log: list = []
    a, b = Recorder("A", 0.002, log), Recorder("B", 0.004, log)
    res = run_interleaved([a.method(), b.method()], rounds=4, iters=5, warmup=1, progress=False)
    assert res.order == ["A", "B"] * 4
    turns = [name for i, (name, e) in enumerate(log)
             if e == "forward" and (i == 0 or log[i - 1][0] != name)]
    assert turns == ["A", "B"] * 4
    assert a.forwards == b.forwards == 4 * (1 + 5)
    assert len(res.fps["A"]) == len(res.ratios["B"]) == 4
    assert res.ratios["B"][0] == pytest.approx(res.fps["B"][0] / res.fps["A"][0])
    assert res.median_ratio["A"] == pytest.approx(1.0)
    assert 0.35 < res.median_ratio["B"] < 0.7
    text = report.format_interleave(res)
    assert "B/A" in text and "median" in text


@pytest.mark.parametrize("kwargs", [
    {"methods": []},
    {"iters": 0},
    {"warmup": -1},
    {"rewarm_tries": 0},
    {"methods": "dup"},
])
def test_bad_settings_raise_one_line_errors(kwargs):
    methods = kwargs.pop("methods", [Method("a", lambda: None)])
    if methods == "dup":
        methods = [Method("a", lambda: None), Method("a", lambda: None)]
    with pytest.raises(IsdnetError) as err:
        run_protocol(methods, progress=False, **kwargs)
    assert "\n" not in str(err.value)


def _results():
    return run_protocol([Recorder("torch", 0.002).method(), Recorder("ort", 0.001).method()],
                        warmup=1, iters=5, rewarm_tolerance=1.0, progress=False)


def test_json_round_trip_and_table(tmp_path):
    results = _results()
    inter = run_interleaved([Recorder("torch").method(), Recorder("ort").method()], rounds=2,
                            iters=3, warmup=1, progress=False)
    machine = machine_info({"torch": 2})
    data = report.to_json(results, inter, machine, {"warmup": 1, "iters": 5})
    path = tmp_path / "bench.json"
    report.write_json(path, data)
    loaded = json.loads(path.read_text())
    assert loaded == json.loads(json.dumps(data))
    back, back_inter = report.from_json(loaded)
    assert back == results and back_inter == inter
    assert [p.name for p in tmp_path.iterdir()] == ["bench.json"]

    table = report.format_table(results, machine)
    assert "throughput FPS" in table and "p99 ms" in table
    assert "ort" in table and f"{results[1].speedup:.2f}x" in table
    assert "re-warm before ort" in table


def test_write_json_bad_inputs_leave_no_file(tmp_path):
    with pytest.raises(IsdnetError):
        report.write_json(tmp_path / "missing" / "x.json", {"a": 1})
    with pytest.raises(IsdnetError):
        report.write_json(tmp_path / "x.json", {"a": float("nan")})
    assert list(tmp_path.iterdir()) == []


def test_plot_writes_a_png(tmp_path):
    path = tmp_path / "fps.png"
    report.plot_fps(_results(), path, "fake methods")
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 1000
    assert [p.name for p in tmp_path.iterdir()] == ["fps.png"]


def test_machine_info_and_matmul_peak():
    info = machine_info()
    assert info["logical_cores"] == os.cpu_count()
    assert info["packages"]["numpy"] == np.__version__
    assert info["cpu_model"]
    assert measure_matmul_gflops(n=256, repeats=2) > 0


def test_count_flops_of_a_conv_matches_hand_count():
    torch = pytest.importorskip("torch", reason="count_flops needs torch")
    from isdnet_deploy.benchmark.flops import count_flops, per_module_flops

    cin, cout, k, h, w = 3, 8, 3, 17, 20
    conv = torch.nn.Conv2d(cin, cout, k, stride=2, padding=1, bias=False)
    ho, wo = (h + 2 - k) // 2 + 1, (w + 2 - k) // 2 + 1
    assert count_flops(conv, (1, cin, h, w)) == 2 * cin * cout * k * k * ho * wo

    model = torch.nn.Sequential(conv, torch.nn.ReLU(), torch.nn.Conv2d(cout, 4, 1, bias=False))
    model.train()
    parts = per_module_flops(model, (1, cin, h, w))
    assert set(parts) == {"0", "2"}
    assert parts["2"] == 2 * cout * 4 * ho * wo
    assert sum(parts.values()) == count_flops(model, (1, cin, h, w))
    assert model.training  # the caller's mode is restored


def test_benchmark_modules_do_not_import_torch():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import isdnet_deploy.benchmark.protocol, isdnet_deploy.benchmark.report\n"
        "import isdnet_deploy.benchmark.machine as m, isdnet_deploy.benchmark.flops\n"
        "m.machine_info()\n"
        "from isdnet_deploy.benchmark.protocol import Method, run_protocol\n"
        "run_protocol([Method('a', lambda: None)], warmup=1, iters=2, progress=False)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
