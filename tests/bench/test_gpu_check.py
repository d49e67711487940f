"""``python -m nst_bench.gpu_check``: the one-call GPU kit runs end to end on a CPU (--device cpu --quick), so it
is known to work before a GPU appears; its reports carry every number and every skip with its reason."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    proc = subprocess.run(
        [sys.executable, "-m", "nst_bench.gpu_check", "--out", str(out), "--device", "cpu", "--quick",
         # one small test file keeps the nested pytest short; on the GPU machine it is the whole tests/ tree
         "--pytest-paths", "tests/runtime/test_tensorrt_logic.py"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    return out, proc


def test_quick_cpu_run_ends_with_both_reports(quick_run):
    out, proc = quick_run
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    doc = json.loads((out / "gpu_check.json").read_text())
    md = (out / "gpu_check.md").read_text()
    from nst_bench.gpu_check import STEPS

    assert [s["name"] for s in doc["steps"]] == list(STEPS)
    status = {s["name"]: s["status"] for s in doc["steps"]}
    for name in ("environment", "pytest", "train_short", "fp16_parity", "training_throughput", "bench", "gatys"):
        assert status[name] == "ok", (name, next(s for s in doc["steps"] if s["name"] == name))
    assert status["fp16_layout"] == "skipped" and status["bench_compile"] == "skipped"  # CUDA-only, with reasons
    for heading in ("## Device and versions", "## FP16 parity", "## Training throughput", "## nst-bench",
                    "## Gatys baseline", "## Every skip"):
        assert heading in md


def test_quick_run_numbers_are_real_measurements(quick_run):
    out, _ = quick_run
    doc = json.loads((out / "gpu_check.json").read_text())
    steps = {s["name"]: s["result"] for s in doc["steps"]}
    env = steps["environment"]
    assert env["machine"]["libraries"]["torch"] and "onnxruntime_providers" in env
    # pytest ran with the marker expression and its per-test outcomes were read back
    assert steps["pytest"]["exit_code"] in (0, 5) and '-m gpu or tensorrt' in steps["pytest"]["command"]
    assert steps["pytest"]["tests"] and all(t["outcome"] == "skipped" for t in steps["pytest"]["tests"])
    parity = steps["fp16_parity"]["candidates"]["torch-fp16"]
    assert parity["per_image"] and parity["max_abs_levels"] >= 0
    assert parity["min_psnr_db"] is None or parity["min_psnr_db"] > 20  # FP16 of a real photo, not noise
    off = steps["training_throughput"]["amp"]["off"]
    assert off["images_per_s"] > 0
    assert off["projected_40000_iterations_s"] == pytest.approx(off["median_step_s"] * 40_000)
    bench = steps["bench"]["results"]
    assert {(r["backend"], r["size"]) for r in bench} >= {("torch", "32x32"), ("torch", "36x52")}
    assert all(r["median_ms"] > 0 for r in bench)
    assert steps["gatys"]["rows"][0]["seconds_500"] > 0


def test_every_skip_has_a_reason(quick_run):
    out, _ = quick_run
    doc = json.loads((out / "gpu_check.json").read_text())
    skips = doc["skips"]
    assert any(s["what"] == "fp16_layout" for s in skips) and any(s["what"] == "bench_compile" for s in skips)
    assert any(s["what"].startswith("pytest:") for s in skips)  # the GPU test, skipped here, with its reason
    assert all(s["reason"].strip() for s in skips)


def test_a_step_past_its_share_is_killed_and_reported(tmp_path):
    """A step in its own process that outlives its budget is stopped and recorded as a timeout."""
    from nst_bench.gpu_check import CheckConfig, _run_isolated

    cfg = CheckConfig(out=tmp_path, device="cpu", quick=True)
    cfg.work.mkdir(parents=True)
    outcome = _run_isolated("environment", cfg, {}, timeout_s=0.05)
    assert outcome.status == "timeout" and "0 s share" in outcome.reason


def test_skips_inside_steps_are_collected():
    from nst_bench.gpu_check import collect_skips, markdown

    doc = {"created_at": "t", "command": "c", "config": {"device": "cuda", "quick": False}, "wall_s": 1.0,
           "steps": [
               {"name": "bench", "status": "ok", "seconds": 1.0, "reason": None,
                "result": {"results": [], "notes": [],
                           "skipped": [{"backend": "trt", "reason": "the tensorrt Python package is not installed"}]}},
               {"name": "fp16_parity", "status": "ok", "seconds": 1.0, "reason": None,
                "result": {"reference": "r", "images": [], "candidates": {},
                           "skipped": {"ort-cuda-fp16": "onnxruntime-gpu is not on the lent GPU machine"}}},
               {"name": "gatys", "status": "timeout", "seconds": 9.0, "reason": "did not finish"},
           ]}
    doc["skips"] = collect_skips(doc)
    assert [(s["what"], s["status"]) for s in doc["skips"]] == [
        ("bench: trt", "skipped"), ("fp16_parity: ort-cuda-fp16", "skipped"), ("gatys", "timeout")]
    text = markdown(doc)
    assert "tensorrt Python package is not installed" in text and "onnxruntime-gpu" in text
