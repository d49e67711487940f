"""Foreign ONNX import (``nst-export FOREIGN.onnx``): graphs built the way other exporters build them.

Nothing can be downloaded here, so the ONNX Model Zoo's fast-neural-style files are re-created the way they were
made: pytorch/examples' TransformerNet (the shared seeded test network, same parameter names) through the
TorchScript exporter at opset 9 (``Upsample`` with a constant scales input, ``Pad`` with attribute pads) with a
fixed 1x3xHxW float input in 0..255, the opset-8 form of the same file (``Upsample`` with a scales attribute,
made by onnx's version converter), and a user's own ``torch.onnx.export`` at opset 11 (pads computed by
Constant/Reshape/Slice chains). Hand-built graphs cover a Reshape with constant sizes (cannot take other sizes),
an NHWC network in 0..1 ending in a Sigmoid, and a second input.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

NATIVE = 96  # the zoo's files are 224x224; a smaller native size keeps these tests fast (224: the slow test)


def _torchscript_export(net, path, *, opset: int, size: int = NATIVE) -> None:
    import torch

    if opset == 8:  # torch no longer emits opset 8: export 9, then convert down as the zoo's opset-8 files look
        import onnx
        from onnx import version_converter

        _torchscript_export(net, path.with_suffix(".opset9.onnx"), opset=9, size=size)
        onnx.save(version_converter.convert_version(onnx.load(str(path.with_suffix(".opset9.onnx"))), 8), str(path))
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(net, (torch.rand(1, 3, size, size) * 255,), str(path), opset_version=opset,
                              dynamo=False, input_names=["input1"], output_names=["output1"])
        except TypeError as exc:  # a torch without the TorchScript exporter
            pytest.skip(f"torch.onnx.export(dynamo=False) is gone in this torch: {exc}")


@pytest.fixture(scope="module")
def zoo_files(tmp_path_factory, tiny_net):
    folder = tmp_path_factory.mktemp("foreign")
    files = {}
    for opset in (8, 9, 11):
        files[opset] = folder / f"style-{opset}.onnx"
        _torchscript_export(tiny_net, files[opset], opset=opset)
    return files


@pytest.fixture(scope="module")
def imported(tmp_path_factory, zoo_files):
    """Each zoo-like file imported once (FP32 + FP16)."""
    from nst_export.foreign import onnx_from_foreign

    out = tmp_path_factory.mktemp("imported")
    return {opset: onnx_from_foreign(path, out / f"style{opset}.onnx",
                                     fp16_out=out / f"style{opset}.fp16.onnx" if opset == 9 else None)
            for opset, path in zoo_files.items()}


def _reference(tiny_net, x):
    import torch
    from nst_export.wrapper import DeployWrapper

    with torch.inference_mode():
        return DeployWrapper(tiny_net)(torch.from_numpy(x)).numpy()


def test_zoo_like_files_have_the_ops_of_their_opsets(zoo_files):
    import onnx

    ops = {opset: {n.op_type for n in onnx.load(str(p)).graph.node} for opset, p in zoo_files.items()}
    assert "Upsample" in ops[8] and "Upsample" in ops[9] and "Resize" in ops[11]
    assert "InstanceNormalization" in ops[9]
    pads8 = [n for n in onnx.load(str(zoo_files[8])).graph.node if n.op_type == "Pad"]
    assert all(any(a.name == "pads" for a in n.attribute) for n in pads8)  # attribute pads, as opset < 11
    assert "ConstantOfShape" in ops[11]  # computed pads


@pytest.mark.parametrize("opset", [8, 9, 11])
def test_import_makes_a_dynamic_uint8_nhwc_artifact_equal_to_the_network(imported, tiny_net, opset):
    """The import of the foreign file of our own network equals our own export's reference at other sizes."""
    from nst_runtime import Stylizer

    result = imported[opset]
    assert result.graph.dynamic_batch and result.graph.dynamic_hw, result.graph.why_fixed
    assert result.graph.size_multiple == 4
    assert result.parity.max_abs_levels <= 1
    x = np.random.default_rng(opset).integers(0, 256, (2, 37, 50, 3), dtype=np.uint8)
    with Stylizer.open(result.fp32, device="cpu") as s:
        out = np.stack(s.stylize_batch(list(x), batch_size=2))
    assert out.shape == x.shape
    assert np.abs(out.astype(int) - _reference(tiny_net, x).astype(int)).max() <= 1


