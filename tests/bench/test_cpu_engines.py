"""nst-bench's CPU engine rows (OpenVINO, INT8, the nst Stylizer) and the measured SGEMM roof of "% of peak"."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from nst_bench import run as run_mod
from nst_bench.backends import Backend, ModelSource, Workload, make_backend
from nst_bench.harness import RepetitionPolicy
from nst_bench.machine import measure_sgemm_peak
from nst_bench.report import markdown

# the random network's ONNX export is the session's (tests/bench/conftest.py)
pytestmark = pytest.mark.usefixtures("shared_network_export")

HAS_OPENVINO = importlib.util.find_spec("openvino") is not None


@pytest.fixture(scope="module")
def source():
    s = ModelSource(seed=0)
    yield s
    s.close()


def test_sgemm_peak_is_measured_not_guessed():
    r = measure_sgemm_peak(n=256, seconds=0.2)
    assert r["estimate"] is False and r["fp32_tflops"] > 0
    assert r["libraries"]["numpy"]["calls"] >= 3 and "256x256x256" in r["method"]
    assert r["fp32_tflops"] == max(v["tflops"] for v in r["libraries"].values())


class _Fixed(Backend):
    """A backend whose every call takes the same (short) time."""

    def _setup(self, workload):
        pass

    def step(self, view):
        return lambda: np.ones((64, 64), np.float32) @ np.ones((64, 64), np.float32)


def test_fraction_of_peak_uses_the_sgemm_measured_in_the_run(monkeypatch):
    monkeypatch.setattr(run_mod, "make_backend", lambda name, device, source: _Fixed(device=device, source=source))
    monkeypatch.setattr(run_mod, "measure_sgemm_peak", lambda seconds: {
        "fp32_tflops": 0.125, "method": "fake 2048 matmul", "loadavg_1m": 0.5, "estimate": False})
    cfg = run_mod.BenchConfig(backends=("torch",), sizes=((8, 8),), views=("e2e",), progress=False,
                              policy=RepetitionPolicy(warmup=0, reps=2, min_reps=1))
    doc = run_mod.run_benchmark(cfg)
    (rec,) = doc["results"]
    assert rec["fraction_of_peak"] == pytest.approx(rec["achieved_tflops"] / 0.125)
    assert doc["machine"]["cpu_sgemm"]["fp32_tflops"] == 0.125 and "cpu_sgemm_end" in doc["machine"]
    md = markdown(doc)
    assert "Peak used for % of peak (measured in this run):** SGEMM 125.0 GFLOP/s" in md
    assert "fake 2048 matmul" in md and "(not used: the measured SGEMM peak is)" in md


def test_without_the_measurement_the_estimate_is_used_and_said(monkeypatch):
    monkeypatch.setattr(run_mod, "make_backend", lambda name, device, source: _Fixed(device=device, source=source))
    cfg = run_mod.BenchConfig(backends=("torch",), sizes=((8, 8),), views=("e2e",), progress=False,
                              policy=RepetitionPolicy(warmup=0, reps=1, min_reps=1), sgemm_seconds=0)
    doc = run_mod.run_benchmark(cfg)
    assert "cpu_sgemm" not in doc["machine"]
    estimate = doc["machine"]["cpu_peak"]["fp32_tflops"]
    if estimate:
        assert doc["results"][0]["fraction_of_peak"] == pytest.approx(doc["results"][0]["achieved_tflops"] / estimate)
        assert "(used for % of peak)" in markdown(doc)


@pytest.mark.parametrize("name", ["openvino", "openvino-int8", "ort-int8", "nst-int8"])
def test_cpu_engine_rows_say_why_not_on_cuda(name, source):
    ok, why = make_backend(name, device="cuda", source=source).available()
    assert not ok and ("cpu" in why.lower() or "gpu" in why.lower() or "cuda" in why.lower())


@pytest.mark.skipif(not HAS_OPENVINO, reason="openvino is not installed")
def test_openvino_and_nst_rows_run_the_same_network_as_ort(source):
    wl = Workload(24, 36)
    outs = {}
    for name in ("ort", "openvino", "nst"):
        be = make_backend(name, device="cpu", source=source)
        assert be.available() == (True, ""), name
        be.setup(wl)
        out = be.step("e2e")()
        outs[name] = np.asarray(out).reshape(1, 24, 36, 3)
        if name == "nst":
            assert be.info()["runtime_backend"] == "openvino"  # auto picks OpenVINO on this x86 CPU
        be.close()
    assert outs["ort"].std() > 1
    for name in ("openvino", "nst"):
        assert np.abs(outs[name].astype(int) - outs["ort"]).max() <= 1, name


@pytest.mark.slow
@pytest.mark.skipif(not HAS_OPENVINO, reason="openvino is not installed")
def test_int8_rows_time_a_calibrated_qdq_file(source):
    pytest.importorskip("skimage")
    wl = Workload(32, 32)
    outs = []
    for name in ("ort-int8", "openvino-int8"):
        be = make_backend(name, device="cpu", source=source)
        assert be.available() == (True, "")
        assert be.precision == "int8"
        be.setup(wl)
        outs.append(np.asarray(be.step("e2e")()))
        be.close()
    assert source.int8_parity["precision"] == "int8" and source.int8_parity["images"]
    assert outs[0].shape == outs[1].shape == (1, 32, 32, 3)
