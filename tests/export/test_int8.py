"""INT8 export (nst_export.int8): calibration on photos only, the structure TensorRT/ORT/OpenVINO need, and a
quality gate that publishes nothing when it fails.

The test network is the shared seeded TransformerNet (random weights, perturbed norms, output spanning 0..255;
NOT trained): on it INT8 measures about 20 dB against PyTorch FP32, below the default gate, which is what
the "never published" test relies on. Quality on a trained network is measured by tools/int8_quality.py."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from nst_runtime import ModelFileError, Stylizer, UsageError
from nst_runtime.errors import ParityError
from nst_runtime.sidecar import read_sidecar, sidecar_path

skimage_data = pytest.importorskip("skimage.data", reason="the calibration photos come from scikit-image")

from nst_export.int8 import (  # noqa: E402
    DEFAULT_OPTIONS,
    Int8Options,
    calibration_set,
    check_int8_model,
    int8_onnx_from_onnx,
)

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field")
#: small enough to keep the tests fast: 64² calibration crops, held-out photos at most 96 px
FAST = dict(calibration_size=64, held_out_max_side=96, method="minmax")


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    from PIL import Image

    folder = tmp_path_factory.mktemp("photos")
    for name in PHOTOS:
        Image.fromarray(getattr(skimage_data, name)()[..., :3]).save(folder / f"{name}.png")
    (folder / "notes.txt").write_text("not a photo")
    return folder


@pytest.fixture(scope="module")
def int8_path(tmp_path_factory, onnx_fp32_path, checkpoint_path, photo_dir):
    out = tmp_path_factory.mktemp("int8") / "tiny.int8.onnx"
    return int8_onnx_from_onnx(onnx_fp32_path, out, calibration_dir=photo_dir, checkpoint=checkpoint_path,
                               options=Int8Options(min_psnr_db=10.0, **FAST))


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir())


def test_without_calibration_photos_it_is_a_clear_error(onnx_fp32_path, tmp_path):
    out = tmp_path / "m.int8.onnx"
    with pytest.raises(UsageError, match="needs calibration photos: --calibration-dir"):
        int8_onnx_from_onnx(onnx_fp32_path, out, calibration_dir=None)
    (tmp_path / "two").mkdir()
    for i in range(2):
        (tmp_path / "two" / f"{i}.png").write_bytes(b"")
    with pytest.raises(UsageError, match=r"found 2 photo\(s\).*at least 3.*never calibrated on generated"):
        int8_onnx_from_onnx(onnx_fp32_path, out, calibration_dir=tmp_path / "two")
    with pytest.raises(UsageError, match="not a folder"):
        int8_onnx_from_onnx(onnx_fp32_path, out, calibration_dir=tmp_path / "missing")
    assert _leftovers(tmp_path) == ["two"]


def test_photos_are_split_into_calibration_crops_and_held_out_images(photo_dir):
    s = calibration_set(photo_dir, Int8Options(calibration_size=48, held_out_max_side=80, held_out_every=3))
    # sorted names: astronaut, chelsea, coffee, hubble_deep_field, immunohistochemistry, rocket
    assert s.held_out_names == ("astronaut.png", "hubble_deep_field.png")
    assert set(s.calibration_names).isdisjoint(s.held_out_names) and len(s.calibration_names) == 4
    assert all(c.shape == (48, 48, 3) and c.dtype == np.uint8 for c in s.calibration)
    assert all(max(h.shape[:2]) <= 80 for h in s.held_out)
    assert s.calibration[0].std() > 10  # photos, not blank crops


def test_int8_file_has_the_structure_every_engine_needs(int8_path):
    import onnx

    model = onnx.load(int8_path)
    check_int8_model(model)  # Conv inputs dequantized, per-channel weights, zero points 0, norms float
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("InstanceNormalization") > 0 and ops.count("DequantizeLinear") >= 2 * ops.count("Conv")
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    conv_outputs = {n.output[0] for n in model.graph.node if n.op_type == "Conv"}
    quantized = {n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    assert not conv_outputs & quantized  # the default keeps convolution outputs float
    assert producers[model.graph.output[0].name] == "Cast"  # I/O untouched: uint8 out through the float path


def test_a_quantized_instance_norm_is_refused(int8_path):
    """In QDQ form a quantized norm reads its input through QuantizeLinear -> DequantizeLinear (a float tensor,
    so only the producer tells): the structure check refuses it."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(int8_path)
    norm = next(n for n in model.graph.node if n.op_type == "InstanceNormalization")
    data = norm.input[0]
    model.graph.initializer.extend([numpy_helper.from_array(np.array(0.05, np.float32), "qn_scale"),
                                    numpy_helper.from_array(np.array(0, np.int8), "qn_zero")])
    q = helper.make_node("QuantizeLinear", [data, "qn_scale", "qn_zero"], ["qn_q"], name="qn_quantize")
    dq = helper.make_node("DequantizeLinear", ["qn_q", "qn_scale", "qn_zero"], ["qn_dq"], name="qn_dequantize")
    norm.input[0] = "qn_dq"
    nodes = list(model.graph.node)
    at = nodes.index(norm)
    del model.graph.node[:]
    model.graph.node.extend([*nodes[:at], q, dq, *nodes[at:]])
    with pytest.raises(ModelFileError, match="reads its data through DequantizeLinear 'qn_dequantize'"):
        check_int8_model(model)


