"""Report writers: results.json schema, Markdown tables, PNG plot, --append merging."""

from __future__ import annotations

import json

import pytest
from nst_bench.report import markdown, merge_into, write_reports
from nst_bench.run import attach_speedups
from nst_runtime.errors import UsageError

REQUIRED = {"backend", "size", "batch", "median_ms", "p90_ms", "p99_ms", "images_per_s"}


def _ff(backend, view, h, w, batch, ms):
    return {"backend": backend, "device": "cpu", "precision": "fp32", "view": view, "size": f"{h}x{w}",
            "height": h, "width": w, "batch": batch, "median_ms": ms, "p90_ms": ms * 1.1, "p99_ms": ms * 1.2,
            "images_per_s": batch * 1000 / ms, "reps": 5, "achieved_tflops": 0.05, "fraction_of_peak": 0.3,
            "peak_memory_mb": 300.0, "flops_per_image": 1}


def _gatys(h, per_iter_ms):
    rec = {"backend": "gatys", "device": "cpu", "precision": "fp32", "view": "e2e", "size": f"{h}x{h}",
           "height": h, "width": h, "batch": 1, "median_ms": per_iter_ms, "p90_ms": per_iter_ms,
           "p99_ms": per_iter_ms, "images_per_s": 1.0, "measured_iterations": 4, "extrapolated": True,
           "latency_unit": "per_iteration"}
    for n in (100, 300, 500):
        rec[f"seconds_{n}"] = per_iter_ms * n / 1000.0
    return rec


@pytest.fixture()
def doc():
    results = [_ff("torch", "compute", 256, 256, 1, 200.0), _ff("torch", "e2e", 256, 256, 1, 210.0),
               _ff("ort", "e2e", 256, 256, 1, 150.0), _ff("torch", "e2e", 1080, 1920, 1, 9000.0),
               _ff("ort", "e2e", 256, 256, 4, 580.0), _gatys(256, 300.0)]
    attach_speedups(results)
    return {
        "schema_version": 1, "created_at": "2020-01-01T00:00:00+00:00", "wall_s": 1.0,
        "machine": {"cpu_model": "Test CPU", "cpu_cores": 2, "gpu": None, "libraries": {"torch": "x"},
                    "cpu_peak": {"fp32_tflops": 0.1, "formula": "2 x 1 x 50"}, "loadavg_start": [0, 0, 0]},
        "config": {"device": "cpu"}, "results": results,
        "skipped": [{"backend": "trt", "reason": "no GPU here"}], "notes": ["a note"],
    }


def test_speedups_attached_to_batch1_records_with_a_gatys_size(doc):
    by = {(r["backend"], r["view"], r["size"], r["batch"]): r for r in doc["results"]}
    assert by[("ort", "e2e", "256x256", 1)]["speedup_vs_gatys"]["300"] == pytest.approx(90.0 / 0.150)
    assert "speedup_vs_gatys" not in by[("ort", "e2e", "256x256", 4)]  # batch 4: no Johnson comparison
    assert "speedup_vs_gatys" not in by[("torch", "e2e", "1080x1920", 1)]  # no Gatys at that size


def test_write_reports_produces_json_md_png(doc, tmp_path):
    paths = write_reports(doc, tmp_path / "out")
    loaded = json.loads(paths["json"].read_text())
    assert {"machine", "results", "skipped", "schema_version"} <= set(loaded)
    for r in loaded["results"]:
        assert REQUIRED <= set(r), r
    g = next(r for r in loaded["results"] if r["backend"] == "gatys")
    assert {"seconds_100", "seconds_300", "seconds_500"} <= set(g)
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths["png"].stat().st_size > 5000
    md = paths["md"].read_text()
    assert md == markdown(doc)


def test_markdown_tables(doc):
    md = markdown(doc)
    assert "Test CPU, 2 cores" in md
    assert "| backend | view | size | batch | median ms |" in md
    rows = [line for line in md.splitlines() if line.startswith("| ort | e2e | 256×256 | 1 |")]
    assert len(rows) == 1 and "| 150 |" in rows[0]
    assert "Johnson et al. 2016, Table 1" in md
    gatys_row = next(line for line in md.splitlines() if line.startswith("| 256×256 | 30 |"))
    assert "| ort |" in gatys_row and "(× N extrapolated)" in gatys_row  # fastest e2e backend at 256²
    assert "| trt | all | no GPU here |" in md
    assert "- a note" in md


def test_merge_into_replaces_only_rerun_backends(doc, tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(doc))
    new = {**doc, "created_at": "later", "results": [_gatys(256, 100.0)], "skipped": [],
           "notes": [], "machine": {**doc["machine"], "loadavg_end": [1, 1, 1]}}
    merged = merge_into(path, new)
    gatys = [r for r in merged["results"] if r["backend"] == "gatys"]
    assert len(gatys) == 1 and gatys[0]["median_ms"] == 100.0
    assert sum(r["backend"] == "torch" for r in merged["results"]) == 3
    ort = next(r for r in merged["results"] if r["backend"] == "ort" and r["batch"] == 1)
    assert ort["speedup_vs_gatys"]["300"] == pytest.approx(30.0 / 0.150)  # recomputed with the new Gatys
    assert merged["skipped"] == doc["skipped"] and merged["appended_runs"]
    with pytest.raises(UsageError):
        merge_into(path, {**new, "config": {"device": "cuda"}})
    assert merge_into(tmp_path / "absent.json", new) is new


def test_summary_table_for_the_readme(doc):
    from nst_bench.report import summary_table

    table = summary_table(doc)
    lines = table.strip().splitlines()
    assert lines[0] == "| size (H×W) | torch e2e ms | ort e2e ms | Gatys 300 it, s | speed-up vs Gatys 300 it |"
    row256 = next(line for line in lines if line.startswith("| 256×256 |"))
    assert "| 210 | 150 | 90 (extrap.) | 600× (ort) |" in row256
    row1080 = next(line for line in lines if line.startswith("| 1080×1920 |"))
    assert row1080.endswith("| – | – |")
