"""The TensorRT compatibility lint: each rule with a graph that breaks it, nst's own graphs pass, and the old
deploy wrapper (uint8 Transpose at both ends) fails, before anything reaches a TensorRT builder."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

F, U8, I8, I64 = TensorProto.FLOAT, TensorProto.UINT8, TensorProto.INT8, TensorProto.INT64


def _model(nodes, inputs, outputs, *, initializers=(), opset=18, extra_opsets=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    opsets = [helper.make_opsetid("", opset), *(helper.make_opsetid(d, v) for d, v in extra_opsets)]
    return helper.make_model(graph, opset_imports=opsets)


def _vi(name, elem, shape=("n", "h", "w", 3)):
    return helper.make_tensor_value_info(name, elem, None if shape is None else list(shape))


def _norm_tail(x: str, out: str) -> tuple[list, list]:
    """x (float NCHW) -> InstanceNormalization -> out; with its scale/bias initializers."""
    scale = numpy_helper.from_array(np.ones(3, np.float32), "scale")
    bias = numpy_helper.from_array(np.zeros(3, np.float32), "bias")
    return [helper.make_node("InstanceNormalization", [x, "scale", "bias"], [out], name="norm")], [scale, bias]


def _good_graph():
    """The contract done right: uint8 NHWC -> Cast -> Transpose -> norm -> Transpose -> Cast(uint8)."""
    norm, inits = _norm_tail("nchw", "normed")
    nodes = [helper.make_node("Cast", ["input"], ["f"], to=F, name="cast_in"),
             helper.make_node("Transpose", ["f"], ["nchw"], perm=[0, 3, 1, 2], name="to_nchw"),
             *norm,
             helper.make_node("Transpose", ["normed"], ["nhwc"], perm=[0, 2, 3, 1], name="to_nhwc"),
             helper.make_node("Cast", ["nhwc"], ["output"], to=U8, name="cast_out")]
    return _model(nodes, [_vi("input", U8)], [_vi("output", U8)], initializers=inits)


def _rules(model, **kw):
    from nst_export.trt_lint import tensorrt_lint

    return [(p.rule, p.node) for p in tensorrt_lint(model, **kw)]


def test_a_correct_graph_has_no_problems():
    assert _rules(_good_graph()) == []


def test_old_wrapper_layout_uint8_transpose_at_both_ends_is_refused():
    norm, inits = _norm_tail("f", "normed")
    nodes = [helper.make_node("Transpose", ["input"], ["nchw_u8"], perm=[0, 3, 1, 2], name="t_in"),
             helper.make_node("Cast", ["nchw_u8"], ["f"], to=F, name="c_in"),
             *norm,
             helper.make_node("Cast", ["normed"], ["u8"], to=U8, name="c_out"),
             helper.make_node("Transpose", ["u8"], ["output"], perm=[0, 2, 3, 1], name="t_out")]
    found = _rules(_model(nodes, [_vi("input", U8)], [_vi("output", U8)], initializers=inits))
    # the input Transpose reads uint8, the middle Cast makes a uint8 intermediate, the output Transpose writes one
    assert ("uint8-io", "t_in") in found and ("uint8-io", "c_out") in found and ("uint8-io", "t_out") in found
    assert {rule for rule, _ in found} == {"uint8-io"}


def test_shape_of_a_uint8_input_is_refused():
    good = _good_graph()
    good.graph.node.insert(1, helper.make_node("Shape", ["input"], ["dims"], name="dims_of_u8"))
    assert _rules(good) == [("uint8-io", "dims_of_u8")]


def test_uint8_constants_are_refused():
    good = _good_graph()
    good.graph.initializer.append(numpy_helper.from_array(np.zeros(4, np.uint8), "u8const"))
    good.graph.node.append(helper.make_node("Cast", ["u8const"], ["unused"], to=F, name="use_const"))
    assert ("uint8-io", "use_const") in _rules(good)


def test_opset_outside_the_documented_range():
    for opset in (8, 25):
        model = _good_graph()
        model.opset_import[0].version = opset
        assert ("opset", "graph") in _rules(model)


def test_operators_outside_the_table_and_custom_domains():
    norm, inits = _norm_tail("x", "y")
    nodes = [*norm, helper.make_node("Det", ["y"], ["d"], name="det"),
             helper.make_node("FancyOp", ["y"], ["z"], name="fancy"),
             helper.make_node("MyPlugin", ["y"], ["p"], domain="com.example", name="plugin")]
    model = _model(nodes, [_vi("x", F, (1, 3, 4, 4))], [_vi("d", F, (1,)), _vi("z", F, (1, 3, 4, 4)),
                                                        _vi("p", F, (1, 3, 4, 4))],
                   initializers=inits, extra_opsets=[("com.example", 1)])
    found = _rules(model)
    assert ("unsupported-op", "det") in found and ("unsupported-op", "fancy") in found
    assert ("custom-domain", "plugin") in found


def test_instance_norm_must_be_the_native_op():
    decomposed = _model([helper.make_node("ReduceMean", ["x", "axes"], ["m"], name="mean"),
                         helper.make_node("Sub", ["x", "m"], ["y"], name="centre")],
                        [_vi("x", F, (1, 3, 4, 4))], [_vi("y", F, (1, 3, 4, 4))],
                        initializers=[numpy_helper.from_array(np.array([2, 3], np.int64), "axes")])
    assert _rules(decomposed) == [("instance-norm", "graph")]
    assert _rules(decomposed, expect_instance_norm=False) == []
    plugin = _model([helper.make_node("InstanceNormalization_TRT", ["x"], ["y"], domain="trt.plugins",
                                      name="in_plugin")],
                    [_vi("x", F, (1, 3, 4, 4))], [_vi("y", F, (1, 3, 4, 4))], extra_opsets=[("trt.plugins", 1)])
    assert ("instance-norm", "in_plugin") in _rules(plugin)


def test_data_types_outside_the_operators_list():
    norm, inits = _norm_tail("x", "y")
    nodes = [*norm, helper.make_node("Cast", ["y"], ["d"], to=TensorProto.DOUBLE, name="to_double"),
             helper.make_node("Relu", ["d"], ["r"], name="relu_double"),
             helper.make_node("Cast", ["y"], ["i8"], to=I8, name="to_int8"),
             helper.make_node("Abs", ["i8"], ["a"], name="abs_int8")]
    model = _model(nodes, [_vi("x", F, (1, 3, 4, 4))], [_vi("r", TensorProto.DOUBLE, (1, 3, 4, 4)),
                                                        _vi("a", I8, (1, 3, 4, 4))], initializers=inits)
    found = _rules(model)
    for node in ("to_double", "relu_double", "to_int8", "abs_int8"):
        assert ("data-type", node) in found


def test_attribute_restrictions():
    norm, inits = _norm_tail("x", "y")
    roi = numpy_helper.from_array(np.zeros(0, np.float32), "roi")
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    nodes = [*norm,
             helper.make_node("Resize", ["y", "roi", "scales"], ["up"], mode="cubic", name="cubic"),
             helper.make_node("MaxPool", ["y"], ["pooled"], kernel_shape=[2, 2], dilations=[2, 2], name="dil"),
             helper.make_node("Resize", ["y", "roi", "scales"], ["ok"], mode="nearest",
                              coordinate_transformation_mode="asymmetric", nearest_mode="floor", name="nearest")]
    model = _model(nodes, [_vi("x", F, (1, 3, 8, 8))],
                   [_vi("up", F, None), _vi("pooled", F, None), _vi("ok", F, None)],
                   initializers=[*inits, roi, scales])
    found = _rules(model)
    assert ("attribute", "cubic") in found and ("attribute", "dil") in found
    assert not [f for f in found if f[1] == "nearest"]


def test_reduction_axes_must_be_constants():
    norm, inits = _norm_tail("x", "y")
    nodes = [*norm, helper.make_node("ReduceSum", ["y", "axes"], ["s"], name="sum_dynamic_axes")]
    model = _model(nodes, [_vi("x", F, (1, 3, 4, 4)), _vi("axes", I64, (2,))], [_vi("s", F, None)],
                   initializers=inits)
    assert _rules(model) == [("constant-input", "sum_dynamic_axes")]


def _qdq(zero_point: np.ndarray | None, scale: float = 0.05, dq_zero_point: np.ndarray | None = None):
    """x -> QuantizeLinear -> DequantizeLinear -> InstanceNormalization, plus INT8 weights through a DQ."""
    norm, inits = _norm_tail("deq", "y")
    inits += [numpy_helper.from_array(np.array(scale, np.float32), "s")]
    q_inputs = ["x", "s"]
    if zero_point is not None:
        inits.append(numpy_helper.from_array(zero_point, "zp"))
        q_inputs.append("zp")
    dq_inputs = ["q", "s"]
    if dq_zero_point is not None:
        inits.append(numpy_helper.from_array(dq_zero_point, "dzp"))
        dq_inputs.append("dzp")
    elif zero_point is not None:
        dq_inputs.append("zp")
    nodes = [helper.make_node("QuantizeLinear", q_inputs, ["q"], name="quant"),
             helper.make_node("DequantizeLinear", dq_inputs, ["deq"], name="dequant"), *norm]
    return _model(nodes, [_vi("x", F, (1, 3, 4, 4))], [_vi("y", F, (1, 3, 4, 4))], initializers=inits)


def test_int8_qdq_as_tensorrt_documents_it_passes():
    assert _rules(_qdq(np.array(0, np.int8))) == []


@pytest.mark.parametrize(("model", "node"), [
    (lambda: _qdq(np.array(0, np.uint8)), "quant"),                            # UINT8 quantization
    (lambda: _qdq(None), "quant"),                                              # no zero point: UINT8 in ONNX
    (lambda: _qdq(np.array(0, np.int8), dq_zero_point=np.array(3, np.int8)), "dequant"),  # asymmetric
    (lambda: _qdq(np.array(0, np.int8), scale=-0.1), "quant"),                 # negative scale
])
def test_qdq_outside_tensorrts_support_is_refused(model, node):
    found = _rules(model())
    assert ("quantization", node) in found
    assert "uint8-io" not in {rule for rule, _ in found}  # reported once, by the rule with the better fix


def test_check_raises_one_line_naming_node_and_rule(tmp_path):
    from nst_export.trt_lint import check_tensorrt_compatible
    from nst_runtime.errors import ModelFileError

    model = _good_graph()
    model.graph.node.insert(1, helper.make_node("Shape", ["input"], ["dims"], name="dims_of_u8"))
    path = tmp_path / "bad.onnx"
    onnx.save_model(model, path)
    with pytest.raises(ModelFileError) as info:
        check_tensorrt_compatible(path, label=str(path))
    text = str(info.value)
    assert "\n" not in text and "dims_of_u8" in text and "rule uint8-io" in text and info.value.exit_code == 3
    check_tensorrt_compatible(_good_graph(), label="good")  # no exception


# ------------------------------------------------------------------------------------------ nst's own graphs
def test_exported_fp32_and_fp16_graphs_pass(onnx_fp32_path, onnx_fp16_path):
    from nst_export.trt_lint import tensorrt_lint

    assert tensorrt_lint(onnx_fp32_path) == []
    assert tensorrt_lint(onnx_fp16_path) == []


def test_exported_graph_casts_first_and_last(onnx_fp32_path):
    """The deploy graph's uint8 input feeds only a Cast, and the uint8 output comes from the last node, a Cast."""
    graph = onnx.load_model(onnx_fp32_path).graph
    readers = [n for n in graph.node if "input" in n.input]
    assert [n.op_type for n in readers] == ["Cast"] and graph.node[0] is not None
    assert graph.node[0].op_type == "Cast" and list(graph.node[0].input) == ["input"]
    last = graph.node[-1]
    assert last.op_type == "Cast" and list(last.output) == ["output"]
    assert next(a.i for a in last.attribute if a.name == "to") == U8