@pytest.mark.parametrize("opset", [8, 9, 11])
def test_sidecar_records_the_source(imported, zoo_files, opset):
    from nst_runtime.artifact import file_sha256
    from nst_runtime.sidecar import read_sidecar

    meta = read_sidecar(imported[opset].fp32)
    assert meta.source["sha256"] == file_sha256(zoo_files[opset])
    assert meta.source["opset"] == opset and meta.source["input_shape"] == [1, 3, NATIVE, NATIVE]
    assert meta.source["mode"] == "dynamic" and meta.source["layout"] == "NCHW"
    assert meta.source["tensorrt_lint"] == []
    assert meta.parity["passed"] and "original ONNX" in meta.parity["reference"]
    assert meta.parity["images"][0]["shape"] == [1, NATIVE, NATIVE, 3]  # the native shape, on the untouched file
    assert meta.opset == 18 and meta.precision == "fp32"


def test_fp16_keeps_instance_norm_fp32_and_passes_against_the_original(imported):
    import onnx
    from nst_export.fp16 import fp32_island_problems
    from nst_runtime.sidecar import read_sidecar

    result = imported[9]
    model = onnx.load(str(result.fp16))
    convs = {n.input[1] for n in model.graph.node if n.op_type == "Conv"}
    assert {i.data_type for i in model.graph.initializer if i.name in convs} == {onnx.TensorProto.FLOAT16}
    assert fp32_island_problems(model) == []
    assert result.fp16_parity.min_psnr_db is None or result.fp16_parity.min_psnr_db >= 40
    meta = read_sidecar(result.fp16)
    assert meta.precision == "fp16" and meta.onnx_sha256 == read_sidecar(result.fp32).artifact_sha256


def test_constants_are_folded(zoo_files):
    import onnx
    from nst_export.foreign import modernize

    modern = modernize(onnx.load(str(zoo_files[11])))
    ops = [n.op_type for n in modern.graph.node]
    assert not {"Constant", "ConstantOfShape", "Reshape", "Identity"} & set(ops), sorted(set(ops))
    assert ops.count("Pad") == 16 and ops.count("Resize") == 2


def test_import_refuses_to_overwrite_its_source(zoo_files):
    from nst_export.foreign import onnx_from_foreign
    from nst_runtime.errors import UsageError

    with pytest.raises(UsageError, match="overwrite"):
        onnx_from_foreign(zoo_files[9], zoo_files[9])


