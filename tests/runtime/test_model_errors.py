"""Clear errors before deserialization: wrong file type, missing/mismatched sidecar, hash, corrupt model."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
from nst_runtime import BackendUnavailableError, ModelFileError, Stylizer
from nst_runtime.artifact import check_compute_capability, check_tensorrt_version
from nst_runtime.sidecar import ShapeProfile, Sidecar, read_sidecar, sidecar_path


@pytest.fixture()
def model_copy(vivid_onnx, tmp_path) -> Path:
    dst = tmp_path / "m.onnx"
    shutil.copy(vivid_onnx, dst)
    shutil.copy(sidecar_path(vivid_onnx), sidecar_path(dst))
    return dst


def _rewrite_sidecar(path: Path, **changes) -> None:
    meta = dataclasses.replace(read_sidecar(path), **changes)
    sidecar_path(path).write_text(meta.to_json())


def test_wrong_file_type(tmp_path):
    f = tmp_path / "model.txt"
    f.write_text("hello")
    with pytest.raises(ModelFileError, match=r"expected an ONNX file \(\.onnx\) or a TensorRT engine"):
        Stylizer.open(f)


def test_missing_model_and_missing_sidecar(model_copy, tmp_path):
    with pytest.raises(ModelFileError, match="no such model file"):
        Stylizer.open(tmp_path / "nope.onnx")
    sidecar_path(model_copy).unlink()
    with pytest.raises(ModelFileError, match="no sidecar"):
        Stylizer.open(model_copy)


def test_hash_mismatch_is_refused_before_loading(model_copy):
    data = bytearray(model_copy.read_bytes())
    data[-10] ^= 0xFF
    model_copy.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="does not match the sidecar"):
        Stylizer.open(model_copy, device="cpu")


def test_corrupt_model_with_matching_hash(model_copy):
    from nst_runtime.artifact import file_sha256

    model_copy.write_bytes(b"\x08\x07this is not a protobuf" * 50)
    _rewrite_sidecar(model_copy, artifact_sha256=file_sha256(model_copy))
    with pytest.raises(ModelFileError, match=r"not a valid ONNX file|ONNX Runtime cannot load it"):
        Stylizer.open(model_copy, device="cpu")


def test_sidecar_of_another_kind_or_contract(model_copy):
    _rewrite_sidecar(model_copy, kind="tensorrt")
    with pytest.raises(ModelFileError, match="describes a 'tensorrt' artifact"):
        Stylizer.open(model_copy)
    _rewrite_sidecar(model_copy, kind="onnx")
    raw = json.loads(sidecar_path(model_copy).read_text())
    raw["input"]["dtype"] = "float32"
    sidecar_path(model_copy).write_text(json.dumps(raw))
    with pytest.raises(ModelFileError, match="expects uint8 NHWC RGB"):
        Stylizer.open(model_copy)


def test_engine_without_tensorrt_here_points_to_the_onnx_fallback(model_copy):
    engine = model_copy.with_name("m.engine")
    engine.write_bytes(b"not really an engine")
    meta = Sidecar(kind="tensorrt", precision="fp16", profile=ShapeProfile((1, 8, 8), (1, 256, 256), (1, 512, 512)),
                   tensorrt_version="10.16.1", compute_capability="9.0")
    sidecar_path(engine).write_text(meta.to_json())
    with pytest.raises(BackendUnavailableError, match=r"m\.onnx"):
        Stylizer.open(engine)


ENGINE = Path("m.fp16.engine")


@pytest.mark.parametrize(("built", "vc", "installed", "ok"), [
    ("10.16.1.11", False, "10.16.1.11", True),
    ("10.16.1.11", False, "10.16.1.2", True),
    ("10.16.1.11", False, "10.15.0.1", False),
    ("10.16.1.11", False, "11.4.0.106", False),
    ("10.8.0.43", True, "10.16.1.11", True),
    ("10.16.1.11", True, "10.8.0.43", False),
    ("10.16.1.11", True, "11.4.0.106", False),
])
def test_tensorrt_version_rule(built, vc, installed, ok):
    meta = Sidecar(kind="tensorrt", precision="fp16", tensorrt_version=built, version_compatible=vc)
    if ok:
        check_tensorrt_version(ENGINE, meta, installed)
    else:
        with pytest.raises(BackendUnavailableError, match=f"this machine has {installed}"):
            check_tensorrt_version(ENGINE, meta, installed)


def test_other_gpu_architecture_is_refused_with_the_fix():
    meta = Sidecar(kind="tensorrt", precision="fp16", compute_capability="8.9", gpu_name="NVIDIA L4")
    check_compute_capability(ENGINE, meta, "8.9", "NVIDIA L40S")
    with pytest.raises(BackendUnavailableError, match=r"built for compute capability 8\.9 \(NVIDIA L4\).*9\.0"):
        check_compute_capability(ENGINE, meta, "9.0", "NVIDIA H100")
