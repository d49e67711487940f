"""The FP16 ONNX: which tensors are FP16 and which stay FP32, parity, sidecar, no artifact on failure."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def fp16_model(onnx_fp16_path):
    import onnx

    return onnx.load(str(onnx_fp16_path))


def test_instance_norm_computes_in_fp32_and_convolutions_in_fp16(fp16_model):
    import onnx
    from nst_export.fp16 import fp32_island_problems, tensor_dtypes

    F32, F16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    types = tensor_dtypes(fp16_model)
    inits = {i.name: i for i in fp16_model.graph.initializer}
    norms = [n for n in fp16_model.graph.node if n.op_type == "InstanceNormalization"]
    convs = [n for n in fp16_model.graph.node if n.op_type == "Conv"]
    assert norms and convs
    for node in norms:
        assert [types[t] for t in (*node.input, *node.output)] == [F32] * (len(node.input) + len(node.output))
        # scale and bias are the original FP32 initializers, not FP16 copies cast back
        assert all(t in inits and inits[t].data_type == F32 for t in node.input[1:])
    for node in convs:
        assert all(types[t] == F16 for t in (*node.input, *node.output)), node.name
    assert fp32_island_problems(fp16_model) == []


def test_io_casts_stay_fp32(fp16_model):
    import onnx
    from nst_export.fp16 import tensor_dtypes

    types = tensor_dtypes(fp16_model)
    graph = fp16_model.graph
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    producers = {o: n for n in graph.node for o in n.output}
    consumers = [n for n in graph.node if graph.input[0].name in n.input and n.op_type in ("Cast", "Transpose")]
    # follow the input to the first Cast: it must produce FP32
    node = consumers[0]
    while node.op_type != "Cast":
        node = next(n for n in graph.node if node.output[0] in n.input)
    assert types[node.output[0]] == onnx.TensorProto.FLOAT
    # the output is a uint8 cast of FP32 rounded values
    node = producers[graph.output[0].name]
    while node.op_type != "Cast":
        node = producers[node.input[0]]
    assert types[node.input[0]] == onnx.TensorProto.FLOAT
    for op in ("Round", "Clip"):
        rounding = next(n for n in graph.node if n.op_type == op)
        assert types[rounding.output[0]] == onnx.TensorProto.FLOAT


def test_fp16_weights_are_half_the_size(onnx_fp32_path, onnx_fp16_path):
    ratio = onnx_fp16_path.stat().st_size / onnx_fp32_path.stat().st_size
    assert 0.45 < ratio < 0.6


def test_fp16_parity_and_sidecar(onnx_fp16_path, onnx_fp32_path, checkpoint_path, tiny_net):
    import onnxruntime as ort
    import torch
    from nst_export.parity import compare_images, parity_images
    from nst_export.wrapper import DeployWrapper
    from nst_runtime.sidecar import read_sidecar
    from nst_train.checkpoint import file_sha256

    meta = read_sidecar(onnx_fp16_path)
    assert meta.precision == "fp16" and meta.kind == "onnx"
    assert meta.artifact_sha256 == file_sha256(onnx_fp16_path)
    assert meta.onnx_sha256 == file_sha256(onnx_fp32_path)
    assert meta.checkpoint_sha256 == file_sha256(checkpoint_path)
    assert meta.parity["passed"] and meta.parity["precision"] == "fp16"
    assert meta.parity["min_psnr_db"] is None or meta.parity["min_psnr_db"] >= 40.0
    # an independent measurement on other images agrees with the gate
    sess = ort.InferenceSession(str(onnx_fp16_path), providers=["CPUExecutionProvider"])
    x = parity_images([(2, 41, 58)], seed=7)[0]
    with torch.inference_mode():
        ref = DeployWrapper(tiny_net)(torch.from_numpy(x)).numpy()
    r = compare_images(sess.run(None, {"input": x})[0], ref)
    assert r.psnr_db is None or r.psnr_db >= 40.0


def test_fp16_without_checkpoint_uses_the_fp32_onnx_as_reference(onnx_fp32_path, tmp_path):
    from nst_export.fp16 import fp16_onnx_from_onnx
    from nst_runtime.sidecar import read_sidecar

    out = fp16_onnx_from_onnx(onnx_fp32_path, tmp_path / "m.fp16.onnx", parity_shapes=[(1, 24, 30)])
    meta = read_sidecar(out)
    assert meta.parity["reference"].startswith("onnx-fp32")
    assert meta.checkpoint_sha256 == read_sidecar(onnx_fp32_path).checkpoint_sha256


def test_fp16_failing_the_gate_leaves_nothing(onnx_fp32_path, checkpoint_path, tmp_path):
    from nst_export.fp16 import fp16_onnx_from_onnx
    from nst_export.parity import ParityTolerance
    from nst_runtime.errors import ParityError

    impossible = ParityTolerance(fp16_min_psnr_db=200.0, fp16_max_abs_levels=0)
    with pytest.raises(ParityError, match=r"PSNR|max") as info:
        fp16_onnx_from_onnx(onnx_fp32_path, tmp_path / "m.fp16.onnx", checkpoint=checkpoint_path,
                            tolerance=impossible)
    assert "fp16" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_fp16_of_a_non_onnx_file_is_a_clear_error(tmp_path):
    from nst_export.fp16 import fp16_onnx_from_onnx
    from nst_runtime.errors import ModelFileError

    bogus = tmp_path / "x.onnx"
    bogus.write_bytes(b"\x00garbage")
    with pytest.raises(ModelFileError, match=r"x\.onnx"):
        fp16_onnx_from_onnx(bogus, tmp_path / "y.onnx")
    with pytest.raises(ModelFileError, match="no such"):
        fp16_onnx_from_onnx(tmp_path / "missing.onnx", tmp_path / "y.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.onnx"]


def test_dynamic_shapes_through_the_fp16_file(onnx_fp16_path):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_fp16_path), providers=["CPUExecutionProvider"])
    for n, h, w in ((1, 8, 8), (3, 19, 26)):
        x = np.random.default_rng(h).integers(0, 256, (n, h, w, 3), dtype=np.uint8)
        y = sess.run(None, {"input": x})[0]
        assert y.shape == x.shape and y.dtype == np.uint8