# ---------------------------------------------------------------------------------------- hand-built graphs
def _fixed_reshape_graph(path, size: int = 32):
    """Conv -> Reshape to the constant [1, 8, size*size] -> a norm over the flattened axis -> Reshape back to the
    constant [1, 8, size, size] -> Conv: how exporters write a layer over flattened pixels; the size is baked in."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.normal(0, 0.05, (8, 3, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.normal(0, 0.3, (3, 8, 1, 1)).astype(np.float32), "w2")
    b2 = numpy_helper.from_array(np.full(3, 127.5, np.float32), "b2")
    flat = numpy_helper.from_array(np.array([1, 8, size * size], np.int64), "flat_shape")
    back = numpy_helper.from_array(np.array([1, 8, size, size], np.int64), "back_shape")
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Reshape", ["c1", "flat_shape"], ["f"], name="flatten_pixels"),
        helper.make_node("ReduceMean", ["f"], ["mu"], axes=[2]),
        helper.make_node("Sub", ["f", "mu"], ["centered"]),
        helper.make_node("Reshape", ["centered", "back_shape"], ["r"], name="unflatten"),
        helper.make_node("Conv", ["r", "w2", "b2"], ["y"], name="conv2"),
    ]
    graph = helper.make_graph(nodes, "fixed", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, size, size])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, size, size])],
                              initializer=[w1, w2, b2, flat, back])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


def test_fixed_size_graph_is_refused_with_the_exact_reason(tmp_path):
    from nst_export.foreign import onnx_from_foreign
    from nst_runtime.errors import ModelFileError

    src = _fixed_reshape_graph(tmp_path / "fixed.onnx")
    with pytest.raises(ModelFileError) as err:
        onnx_from_foreign(src, tmp_path / "out.onnx")
    msg = str(err.value)
    assert "flatten_pixels" in msg and "[1, 8, 1024]" in msg and "--fixed-size" in msg and "32x32" in msg
    assert not (tmp_path / "out.onnx").exists()


def test_fixed_size_artifact_resizes_in_and_out(tmp_path):
    import onnxruntime as ort
    from nst_export.foreign import ForeignImport, onnx_from_foreign
    from nst_runtime import Stylizer
    from nst_runtime.sidecar import read_sidecar

    src = _fixed_reshape_graph(tmp_path / "fixed.onnx")
    result = onnx_from_foreign(src, tmp_path / "fixed.nst.onnx", options=ForeignImport(fixed_size=True))
    assert not result.graph.dynamic_hw and result.parity.max_abs_levels <= 1
    meta = read_sidecar(result.fp32)
    assert meta.source["mode"] == "fixed-size" and any("flatten_pixels" in r for r in meta.source["why_fixed"])
    # at the native size the artifact is the original network (resizing to the same size is the identity)
    x = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    original = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"])
    ref = original.run(None, {"x": x.astype(np.float32).transpose(2, 0, 1)[None]})[0][0].transpose(1, 2, 0)
    ref = np.rint(np.clip(ref, 0, 255)).astype(np.uint8)
    with Stylizer.open(result.fp32, device="cpu") as s:
        assert np.abs(s.stylize(x).astype(int) - ref.astype(int)).max() <= 1
        big = np.random.default_rng(2).integers(0, 256, (75, 130, 3), dtype=np.uint8)
        assert s.stylize(big).shape == big.shape  # any size, through the resize in and out


def _nhwc_unit_range_graph(path, size: int = 24):
    """A TF-style NHWC network taking 0..1 and ending in a Sigmoid (outputs 0..1)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    init = [numpy_helper.from_array(rng.normal(0, 0.5, (6, 3, 3, 3)).astype(np.float32), "w1"),
            numpy_helper.from_array(np.ones(6, np.float32), "g"), numpy_helper.from_array(np.zeros(6, np.float32), "b"),
            numpy_helper.from_array(rng.normal(0, 0.5, (3, 6, 1, 1)).astype(np.float32), "w2")]
    nodes = [
        helper.make_node("Transpose", ["img"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["nchw", "w1"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("InstanceNormalization", ["c", "g", "b"], ["n"]),
        helper.make_node("Relu", ["n"], ["r"]),
        helper.make_node("Conv", ["r", "w2"], ["c2"]),
        helper.make_node("Sigmoid", ["c2"], ["s"]),
        helper.make_node("Transpose", ["s"], ["out"], perm=[0, 2, 3, 1]),
    ]
    graph = helper.make_graph(nodes, "nhwc", [helper.make_tensor_value_info("img", TensorProto.FLOAT, [1, size, size, 3])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, size, size, 3])], init)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_nhwc_network_in_unit_range(tmp_path):
    import onnx
    import onnxruntime as ort
    from nst_export.foreign import ForeignImport, onnx_from_foreign
    from nst_export.foreign import relaxed as relax
    from nst_runtime import Stylizer

    src = _nhwc_unit_range_graph(tmp_path / "nhwc.onnx")
    result = onnx_from_foreign(src, tmp_path / "nhwc.nst.onnx",
                               options=ForeignImport(input_range=(0.0, 1.0), output_range=(0.0, 1.0)))
    assert result.graph.layout == "NHWC" and result.graph.dynamic_hw and result.graph.size_multiple == 1
    x = np.random.default_rng(4).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    with Stylizer.open(result.fp32, device="cpu") as s:
        out = s.stylize(x)
    # ONNX Runtime holds the file to its declared 24x24: run it with only its dims declared dynamic
    relaxed = ort.InferenceSession(relax(onnx.load(str(src)), result.graph).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    ref = relaxed.run(None, {"img": (x.astype(np.float32) / 255)[None]})[0][0]
    ref = np.rint(np.clip(ref * 255, 0, 255)).astype(np.uint8)
    assert np.abs(out.astype(int) - ref.astype(int)).max() <= 1
    assert out.std() > 5  # a real image came back, not a constant


def test_second_input_is_refused_in_one_line(tmp_path):
    import onnx
    from nst_export.foreign import onnx_from_foreign
    from nst_runtime.errors import ModelFileError
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "style"], ["y"])], "two",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16]),
         helper.make_tensor_value_info("style", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 16, 16])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "two.onnx"))
    with pytest.raises(ModelFileError, match=r"inputs \['style'\] besides the image 'x'"):
        onnx_from_foreign(tmp_path / "two.onnx", tmp_path / "o.onnx")


