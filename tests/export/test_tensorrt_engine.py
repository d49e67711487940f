"""Engine step: option validation everywhere; the build itself only where TensorRT and a GPU exist."""

from __future__ import annotations

import importlib.util

import pytest
from nst_runtime.sidecar import ShapeProfile


def test_parse_shape():
    from nst_export.tensorrt_engine import parse_shape
    from nst_runtime.errors import UsageError

    assert parse_shape("4x1080x1920") == (4, 1080, 1920)
    assert parse_shape(" 1X8x8 ") == (1, 8, 8)
    for bad in ("1080x1920", "axbxc", "1x2x3x4", ""):
        with pytest.raises(UsageError, match="NxHxW"):
            parse_shape(bad, option="max-shape")


@pytest.mark.parametrize("profile, match", [
    (ShapeProfile(min=(1, 8, 8), opt=(1, 4, 64), max=(1, 64, 64)), "H, W >= 8"),
    (ShapeProfile(min=(1, 8, 8), opt=(2, 64, 64), max=(1, 64, 64)), "min <= opt <= max"),
    (ShapeProfile(min=(0, 8, 8), opt=(1, 64, 64), max=(1, 64, 64)), "N must be >= 1"),
])
def test_bad_profiles_are_usage_errors(profile, match):
    from nst_export.tensorrt_engine import validate_profile
    from nst_runtime.errors import UsageError

    with pytest.raises(UsageError, match=match):
        validate_profile(profile)


def test_default_profile_spans_thumbnails_to_4k():
    from nst_export.tensorrt_engine import DEFAULT_PROFILE, validate_profile
    from nst_export.wrapper import MIN_SIZE

    validate_profile(DEFAULT_PROFILE)
    assert DEFAULT_PROFILE.min[1:] == (MIN_SIZE, MIN_SIZE)
    assert DEFAULT_PROFILE.max[1] >= 2160 and DEFAULT_PROFILE.max[2] >= 3840


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed here")
def test_without_tensorrt_the_engine_step_says_so(onnx_fp32_path, tmp_path):
    from nst_export.tensorrt_engine import engine_from_onnx
    from nst_runtime.errors import BackendUnavailableError

    with pytest.raises(BackendUnavailableError, match=r"tensorrt.*--onnx-only") as info:
        engine_from_onnx(onnx_fp32_path, tmp_path / "m.engine")
    assert info.value.exit_code == 6
    assert list(tmp_path.iterdir()) == []


def test_lean_runtime_exclusion_needs_version_compatibility(onnx_fp32_path, tmp_path):
    from nst_export.tensorrt_engine import engine_from_onnx
    from nst_runtime.errors import UsageError

    with pytest.raises(UsageError, match="--version-compatible"):
        engine_from_onnx(onnx_fp32_path, tmp_path / "m.engine", exclude_lean_runtime=True)
    with pytest.raises(UsageError, match="optimization level"):
        engine_from_onnx(onnx_fp32_path, tmp_path / "m.engine", optimization_level=9)


@pytest.mark.tensorrt
@pytest.mark.parametrize("version_compatible", [False, True])
def test_engine_build_writes_plan_sidecar_and_timing_cache(onnx_fp16_path, tmp_path, version_compatible):
    from nst_export.tensorrt_engine import engine_from_onnx
    from nst_runtime.sidecar import read_sidecar
    from nst_train.checkpoint import file_sha256

    profile = ShapeProfile(min=(1, 8, 8), opt=(1, 64, 64), max=(2, 128, 128))
    cache = tmp_path / "timing.cache"
    engine = engine_from_onnx(onnx_fp16_path, tmp_path / "m.fp16.engine", profile=profile, timing_cache=cache,
                              optimization_level=1, version_compatible=version_compatible)
    meta = read_sidecar(engine)
    assert meta.kind == "tensorrt" and meta.precision == "fp16" and meta.profile == profile
    assert meta.artifact_sha256 == file_sha256(engine) and meta.onnx_sha256 == file_sha256(onnx_fp16_path)
    assert meta.tensorrt_version and meta.gpu_name and meta.compute_capability
    assert meta.version_compatible is version_compatible and meta.build_time_s > 0
    assert cache.stat().st_size > 0


@pytest.mark.parametrize(("options", "flags", "excluded"), [
    (dict(), set(), False),
    (dict(version_compatible=True), {"VERSION_COMPATIBLE"}, False),  # default: embed the lean runtime
    (dict(version_compatible=True, exclude_lean_runtime=True), {"VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME"}, True),
])
def test_version_compatible_embeds_the_lean_runtime_unless_excluded(onnx_fp32_path, tmp_path, fake_trt, options,
                                                                    flags, excluded):
    """--version-compatible must give a plan that survives a TensorRT upgrade: the lean runtime stays in the plan
    unless explicitly excluded, and the sidecar records what the runtime's version rule needs."""
    from nst_export.tensorrt_engine import engine_from_onnx
    from nst_runtime.sidecar import read_sidecar

    engine = engine_from_onnx(onnx_fp32_path, tmp_path / "m.engine", **options)
    assert fake_trt.builder_flags == flags
    assert fake_trt.parser_flags == {"NATIVE_INSTANCENORM"}  # never the InstanceNorm plugin
    meta = read_sidecar(engine)
    assert meta.version_compatible is bool(options.get("version_compatible"))
    assert meta.exclude_lean_runtime is excluded
    assert engine.read_bytes() == b"fake plan bytes"


def _with_sidecar(onnx_fp32_path, folder, **fields):
    """A copy of the session's ONNX file whose sidecar says ``fields`` (e.g. an AdaIN graph's min_size 16, a
    foreign graph's fixed batch)."""
    import dataclasses
    import shutil

    from nst_runtime.sidecar import read_sidecar, sidecar_path

    path = folder / "m.onnx"
    shutil.copy(onnx_fp32_path, path)
    sidecar_path(path).write_text(dataclasses.replace(read_sidecar(onnx_fp32_path), **fields).to_json())
    return path


def test_engine_profile_and_sidecar_take_the_graphs_minimum_size_and_fixed_batch(onnx_fp32_path, tmp_path,
                                                                                  fake_trt):
    from nst_export.tensorrt_engine import engine_from_onnx
    from nst_runtime.errors import UsageError
    from nst_runtime.sidecar import read_sidecar

    fixed = ShapeProfile(min=(1, 16, 16), opt=(1, 64, 64), max=(1, 1 << 15, 1 << 15))
    onnx = _with_sidecar(onnx_fp32_path, tmp_path, min_size=16, profile=fixed)
    asked = ShapeProfile(min=(1, 8, 8), opt=(2, 256, 256), max=(4, 512, 512))
    meta = read_sidecar(engine_from_onnx(onnx, tmp_path / "m.engine", profile=asked))
    assert meta.min_size == 16  # copied from the ONNX sidecar, not the TransformerNet's 8
    assert meta.profile == ShapeProfile(min=(1, 16, 16), opt=(1, 256, 256), max=(1, 512, 512))
    with pytest.raises(UsageError, match="H, W >= 16"):
        engine_from_onnx(onnx, tmp_path / "n.engine",
                         profile=ShapeProfile(min=(1, 8, 8), opt=(1, 12, 12), max=(1, 512, 512)))
