"""nst-info's library half (nst_runtime.info): what the sidecar says, the hash check, companions, backends."""

from __future__ import annotations

import json
import shutil

import pytest


def _copy(src, folder):
    from nst_runtime.sidecar import sidecar_path

    folder.mkdir(parents=True, exist_ok=True)
    for p in (src, sidecar_path(src)):
        shutil.copy(p, folder / p.name)
    return folder / src.name


def test_onnx_artifact_report(vivid_onnx):
    from nst_runtime.info import format_info, inspect_artifact

    info = inspect_artifact(vivid_onnx)
    assert info.hash_status == "verified" and info.kind == "onnx"
    assert any(r.backend == "onnxruntime" and r.place == "cpu" and r.can_run for r in info.backends)
    text = format_info(info)
    for expected in ("precision", "fp32", "verified", "uint8 NHWC RGB", "parity", "passed", "pytorch-fp32",
                     "onnxruntime on cpu: can run it", "min size"):
        assert expected in text, expected
    # the parity numbers are the sidecar's, per test batch
    assert "2x37x50" in text
    assert json.loads(json.dumps(info.to_dict()))["hash"]["status"] == "verified"


def test_changed_file_is_reported_not_raised(vivid_onnx, tmp_path):
    from nst_runtime.info import format_info, inspect_artifact

    copy = _copy(vivid_onnx, tmp_path / "m")
    data = bytearray(copy.read_bytes())
    data[-10] ^= 0xFF
    copy.write_bytes(bytes(data))
    info = inspect_artifact(copy)
    assert info.hash_status == "MISMATCH"
    assert "MISMATCH" in format_info(info) and "re-export" in format_info(info)
    assert inspect_artifact(copy, verify_hash=False).hash_status == "not checked"


def test_engine_report_names_tensorrt_gpu_and_why_it_cannot_run_here(tmp_path):
    import importlib.util

    from nst_runtime.info import format_info, inspect_artifact
    from nst_runtime.sidecar import ShapeProfile, Sidecar, sidecar_path

    engine = tmp_path / "m.fp16.engine"
    engine.write_bytes(b"not really a plan")
    meta = Sidecar(kind="tensorrt", precision="fp16", profile=ShapeProfile((1, 8, 8), (1, 1080, 1920),
                                                                           (1, 2160, 3840)),
                   tensorrt_version="10.16.1", gpu_name="NVIDIA H200", compute_capability="9.0")
    sidecar_path(engine).write_text(meta.to_json())
    info = inspect_artifact(engine)
    text = format_info(info)
    assert "10.16.1" in text and "NVIDIA H200" in text and "9.0" in text
    assert "min 1x8x8, opt 1x1080x1920, max 1x2160x3840" in text
    assert info.hash_status == "not recorded"
    rows = {(r.backend, r.place): r for r in info.backends}
    assert set(rows) == {("tensorrt", "cuda")}  # only TensorRT runs an engine
    if importlib.util.find_spec("tensorrt") is None:
        assert not rows["tensorrt", "cuda"].can_run and "not installed" in rows["tensorrt", "cuda"].reason


def test_companions(vivid_exact_onnx):
    from nst_runtime.info import inspect_artifact

    info = inspect_artifact(vivid_exact_onnx)
    assert any("tiling.onnx" in v for v in info.companions.values())


def test_foreign_source_is_shown(tmp_path, vivid_onnx):
    from nst_runtime.info import format_info, inspect_artifact
    from nst_runtime.sidecar import read_sidecar, sidecar_path

    copy = _copy(vivid_onnx, tmp_path / "f")
    meta = json.loads(sidecar_path(copy).read_text())
    meta["source"] = {"kind": "foreign-onnx", "file": "mosaic-9.onnx", "sha256": "ab" * 32, "opset": 9,
                      "input_shape": [1, 3, 224, 224], "layout": "NCHW", "mode": "dynamic", "why_fixed": [],
                      "tensorrt_lint": []}
    sidecar_path(copy).write_text(json.dumps(meta))
    assert read_sidecar(copy).source["opset"] == 9
    assert "foreign-onnx mosaic-9.onnx" in format_info(inspect_artifact(copy, verify_hash=False))


def test_no_sidecar(tmp_path):
    from nst_runtime.errors import ModelFileError
    from nst_runtime.info import inspect_artifact

    (tmp_path / "x.onnx").write_bytes(b"\x08\x07")
    with pytest.raises(ModelFileError, match="no sidecar"):
        inspect_artifact(tmp_path / "x.onnx")
