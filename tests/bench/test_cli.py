"""`nst-bench --quick` end to end on tiny sizes (structure only: no timing is asserted)."""

from __future__ import annotations

import json

import pytest
from nst_bench.cli import main

# the random network's ONNX export is the session's (tests/bench/conftest.py)
pytestmark = pytest.mark.usefixtures("shared_network_export")


def test_help_teaches_with_examples(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert "examples:" in text and "nst-bench --quick" in text and "--append" in text and "exit codes:" in text


def test_quick_run_on_tiny_sizes(tmp_path, capsys):
    out = tmp_path / "bench"
    rc = main(["--quick", "--device", "cpu", "--backends", "torch,ort,trt,torch-fp16,gatys", "--sizes", "32,40x24",
               "--batch", "1,2", "--reps", "1", "--min-reps", "1", "--warmup", "1", "--gatys-sizes", "16",
               "--gatys-iterations", "3", "--no-progress", "-o", str(out)])
    assert rc == 0
    doc = json.loads((out / "results.json").read_text())
    assert doc["machine"]["cpu_cores"] >= 1 and doc["machine"]["cpu_model"]
    keys = {(r["backend"], r["view"], r["size"], r["batch"]) for r in doc["results"]}
    for size in ("32x32", "24x40"):
        for b in (1, 2):
            assert ("torch", "compute", size, b) in keys and ("torch", "e2e", size, b) in keys
            assert ("ort", "e2e", size, b) in keys
    for r in doc["results"]:
        if r["backend"] != "gatys":
            assert r["reps"] == 1 and r["median_ms"] > 0 and r["flops_per_image"] > 0
    skipped = {s["backend"]: s["reason"] for s in doc["skipped"]}
    assert skipped["trt"] and skipped["torch-fp16"]
    gatys = [r for r in doc["results"] if r["backend"] == "gatys"]
    if gatys:  # nst_train.gatys present
        assert gatys[0]["size"] == "16x16" and gatys[0]["seconds_500"] > 0 and gatys[0]["extrapolated"]
    else:
        assert "gatys" in skipped
    assert (out / "results.md").stat().st_size > 0 and (out / "results.png").stat().st_size > 0
    printed = capsys.readouterr().out
    assert "skipped trt:" in printed and str(out / "results.json") in printed


def test_usage_error_exit_code(tmp_path, capsys):
    assert main(["--sizes", "nope", "-o", str(tmp_path)]) == 2
    assert "expected N or WIDTHxHEIGHT" in capsys.readouterr().err
