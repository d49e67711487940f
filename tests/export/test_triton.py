"""Triton model repository: parsed with Triton's own model-configuration protobuf from tritonclient."""

from __future__ import annotations

import dataclasses
import importlib.util
import shutil
from pathlib import Path

import pytest

pytest.importorskip("tritonclient", reason="tritonclient not installed (pip install nst[triton])")
pytest.importorskip("google.protobuf", reason="protobuf not installed")


def _model_config_pb2():
    """Triton's generated ``inference.ModelConfig`` protobuf module, shipped in ``tritonclient/grpc/``.

    Loaded from its file: ``import tritonclient.grpc`` refuses to import without the grpcio extra, but the
    generated module itself needs protobuf only.
    """
    root = Path(importlib.util.find_spec("tritonclient").submodule_search_locations[0])
    spec = importlib.util.spec_from_file_location("_triton_model_config_pb2", root / "grpc" / "model_config_pb2.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pb = _model_config_pb2()


def _parse(path):
    from google.protobuf import text_format

    return text_format.Parse(path.read_text(), pb.ModelConfig())


def test_onnx_repository(onnx_fp16_path, tmp_path):
    from nst_export.triton import triton_repo_from_artifact
    from nst_runtime.sidecar import read_sidecar
    from nst_train.checkpoint import file_sha256

    config_path = triton_repo_from_artifact(onnx_fp16_path, tmp_path / "repo", name="tiny")
    assert config_path == tmp_path / "repo" / "tiny" / "config.pbtxt"
    cfg = _parse(config_path)
    assert cfg.name == "tiny" and cfg.platform == "onnxruntime_onnx"
    assert cfg.max_batch_size >= 1
    (inp,), (out,) = cfg.input, cfg.output
    assert (inp.name, out.name) == ("input", "output")
    assert inp.data_type == out.data_type == pb.TYPE_UINT8
    assert list(inp.dims) == list(out.dims) == [-1, -1, 3]
    assert cfg.instance_group[0].count == 1
    assert cfg.HasField("dynamic_batching")
    model = tmp_path / "repo" / "tiny" / "1" / "model.onnx"
    assert file_sha256(model) == file_sha256(onnx_fp16_path)
    assert read_sidecar(model).artifact_sha256 == file_sha256(model)


def _fake_engine(onnx_path, tmp_path, max_batch):
    """An engine-shaped artifact (bytes are not a plan; only the repository layout is under test)."""
    from nst_runtime.sidecar import ShapeProfile, read_sidecar, sidecar_path

    engine = tmp_path / "m.fp16.engine"
    engine.write_bytes(b"plan")
    meta = dataclasses.replace(read_sidecar(onnx_path), kind="tensorrt", tensorrt_version="10.16.1.11",
                               profile=ShapeProfile(min=(1, 8, 8), opt=(2, 64, 64), max=(max_batch, 256, 256)))
    sidecar_path(engine).write_text(meta.to_json())
    return engine


def test_engine_repository_batches_up_to_the_profile(onnx_fp16_path, tmp_path):
    from nst_export.triton import TritonOptions, triton_repo_from_artifact
    from nst_runtime.errors import UsageError

    engine = _fake_engine(onnx_fp16_path, tmp_path, max_batch=4)
    cfg = _parse(triton_repo_from_artifact(engine, tmp_path / "repo", name="mosaic"))
    assert cfg.platform == "tensorrt_plan" and cfg.max_batch_size == 4
    assert cfg.instance_group[0].kind == pb.ModelInstanceGroup.KIND_GPU
    assert (tmp_path / "repo" / "mosaic" / "1" / "model.plan").read_bytes() == b"plan"
    with pytest.raises(UsageError, match="max batch"):
        triton_repo_from_artifact(engine, tmp_path / "repo2", name="m", options=TritonOptions(max_batch_size=8))
    with pytest.raises(UsageError, match="GPU"):
        triton_repo_from_artifact(engine, tmp_path / "repo2", name="m",
                                  options=TritonOptions(max_batch_size=2, instance_kind="KIND_CPU"))
    shutil.rmtree(tmp_path / "repo")


def test_version_compatible_engine_says_which_server_option_it_needs(onnx_fp16_path, tmp_path, caplog):
    """Triton refuses a version-compatible plan unless tritonserver runs with
    --backend-config=tensorrt,version-compatible=true: the config and the log say so; plain plans don't."""
    import logging

    from nst_export.triton import VERSION_COMPATIBLE_FLAG, triton_repo_from_artifact
    from nst_runtime.sidecar import read_sidecar, sidecar_path

    assert VERSION_COMPATIBLE_FLAG == "--backend-config=tensorrt,version-compatible=true"
    engine = _fake_engine(onnx_fp16_path, tmp_path, max_batch=2)
    plain = triton_repo_from_artifact(engine, tmp_path / "plain", name="m").read_text()
    assert "version-compatible" not in plain
    sidecar_path(engine).write_text(dataclasses.replace(read_sidecar(engine), version_compatible=True).to_json())
    with caplog.at_level(logging.WARNING, logger="nst_export.triton"):
        config = triton_repo_from_artifact(engine, tmp_path / "vc", name="m")
    assert VERSION_COMPATIBLE_FLAG in config.read_text()
    assert _parse(config).platform == "tensorrt_plan"  # the comment keeps it a valid ModelConfig
    assert any(VERSION_COMPATIBLE_FLAG in r.getMessage() for r in caplog.records)
