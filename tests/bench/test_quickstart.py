"""The quickstart end to end on tiny sizes (random VGG: the pipeline runs; quality is not judged)."""

from __future__ import annotations

import json

import pytest
from nst_bench.quickstart import QuickstartConfig, run_quickstart


@pytest.mark.slow
def test_quickstart_runs_every_stage(tmp_path, capsys):
    cfg = QuickstartConfig(out=tmp_path / "demo", image_size=32, samples=2, steps=2, batch_size=2,
                           vgg_weights="random", bench_sizes=((32, 32),),
                           # the real-style stage into a cache of its own, without downloads (tests/models too)
                           nst_home=tmp_path / "nst-home", pull_urls=False)
    res = run_quickstart(cfg)
    assert len(res.content) == 2 and res.style is not None and res.style.is_file()
    assert res.checkpoint is not None and res.checkpoint.is_file()
    assert any(p.suffix == ".onnx" for p in res.artifacts)
    assert len([p for p in res.stylized if p.suffix in (".png", ".jpg", ".jpeg", ".webp")]) == 2
    doc = json.loads((res.bench_dir / "results.json").read_text())
    assert {r["backend"] for r in doc["results"]} >= {"torch", "ort"}
    assert any(s["backend"] == "trt-fp16" for s in doc["skipped"]) or any(
        r["backend"] == "trt-fp16" for r in doc["results"])
    out = capsys.readouterr().out
    assert "Outputs in" in out and str(cfg.out) in out
    assert "RANDOM VGG-16" in out  # the demo never presents a random-loss-network result as a style
    # every stage's own entry point ran (no fallback) now that all stages have landed
    assert res.fallbacks == {}, res.fallbacks
