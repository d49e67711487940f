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