@pytest.mark.slow
def test_exported_tiling_graph_passes(tiny_net):
    from nst_export.tiling_graph import export_tiling_model
    from nst_export.trt_lint import tensorrt_lint

    model = export_tiling_model(tiny_net)
    assert tensorrt_lint(model, expect_instance_norm=False) == []
    readers = [n.op_type for n in model.graph.node if "input" in n.input]
    assert readers == ["Cast"]


class _OldDeployWrapper:
    """The deploy wrapper as it was: transpose in uint8, cast; and cast to uint8, then transpose."""

    @staticmethod
    def build(net):
        import torch
        from torch import nn

        class Old(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.net = net

            def forward(self, image: torch.Tensor) -> torch.Tensor:
                x = image.permute(0, 3, 1, 2).to(torch.float32)
                y = torch.round(torch.clamp(self.net(x), 0.0, 255.0)).to(torch.uint8)
                return y.permute(0, 2, 3, 1)

        return Old().eval()


@pytest.fixture(scope="module")
def old_wrapper_onnx(tmp_path_factory):
    """The old wrapper around a small conv + InstanceNorm network, exported as nst did (dynamo, opset 18)."""
    import torch
    from nst_export.onnx_export import quiet_torch_exporter
    from nst_runtime.sidecar import Sidecar
    from torch import nn
    from torch.export import Dim

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.InstanceNorm2d(3, affine=True))
    dims = {1: Dim("height", min=8, max=4096), 2: Dim("width", min=8, max=4096)}
    with quiet_torch_exporter():
        program = torch.onnx.export(_OldDeployWrapper.build(net), (torch.zeros((1, 32, 32, 3), dtype=torch.uint8),),
                                    None, input_names=["input"], output_names=["output"], opset_version=18,
                                    dynamo=True, dynamic_shapes=(dims,), optimize=True, verbose=False)
    path = tmp_path_factory.mktemp("old") / "old.onnx"
    onnx.save_model(program.model_proto, path)
    path.with_name(path.name + ".json").write_text(Sidecar(kind="onnx", precision="fp32").to_json())
    return path


