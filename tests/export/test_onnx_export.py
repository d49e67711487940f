"""The FP32 export: graph contract, dynamic shapes through one file, sidecar, bad inputs leave nothing behind."""

from __future__ import annotations

import json

import numpy as np
import pytest


def _model(path):
    import onnx

    return onnx.load(str(path))


def test_graph_keeps_instance_norm_and_passes_the_checker(onnx_fp32_path, tiny_net):
    import onnx
    from nst_export.onnx_export import check_onnx_model

    model = _model(onnx_fp32_path)
    onnx.checker.check_model(model, full_check=True)
    ops = [n.op_type for n in model.graph.node]
    n_norms = sum(1 for name, _ in tiny_net.named_modules() if name.split(".")[-1].startswith("in"))
    assert ops.count("InstanceNormalization") == n_norms
    assert ops.count("Conv") == sum(1 for m in tiny_net.modules() if type(m).__name__ == "Conv2d")
    check_onnx_model(model, expect_precision="fp32")  # the export's own post-condition, rerun on the file


def test_io_contract_uint8_nhwc_with_named_dynamic_dims(onnx_fp32_path):
    import onnx
    from nst_export.wrapper import INPUT_NAME, OUTPUT_NAME

    model = _model(onnx_fp32_path)
    for value, name in ((model.graph.input, INPUT_NAME), (model.graph.output, OUTPUT_NAME)):
        assert [v.name for v in value] == [name]
        t = value[0].type.tensor_type
        assert t.elem_type == onnx.TensorProto.UINT8
        assert [d.dim_param for d in t.shape.dim[:3]] == ["batch", "height", "width"]
        assert t.shape.dim[3].dim_value == 3
    opset = {o.domain: o.version for o in model.opset_import}[""]
    from nst_export.onnx_export import MAX_OPSET, MIN_OPSET

    assert MIN_OPSET <= opset <= MAX_OPSET


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 20, 31), (2, 45, 17), (1, 64, 100)])
def test_one_file_serves_many_batch_and_image_sizes(onnx_fp32_path, tiny_net, shape):
    import onnxruntime as ort
    import torch
    from nst_export.wrapper import DeployWrapper

    sess = ort.InferenceSession(str(onnx_fp32_path), providers=["CPUExecutionProvider"])
    n, h, w = shape
    x = np.random.default_rng(sum(shape)).integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    out = sess.run(None, {"input": x})[0]
    assert out.shape == x.shape and out.dtype == np.uint8
    with torch.inference_mode():
        ref = DeployWrapper(tiny_net)(torch.from_numpy(x)).numpy()
    assert np.abs(out.astype(int) - ref.astype(int)).max() <= 1
    # batch items are independent (InstanceNorm statistics per image): the first item alone gives the same
    single = sess.run(None, {"input": x[:1]})[0]
    np.testing.assert_array_equal(single[0], out[0])


def test_sidecar_describes_the_file(onnx_fp32_path, checkpoint_path):
    from nst_runtime.sidecar import read_sidecar, sidecar_path
    from nst_train.checkpoint import file_sha256

    meta = read_sidecar(onnx_fp32_path)
    assert meta.kind == "onnx" and meta.precision == "fp32"
    assert meta.artifact_sha256 == file_sha256(onnx_fp32_path)
    assert meta.checkpoint_sha256 == file_sha256(checkpoint_path)
    assert (meta.input.name, meta.input.dtype, meta.input.layout) == ("input", "uint8", "NHWC")
    assert meta.output.name == "output" and meta.min_size == 8 and meta.opset is not None
    parity = meta.parity
    assert parity["passed"] is True and parity["reference"] == "pytorch-fp32"
    assert parity["max_abs_levels"] <= parity["tolerance"]["fp32_max_abs_levels"]
    shapes = [tuple(i["shape"]) for i in parity["images"]]
    assert len({s[1:3] for s in shapes}) >= 2
    assert any(s[1] % 4 or s[2] % 4 for s in shapes), "parity must include sizes that are not multiples of 4"
    raw = json.loads(sidecar_path(onnx_fp32_path).read_text())
    assert raw["schema_version"] == meta.schema_version


def test_opset_outside_the_supported_range_is_a_usage_error(tiny_net):
    from nst_export.onnx_export import MIN_OPSET, export_onnx_model
    from nst_runtime.errors import UsageError

    with pytest.raises(UsageError, match="opset"):
        export_onnx_model(tiny_net, opset=MIN_OPSET - 1)


def test_contract_check_rejects_a_graph_without_instance_norm(onnx_fp32_path):
    from nst_export.onnx_export import check_onnx_model
    from nst_runtime.errors import ModelFileError

    model = _model(onnx_fp32_path)
    for node in model.graph.node:
        if node.op_type == "InstanceNormalization":
            node.op_type = "MeanVarianceNormalization"  # what a decomposed/replaced norm would look like
            del node.input[1:]
            del node.attribute[:]
    with pytest.raises(ModelFileError, match="InstanceNormalization"):
        check_onnx_model(model)


def test_contract_check_rejects_fixed_sizes(onnx_fp32_path):
    from nst_export.onnx_export import check_onnx_model
    from nst_runtime.errors import ModelFileError

    model = _model(onnx_fp32_path)
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 256
    with pytest.raises(ModelFileError, match="height is fixed"):
        check_onnx_model(model)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", "foreign"])
def test_bad_checkpoint_raises_and_leaves_no_files(tmp_path, content):
    import torch
    from nst_export.onnx_export import onnx_from_checkpoint
    from nst_runtime.errors import CheckpointError

    ckpt = tmp_path / "bad.pth"
    if content == "foreign":
        torch.save({"conv.weight": torch.zeros(3, 3, 3, 3)}, ckpt)
    else:
        ckpt.write_bytes(content)
    out_dir = tmp_path / "out"
    with pytest.raises(CheckpointError, match=r"bad\.pth"):
        onnx_from_checkpoint(ckpt, out_dir / "m.onnx")
    assert not out_dir.exists() or not any(out_dir.iterdir())


def test_failed_parity_leaves_no_artifact(tmp_path, checkpoint_path, onnx_fp32_path, monkeypatch):
    """The gate fails (a reference 3 levels off): nothing is left behind. The traced graph is the session's
    export of the same network (tracing is tested above; this test is about the gate and the temp file)."""
    import nst_export.onnx_export as onnx_export
    import onnx
    from nst_runtime.errors import ParityError

    monkeypatch.setattr(onnx_export, "export_onnx_model", lambda net, **kw: onnx.load(str(onnx_fp32_path)))
    real = onnx_export.torch_reference

    def off_by_three(net):
        ref = real(net)
        return lambda x: np.clip(ref(x).astype(int) + 3, 0, 255).astype(np.uint8)

    monkeypatch.setattr(onnx_export, "torch_reference", off_by_three)
    out = tmp_path / "m.onnx"
    with pytest.raises(ParityError) as info:
        onnx_export.onnx_from_checkpoint(checkpoint_path, out)
    msg = str(info.value)
    # every batch fails and every one is listed with its numbers
    assert msg.count("max |diff|") == 3 and "Nothing was written" in msg
    assert list(tmp_path.iterdir()) == []
