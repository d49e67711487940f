"""nst-bench --checkpoint MODEL.onnx: an ONNX file is timed (imported first when it is a foreign network),
never handed to the checkpoint loader (whose answer is the pickle-safety message)."""

from __future__ import annotations

import json
import warnings

import pytest


@pytest.fixture(scope="module")
def foreign_onnx(tmp_path_factory, tiny_net):
    import torch

    path = tmp_path_factory.mktemp("bench-foreign") / "style-9.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(tiny_net, (torch.rand(1, 3, 64, 64) * 255,), str(path), opset_version=9, dynamo=False,
                              input_names=["input1"], output_names=["output1"])
        except TypeError as exc:
            pytest.skip(f"torch.onnx.export(dynamo=False) is gone in this torch: {exc}")
    return path


def test_model_source_imports_a_foreign_file(foreign_onnx):
    from nst_bench.backends import ModelSource, TorchBackend
    from nst_runtime.sidecar import read_sidecar

    source = ModelSource(checkpoint=foreign_onnx)
    try:
        assert source.onnx_input
        fp32 = source.onnx_path("fp32")
        assert read_sidecar(fp32).source["file"] == foreign_onnx.name
        assert read_sidecar(source.onnx_path("fp16")).precision == "fp16"
        ok, why = TorchBackend(device="cpu", source=source).available()
        assert not ok and "ONNX file" in why
    finally:
        source.close()


def test_model_source_times_an_nst_artifact_as_it_is(onnx_fp32_path):
    from nst_bench.backends import ModelSource

    source = ModelSource(checkpoint=onnx_fp32_path)
    try:
        assert source.onnx_path("fp32") == onnx_fp32_path
    finally:
        source.close()


@pytest.mark.slow
def test_nst_bench_with_an_onnx_checkpoint(foreign_onnx, tmp_path, capsys):
    from nst_bench.cli import main

    code = main(["--checkpoint", str(foreign_onnx), "--device", "cpu", "--backends", "torch,ort", "--sizes",
                 "32x32", "--batch", "1", "--views", "e2e", "--reps", "2", "--min-reps", "1", "--budget-s", "1",
                 "-o", str(tmp_path / "bench"), "-q"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "pickle" not in err
    results = json.loads((tmp_path / "bench" / "results.json").read_text())
    text = json.dumps(results)
    assert "ONNX file" in text  # the torch backend is listed as skipped, with the reason
    assert any(r.get("backend") == "ort" for r in results.get("records", results.get("results", [])))


@pytest.mark.slow
def test_int8_from_an_onnx_checkpoint(foreign_onnx):
    """INT8 is calibrated from the imported FP32 file; the ONNX file is never read as a checkpoint."""
    from nst_bench.backends import ModelSource, int8_unavailable
    from nst_runtime.sidecar import read_sidecar

    if int8_unavailable():
        pytest.skip(int8_unavailable())
    source = ModelSource(checkpoint=foreign_onnx)
    try:
        assert read_sidecar(source.onnx_path("int8")).precision == "int8"
    finally:
        source.close()


def test_an_fp16_artifact_is_timed_as_fp16_and_never_under_fp32(onnx_fp16_path, tmp_path):
    """--checkpoint NAME.fp16.onnx: the FP16 file serves FP16 rows (cached under its precision); FP32 and INT8
    rows are skipped with the reason, not timed on the wrong file (and no KeyError)."""
    from nst_bench import run as run_mod
    from nst_bench.backends import ModelSource
    from nst_bench.harness import RepetitionPolicy
    from nst_runtime.errors import BackendUnavailableError

    source = ModelSource(checkpoint=onnx_fp16_path, work_dir=tmp_path / "work")
    try:
        assert source.onnx_path("fp16") == onnx_fp16_path
        with pytest.raises(BackendUnavailableError, match="FP16 file; FP32 rows need"):
            source.onnx_path("fp32")
        assert source.missing_precision("int8") and source.missing_precision("fp16") is None
    finally:
        source.close()
    cfg = run_mod.BenchConfig(checkpoint=onnx_fp16_path, backends=("ort", "ort-int8", "nst"), sizes=((16, 16),),
                              views=("e2e",), progress=False, sgemm_seconds=0,
                              policy=RepetitionPolicy(warmup=0, reps=1, min_reps=1))
    doc = run_mod.run_benchmark(cfg)
    assert doc["results"] == []
    reasons = {s["backend"]: s["reason"] for s in doc["skipped"]}
    assert set(reasons) == {"ort", "ort-int8", "nst"} and all("FP16 file" in r for r in reasons.values())