def test_not_an_onnx_file(tmp_path):
    from nst_export.foreign import onnx_from_foreign
    from nst_runtime.errors import ModelFileError

    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage that is not protobuf \xff\xff")
    with pytest.raises(ModelFileError, match=r"cannot read as ONNX|no nodes"):
        onnx_from_foreign(bad, tmp_path / "o.onnx")


@pytest.mark.slow
def test_zoo_shape_224(tmp_path, tiny_net):
    """The zoo's exact shape, 1x3x224x224 at opset 9, with FP16."""
    from nst_export.foreign import onnx_from_foreign

    src = tmp_path / "zoo224.onnx"
    _torchscript_export(tiny_net, src, opset=9, size=224)
    result = onnx_from_foreign(src, tmp_path / "zoo.onnx", fp16_out=tmp_path / "zoo.fp16.onnx")
    assert result.graph.dynamic_hw and result.parity.max_abs_levels <= 1
    assert json.loads((tmp_path / "zoo.onnx.json").read_text())["source"]["input_shape"] == [1, 3, 224, 224]


def test_runtime_points_a_foreign_file_to_the_import(zoo_files):
    from nst_runtime import Stylizer
    from nst_runtime.errors import ModelFileError

    with pytest.raises(ModelFileError, match=r"no sidecar .* nst-export FILE\.onnx"):
        Stylizer.open(zoo_files[9], device="cpu")


def test_nst_export_imports_a_foreign_file(zoo_files, tmp_path, capsys):
    from nst_export.cli import main
    from nst_runtime.sidecar import read_sidecar

    code = main([str(zoo_files[9]), "-o", str(tmp_path / "out"), "--name", "zoo", "--fp16", "--onnx-only"])
    assert code == 0, capsys.readouterr().err
    assert read_sidecar(tmp_path / "out" / "zoo.onnx").source["opset"] == 9
    assert read_sidecar(tmp_path / "out" / "zoo.fp16.onnx").precision == "fp16"
    assert "zoo.fp16.onnx" in capsys.readouterr().out  # the summary table


def test_nst_export_explains_a_fixed_size_graph(tmp_path, capsys):
    from nst_export.cli import main

    src = _fixed_reshape_graph(tmp_path / "fixed.onnx")
    assert main([str(src), "-o", str(tmp_path / "out"), "--onnx-only"]) == 3
    err = capsys.readouterr().err
    assert "flatten_pixels" in err and "--fixed-size" in err and len(err.strip().splitlines()[-1]) > 0