@pytest.mark.slow
def test_old_wrapper_graph_fails_the_lint(old_wrapper_onnx):
    from nst_export.trt_lint import tensorrt_lint

    problems = tensorrt_lint(old_wrapper_onnx)
    ops = {(p.rule, p.op) for p in problems}
    assert ("uint8-io", "Transpose") in ops  # uint8 Transpose at the input and/or output
    assert {p.rule for p in problems} == {"uint8-io"}


def test_engine_step_refuses_an_unparseable_graph_before_tensorrt(tmp_path):
    """engine_from_onnx lints first: even with no TensorRT here the answer is the lint's, exit 3, and no engine
    is written."""
    from nst_export.tensorrt_engine import engine_from_onnx
    from nst_runtime.errors import ModelFileError
    from nst_runtime.sidecar import Sidecar

    model = _good_graph()
    model.graph.node.insert(1, helper.make_node("Shape", ["input"], ["dims"], name="dims_of_u8"))
    src = tmp_path / "src" / "m.onnx"
    src.parent.mkdir()
    onnx.save_model(model, src)
    src.with_name("m.onnx.json").write_text(Sidecar(kind="onnx", precision="fp32").to_json())
    out = tmp_path / "out" / "m.engine"
    with pytest.raises(ModelFileError, match=r"dims_of_u8.*rule uint8-io") as info:
        engine_from_onnx(src, out)
    assert info.value.exit_code == 3 and "\n" not in str(info.value)
    assert not out.parent.exists() or list(out.parent.iterdir()) == []
