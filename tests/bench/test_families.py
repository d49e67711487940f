"""nst-bench --families: rows per network family with GFLOP per image and the target ratios."""

from __future__ import annotations

import json

import pytest


def _row(family, backend, size, ms):
    return {"family": family, "backend": backend, "size": size, "median_ms": ms, "images_per_s": 1000 / ms,
            "gflop_per_image": 1.0, "loadavg": [0.1, 0.1, 0.1]}


def test_ratios_compare_within_one_backend_and_size():
    from nst_bench.families import attach_ratios, family_markdown

    rows = [_row("johnson2016", "openvino", "1080x1920", 1000.0), _row("slim", "openvino", "1080x1920", 150.0),
            _row("multistyle26", "openvino", "1080x1920", 1050.0), _row("slim", "onnxruntime", "1080x1920", 10.0),
            _row("johnson2016", "onnxruntime", "512x512", 300.0)]
    attach_ratios(rows)
    assert rows[1]["speedup_vs_johnson2016"] == pytest.approx(1000 / 150, rel=1e-3)
    assert rows[2]["ratio_vs_single_style"] == 1.05
    assert "speedup_vs_johnson2016" not in rows[3]  # no johnson2016 row at that size on that backend
    md = family_markdown({"results": rows, "skipped": [{"family": "adain", "reason": "x"}], "notes": ["n"]})
    assert "| slim | openvino | 1080x1920 | 150.0 | 6.67 | 1.0 | 6.67x faster | 0.1 |" in md
    assert "1.05x the time" in md and "skipped adain: x" in md


def test_gflop_count_of_an_onnx_graph_matches_the_network_formula(onnx_fp32_path):
    """The count used for imported graphs (from their Conv weights and output sizes) agrees with
    nst_train.model's count for nst's own johnson2016 export."""
    from nst_bench.families import _foreign_gflop_per_mpx
    from nst_train.model import gflop_per_megapixel

    assert _foreign_gflop_per_mpx(onnx_fp32_path) == pytest.approx(gflop_per_megapixel(), abs=0.1)


def test_unknown_family_is_a_usage_error():
    from nst_bench.families import FamilyBenchConfig
    from nst_runtime.errors import UsageError

    with pytest.raises(UsageError, match="unknown family resnet"):
        FamilyBenchConfig(families=("resnet",))


@pytest.mark.slow
def test_nst_bench_families_writes_rows_for_each_family(tmp_path, capsys):
    from nst_bench.cli import main

    assert main(["--families", "slim,multistyle26,johnson2016", "--sizes", "32", "--reps", "1", "--min-reps", "1",
                 "--budget-s", "1", "-o", str(tmp_path), "--no-progress"]) == 0, capsys.readouterr().err
    doc = json.loads((tmp_path / "families.json").read_text())
    families = {r["family"] for r in doc["results"]}
    assert families == {"slim", "multistyle26", "johnson2016"}
    multi = next(r for r in doc["results"] if r["family"] == "multistyle26")
    assert "ratio_vs_single_style" in multi and multi["gflop_per_image"] > 0