def test_nst_export_fixed_size_and_ranges(tmp_path, capsys):
    from nst_export.cli import main
    from nst_runtime.sidecar import read_sidecar

    src = _fixed_reshape_graph(tmp_path / "fixed.onnx")
    assert main([str(src), "-o", str(tmp_path / "out"), "--onnx-only", "--fixed-size"]) == 0, capsys.readouterr().err
    assert read_sidecar(tmp_path / "out" / "fixed.onnx").source["mode"] == "fixed-size"
    nhwc = _nhwc_unit_range_graph(tmp_path / "unit.onnx")
    assert main([str(nhwc), "-o", str(tmp_path / "out"), "--onnx-only", "--input-range", "0,1",
                 "--output-range", "0,1"]) == 0, capsys.readouterr().err
    assert main([str(nhwc), "-o", str(tmp_path / "out2"), "--onnx-only", "--input-range", "1,0"]) == 2


def test_fixed_batch_artifact_takes_batches_one_image_at_a_time(tmp_path):
    from nst_export.foreign import ForeignImport, onnx_from_foreign
    from nst_runtime import Stylizer
    from nst_runtime.sidecar import read_sidecar

    src = _fixed_reshape_graph(tmp_path / "fixed.onnx")
    result = onnx_from_foreign(src, tmp_path / "fixed.nst.onnx", options=ForeignImport(fixed_size=True),
                               source_extra={"licence": "MIT", "url": "https://example.invalid/fixed.onnx"})
    meta = read_sidecar(result.fp32)
    assert meta.profile is not None and meta.profile.max[0] == 1  # the graph fixes N = 1
    assert meta.source["licence"] == "MIT"
    images = [np.random.default_rng(i).integers(0, 256, (50, 70, 3), dtype=np.uint8) for i in range(3)]
    with Stylizer.open(result.fp32, device="cpu") as s:
        together = s.stylize_batch(images, batch_size=3)
        assert all(np.array_equal(a, s.stylize(b)) for a, b in zip(together, images, strict=True))


# ---------------------------------------------------------------------------------------- TensorRT lint, options
def _cubic_graph(path, size: int = 24):
    """The NHWC 0..1 network with a size-keeping cubic Resize: ONNX Runtime runs it, TensorRT's parser does not
    (Resize mode cubic: trt_lint rule attribute)."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(_nhwc_unit_range_graph(path, size)))
    nodes = list(model.graph.node)
    relu = next(i for i, n in enumerate(nodes) if n.op_type == "Relu")
    nodes[relu].output[0] = "r0"
    nodes.insert(relu + 1, helper.make_node("Resize", ["r0", "", "ones"], ["r"], mode="cubic", name="cubic"))
    model.graph.initializer.append(numpy_helper.from_array(np.ones(4, np.float32), "ones"))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.save(model, str(path))
    return path


def test_a_graph_tensorrt_would_refuse_is_fatal_unless_onnx_only(tmp_path):
    """Every precision written is linted: without --onnx-only the import fails before writing anything; with it
    (require_tensorrt=False) each file records its own problems."""
    from nst_export.foreign import ForeignImport, onnx_from_foreign
    from nst_runtime.errors import ModelFileError
    from nst_runtime.sidecar import read_sidecar

    src = _cubic_graph(tmp_path / "cubic.onnx")
    ranges = {"input_range": (0.0, 1.0), "output_range": (0.0, 1.0)}
    with pytest.raises(ModelFileError, match=r"TensorRT's ONNX parser would reject.*cubic.*--onnx-only"):
        onnx_from_foreign(src, tmp_path / "a.onnx", options=ForeignImport(**ranges))
    assert not list(tmp_path.glob("a.*"))
    result = onnx_from_foreign(src, tmp_path / "b.onnx", fp16_out=tmp_path / "b.fp16.onnx",
                               options=ForeignImport(**ranges, require_tensorrt=False))
    assert any("cubic" in p for p in result.lint) and any("cubic" in p for p in result.fp16_lint)
    for name in ("b.onnx", "b.fp16.onnx"):
        assert any("cubic" in p for p in read_sidecar(tmp_path / name).source["tensorrt_lint"])


def test_fixed_size_import_passes_the_tensorrt_lint_and_probes_quietly(tmp_path, capfd):
    """The resize-in is TensorRT-parseable (no antialiasing), and the probes that fail on a fixed-size graph
    leave ONNX Runtime's error log silent (nst explains the reason itself)."""
    import onnx
    from nst_export.foreign import ForeignImport, onnx_from_foreign
    from nst_export.trt_lint import tensorrt_lint
    from nst_runtime.sidecar import read_sidecar

    src = _fixed_reshape_graph(tmp_path / "fixed.onnx")
    capfd.readouterr()
    result = onnx_from_foreign(src, tmp_path / "fixed.nst.onnx", fp16_out=tmp_path / "fixed.nst.fp16.onnx",
                               options=ForeignImport(fixed_size=True))
    err = capfd.readouterr().err
    assert "onnxruntime" not in err.lower() and "[E:" not in err, err[-2000:]
    assert result.lint == [] and result.fp16_lint == []
    assert read_sidecar(result.fp32).source["tensorrt_lint"] == []
    assert tensorrt_lint(onnx.load(str(result.fp32)), expect_instance_norm=False) == []


