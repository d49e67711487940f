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


def test_each_model_file_is_hashed_once_per_open(onnx_fp32_path, onnx_fp16_path, tmp_path, monkeypatch):
    """On a GPU provider the FP16 sibling runs: it is hashed once and model.onnx, which does not run, not at all
    (the provider is simulated: a CPU session stands in for CUDA's)."""
    from nst_runtime import Stylizer, artifact, onnxruntime_backend

    for src, name in ((onnx_fp32_path, "tiny.onnx"), (onnx_fp16_path, "tiny.fp16.onnx")):
        shutil.copy(src, tmp_path / name)
        shutil.copy(sidecar_path(src), sidecar_path(tmp_path / name))
    hashed: list[str] = []
    real = artifact.file_sha256
    monkeypatch.setattr(artifact, "file_sha256", lambda path, **kw: hashed.append(Path(path).name) or real(path, **kw))
    with Stylizer.open(tmp_path / "tiny.onnx", device="cpu", backend="onnxruntime"):
        pass
    assert hashed == ["tiny.onnx"]
    hashed.clear()
    monkeypatch.setattr(onnxruntime_backend, "select_providers",
                        lambda *a, **k: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    cpu_call = onnxruntime_backend.SessionFromOnnx.__call__

    def cpu_session(self):
        self.providers = ["CPUExecutionProvider"]
        return cpu_call(self)

    monkeypatch.setattr(onnxruntime_backend.SessionFromOnnx, "__call__", cpu_session)
    with Stylizer.open(tmp_path / "tiny.onnx", backend="onnxruntime") as s:
        assert s.path.name == "tiny.fp16.onnx"
    assert hashed == ["tiny.fp16.onnx"]


def test_an_engine_is_hashed_once_and_the_verified_bytes_are_deserialized(tmp_path, monkeypatch):
    """open_artifact reads and hashes an engine's bytes before TensorRT is imported; the loader deserializes
    those very bytes without reading or hashing the file again."""
    import hashlib

    from nst_runtime import tensorrt_backend as tb
    from nst_runtime.artifact import open_artifact
    from nst_runtime.sidecar import Sidecar, sidecar_path

    engine = tmp_path / "m.fp16.engine"
    engine.write_bytes(b"engine bytes" * 40)
    sidecar_path(engine).write_text(Sidecar(kind="tensorrt", precision="fp16", tensorrt_version="10.16.1",
                                            compute_capability="9.0",
                                            artifact_sha256=hashlib.sha256(engine.read_bytes()).hexdigest()).to_json())
    art = open_artifact(engine, keep_bytes=True)
    assert art.verified_bytes == engine.read_bytes()
    engine.write_bytes(b"swapped after the check")  # the loader must not read the file again
    calls = []
    monkeypatch.setattr(hashlib, "sha256", lambda *a: calls.append(a) or pytest.fail("hashed twice"))
    loader = tb.EngineFromPath(engine, sidecar=art.sidecar, verified_bytes=art.verified_bytes)

    class Stop(Exception):
        pass

    class Trt:
        __version__ = "10.16.1"
        Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})

        def Runtime(self, logger):
            return type("R", (), {"deserialize_cuda_engine": lambda self, blob: seen.append(blob) or
                                  (_ for _ in ()).throw(Stop())})()

    seen: list[bytes] = []
    from nst_runtime.sidecar import ShapeProfile

    monkeypatch.setattr(tb, "profile_from_sidecar", lambda meta, path: ShapeProfile((1, 8, 8), (1, 8, 8), (1, 8, 8)))
    monkeypatch.setattr(tb, "_tensorrt_module", lambda meta: Trt())
    monkeypatch.setattr(tb, "_check", lambda result, what: 1 if what == "cudaGetDeviceCount" else
                        type("P", (), {"name": b"GPU", "major": 9, "minor": 0})())
    monkeypatch.setattr(tb, "_cudart", lambda: type("C", (), {
        "cudaGetDeviceCount": lambda self: None, "cudaSetDevice": lambda self, d: None,
        "cudaGetDeviceProperties": lambda self, d: None})())
    with pytest.raises(Stop):
        loader()
    assert seen == [b"engine bytes" * 40] and calls == []