def test_the_int8_gate_fails_what_agreement_alone_misses(int8_path, tmp_path):
    """A NaN bias in the last convolution (float in QDQ form): the INT8 file outputs NaN, which the uint8 cast
    turns into black on both sides of a comparison with itself (PSNR infinite). The gate still fails it: NaN/Inf
    before the cast, and a flat image."""
    import onnx
    from nst_export.int8 import gate_int8
    from nst_export.parity import onnx_reference
    from onnx import numpy_helper
    from PIL import Image
    from skimage import data

    model = onnx.load(int8_path)
    inits = {i.name: i for i in model.graph.initializer}
    last = [n for n in model.graph.node if n.op_type == "Conv"][-1]
    bias = inits[last.input[2]]
    assert bias.data_type == onnx.TensorProto.FLOAT
    bias.CopyFrom(numpy_helper.from_array(np.full_like(numpy_helper.to_array(bias), np.nan), bias.name))
    bad = tmp_path / "bad.int8.onnx"
    onnx.save(model, str(bad))
    photo = np.asarray(Image.fromarray(data.astronaut()).resize((64, 48)))
    report = gate_int8(bad, onnx_reference(bad), [photo], ["astronaut"], reference_name="the same file")
    assert all(r.psnr_db is None for r in report.results)  # agreement is perfect
    assert not report.passed
    assert any("NaN/Inf" in f for f in report.failures) and any("degenerate output" in f for f in report.failures), \
        report.failures


def test_int8_file_passes_the_tensorrt_lint(int8_path):
    if importlib.util.find_spec("nst_export.trt_lint") is None:
        pytest.skip("nst_export.trt_lint is not in this checkout")
    import onnx
    from nst_export.trt_lint import tensorrt_lint

    assert tensorrt_lint(onnx.load(int8_path)) == []