def test_foreign_import_passes_every_engine_option_to_the_builder(tmp_path, capsys, fake_trt):
    """The foreign path shares the engine step with checkpoints: --version-compatible --exclude-lean-runtime
    reach the builder and the engine's sidecar."""
    from nst_export.cli import main
    from nst_runtime.sidecar import read_sidecar

    src = _nhwc_unit_range_graph(tmp_path / "unit.onnx")
    code = main([str(src), "-o", str(tmp_path / "out"), "--name", "m", "--input-range", "0,1", "--output-range",
                 "0,1", "--version-compatible", "--exclude-lean-runtime", "--device", "cuda:0"])
    assert code == 0, capsys.readouterr().err
    assert fake_trt.builder_flags == {"VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME"}
    meta = read_sidecar(tmp_path / "out" / "m.fp32.engine")
    assert meta.version_compatible and meta.exclude_lean_runtime


def test_foreign_import_with_int8_writes_the_gated_int8_file(tmp_path, capsys):
    """--int8 on a foreign file: calibrated on natural photos, gated against the imported FP32 file."""
    from nst_export.cli import main
    from nst_runtime.sidecar import read_sidecar
    from PIL import Image
    from skimage import data

    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        Image.fromarray(getattr(data, name)()).resize((64, 48)).save(photos / f"{name}.png")
    src = _nhwc_unit_range_graph(tmp_path / "unit.onnx")
    code = main([str(src), "-o", str(tmp_path / "out"), "--name", "m", "--input-range", "0,1", "--output-range",
                 "0,1", "--onnx-only", "--int8", "--calibration-dir", str(photos)])
    assert code == 0, capsys.readouterr().err
    meta = read_sidecar(tmp_path / "out" / "m.int8.onnx")
    assert meta.precision == "int8" and meta.parity["passed"]
    assert "m.int8.onnx" in capsys.readouterr().out


def test_foreign_import_fp16_and_engine_modules_load_no_torch(tmp_path):
    """The models cache pulls and imports ONNX files where torch may be absent: the import (FP32 + FP16), and
    the FP16, INT8, engine and Triton modules, need only onnx and onnxruntime."""
    import subprocess
    import sys

    src = _nhwc_unit_range_graph(tmp_path / "unit.onnx")
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "import nst_export.fp16, nst_export.int8, nst_export.tensorrt_engine, nst_export.triton\n"
        "from nst_export.foreign import ForeignImport, onnx_from_foreign\n"
        f"out = Path({str(tmp_path)!r})\n"
        f"r = onnx_from_foreign(Path({str(src)!r}), out / 'm.onnx', fp16_out=out / 'm.fp16.onnx',\n"
        "                      options=ForeignImport(input_range=(0, 1), output_range=(0, 1)))\n"
        "assert r.fp16 is not None and r.fp16.is_file()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'nst_train')))\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"