def test_sidecar_reports_the_gate(int8_path, onnx_fp32_path):
    meta = read_sidecar(int8_path)
    assert meta.precision == "int8" and meta.kind == "onnx"
    p = meta.parity
    assert p["passed"] and p["reference"] == "pytorch-fp32" and p["tolerance"]["int8_min_psnr_db"] == 10.0
    engines = {i["engine"] for i in p["images"]}
    assert "onnxruntime" in engines
    assert ("openvino" in engines) == (importlib.util.find_spec("openvino") is not None)
    assert {"min_psnr_db", "mean_psnr_db", "max_abs_levels", "mean_abs_levels"} <= set(p)
    assert p["calibration"]["images"] and p["calibration"]["method"] == "minmax"
    from nst_runtime.artifact import file_sha256

    # the INT8 file names the FP32 file it was made from: the file's own hash, as its sidecar records it
    assert meta.onnx_sha256 == read_sidecar(onnx_fp32_path).artifact_sha256 == file_sha256(onnx_fp32_path)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_int8_runs_on_onnxruntime_and_openvino(int8_path, onnx_fp32_path, backend):
    if backend == "openvino" and importlib.util.find_spec("openvino") is None:
        pytest.skip("openvino is not installed")
    x = np.asarray(skimage_data.chelsea())[:96, :128]
    with Stylizer.open(int8_path, device="cpu", backend=backend) as s8, \
            Stylizer.open(onnx_fp32_path, device="cpu", backend="onnxruntime") as s32:
        got, ref = s8.stylize(x), s32.stylize(x)
    assert got.shape == x.shape and got.dtype == np.uint8
    mse = np.mean((got.astype(float) - ref) ** 2)
    assert 0 < mse and 10 * np.log10(255**2 / mse) > 10  # quantized (not identical), yet the same picture


def test_failing_gate_publishes_nothing(onnx_fp32_path, checkpoint_path, photo_dir, tmp_path):
    out = tmp_path / "tiny.int8.onnx"
    with pytest.raises(ParityError, match=r"failed the quality gate.*PSNR.*Nothing was written"):
        int8_onnx_from_onnx(onnx_fp32_path, out, calibration_dir=photo_dir, checkpoint=checkpoint_path,
                            options=Int8Options(min_psnr_db=60.0, **FAST))
    assert _leftovers(tmp_path) == []  # no file, no sidecar, no temp file
    assert not sidecar_path(out).exists()


def test_structure_check_refuses_a_float_graph(onnx_fp32_path):
    import onnx

    with pytest.raises(ModelFileError, match="not dequantized from int8"):
        check_int8_model(onnx.load(onnx_fp32_path))


def test_defaults_are_documented_values():
    # docs/export.md states these; change both together
    assert (DEFAULT_OPTIONS.method, DEFAULT_OPTIONS.calibration_size, DEFAULT_OPTIONS.max_calibration_images,
            DEFAULT_OPTIONS.held_out_every) == ("percentile", 256, 32, 5)
    with pytest.raises(UsageError):
        Int8Options(method="kl")  # type: ignore[arg-type]


def test_cli_int8_needs_calibration_photos(checkpoint_path, tmp_path, capsys):
    from nst_export.cli import main

    code = main([str(checkpoint_path), "-o", str(tmp_path / "out"), "--onnx-only", "--int8", "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "--int8 needs --calibration-dir" in err
    code = main([str(checkpoint_path), "-o", str(tmp_path / "out"), "--onnx-only", "--calibration-dir",
                 str(tmp_path), "-q"])
    assert code == 2 and "--calibration-dir is for --int8" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # refused before any work


def test_cli_defaults_are_the_librarys():
    from nst_export import cli

    assert cli.DEFAULT_INT8_MIN_PSNR == DEFAULT_OPTIONS.min_psnr_db
    assert cli.DEFAULT_CALIBRATION_METHOD == DEFAULT_OPTIONS.method


@pytest.mark.slow
def test_cli_int8_writes_the_gated_file(checkpoint_path, photo_dir, tmp_path, capsys):
    from nst_export.cli import main

    out = tmp_path / "out"
    code = main([str(checkpoint_path), "-o", str(out), "--onnx-only", "--no-tiling-graph", "--int8",
                 "--calibration-dir", str(photo_dir), "--calibration-method", "minmax", "--int8-min-psnr", "10",
                 "--name", "m", "-q"])
    assert code == 0, capsys.readouterr().err
    assert read_sidecar(out / "m.int8.onnx").precision == "int8"
    assert "int8" in capsys.readouterr().out  # the summary table lists it
