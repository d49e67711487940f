"""FP32 ONNX -> FP16 ONNX: convolutions (and what lies between them) in FP16, InstanceNorm and the I/O in FP32.

Precision lives in the graph: TensorRT 11 has no FP16 builder flag and builds every network strongly typed,
so the tensor types written here are the types the engine computes in. ONNX Runtime's CUDA provider runs the
same file.

Method: onnxconverter-common's ``convert_float_to_float16`` with

* ``op_block_list`` = its defaults + ``InstanceNormalization``: the per-image mean/variance over H*W values
  is the known FP16 trap of these networks (the sum of squares overflows/loses bits), so each norm gets Cast
  nodes to FP32 and back around it;
* ``node_block_list`` = every node before the first Conv and after the last one: the uint8->float cast,
  the NHWC->NCHW transpose and the reflection pad at the input, and crop/clamp/round/cast at the output stay
  FP32, so the I/O casts are exact and rounding to uint8 happens on FP32 values.

After conversion, one repair: the converter turns every float initializer into FP16, including the
InstanceNorm scale/bias it then casts back to FP32 (a lossy round trip and a Cast on an initializer, which
TensorRT's parser has historically required to be a plain initializer). Those are restored as the original
FP32 initializers. Why not an export-time method (``net.half()`` with FP32 norms)? The converter works on the
already checked and parity-gated FP32 graph, so both files have the same structure and the FP16 file can be
re-made from the FP32 one without PyTorch.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from nst_runtime.errors import ModelFileError
from nst_runtime.sidecar import read_sidecar

from .artifacts import STYLE_NAME, check_onnx_model, onnx_sidecar, publish, save_model, temp_path_for
from .parity import (
    DEFAULT_SHAPES,
    DEFAULT_TOLERANCE,
    ParityTolerance,
    check_parity_styles,
    onnx_reference,
    onnx_reference_with,
    torch_reference,
)

log = logging.getLogger(__name__)

#: op types kept in FP32 beyond onnxconverter-common's defaults
FP32_OP_TYPES = ("InstanceNormalization",)


def fp16_model_from_fp32(model: Any, *, keep: Callable[[Any], Iterable[str]] | None = None,
                         nst_contract: bool = True) -> Any:
    """Convert an in-memory FP32 ONNX model: convolutions FP16; InstanceNormalization, the I/O and everything
    before the first / after the last Conv FP32. Returns a new ``onnx.ModelProto``.

    ``keep(model)``: names of further nodes to keep FP32, called on the copy (every node named by then), e.g.
    a foreign graph's wrapper and written-out norms. ``nst_contract``: check nst's own export contract and the
    TensorRT lint here (False: the caller checks, as the foreign import does with its own rules)."""
    import onnx
    from onnxconverter_common import float16

    model = onnx.ModelProto.FromString(model.SerializeToString())  # never touch the caller's copy
    for i, node in enumerate(model.graph.node):
        if not node.name:  # node_block_list works by name
            node.name = f"nst_node_{i}_{node.op_type}"
    convs = [i for i, n in enumerate(model.graph.node) if n.op_type == "Conv"]
    if not convs:
        raise ModelFileError("the ONNX graph has no Conv nodes, and FP16 conversion converts convolutions only. "
                             "Fix: export or import it without --fp16.")
    io_nodes = [n.name for i, n in enumerate(model.graph.node) if i < convs[0] or i > convs[-1]]
    io_nodes += list(keep(model)) if keep is not None else []
    originals = {i.name: i for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    with warnings.catch_warnings():
        # "the float32 number 1e-08 will be truncated to 1e-07": tiny weights clamped to FP16's range; expected
        warnings.simplefilter("ignore", UserWarning)
        fp16 = float16.convert_float_to_float16(
            model, keep_io_types=True,
            op_block_list=[*float16.DEFAULT_OP_BLOCK_LIST, *FP32_OP_TYPES], node_block_list=io_nodes,
        )
    _restore_fp32_initializers(fp16, originals)
    if not nst_contract:
        return fp16
    check_onnx_model(fp16, expect_precision="fp16")
    from .trt_lint import check_tensorrt_compatible

    check_tensorrt_compatible(fp16, label="the FP16 graph")
    problems = fp32_island_problems(fp16)
    if problems:
        raise ModelFileError(f"FP16 conversion left InstanceNormalization outside FP32: {'; '.join(problems)}. "
                             "This is a bug in the export; please report it with `pip list` output.")
    return fp16


def _restore_fp32_initializers(model: Any, originals: dict[str, Any]) -> None:
    """Replace ``Cast(fp16 initializer) -> FLOAT`` by the original FP32 initializer and drop dead FP16 copies."""
    import onnx

    inits = {i.name: i for i in model.graph.initializer}
    keep_nodes, rename = [], {}
    for node in model.graph.node:
        to = next((a.i for a in node.attribute if a.name == "to"), None)
        if (node.op_type == "Cast" and to == onnx.TensorProto.FLOAT and node.input[0] in inits
                and node.input[0] in originals):
            rename[node.output[0]] = node.input[0]
            continue
        keep_nodes.append(node)
    if not rename:
        return
    for node in keep_nodes:
        for k, name in enumerate(node.input):
            if name in rename:
                node.input[k] = f"{rename[name]}.fp32"
    used = {name for n in keep_nodes for name in n.input}
    new_inits = [i for i in model.graph.initializer if i.name in used]
    for src in sorted(set(rename.values())):
        restored = onnx.TensorProto()
        restored.CopyFrom(originals[src])
        restored.name = f"{src}.fp32"
        new_inits.append(restored)
    del model.graph.node[:]
    model.graph.node.extend(keep_nodes)
    del model.graph.initializer[:]
    model.graph.initializer.extend(new_inits)
    # value_info of removed cast outputs would now dangle
    kept_values = [v for v in model.graph.value_info if v.name not in rename]
    del model.graph.value_info[:]
    model.graph.value_info.extend(kept_values)


def tensor_dtypes(model: Any) -> dict[str, int]:
    """Element type of every tensor in the graph (inputs, outputs, initializers, inferred intermediates)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    types = {v.name: v.type.tensor_type.elem_type
             for v in (*inferred.graph.input, *inferred.graph.output, *inferred.graph.value_info)}
    types.update({i.name: i.data_type for i in inferred.graph.initializer})
    return types


def fp32_island_problems(model: Any) -> list[str]:
    """Every InstanceNormalization input and output that is not float32 (empty list: all good)."""
    import onnx

    types = tensor_dtypes(model)
    problems = []
    for node in model.graph.node:
        if node.op_type != "InstanceNormalization":
            continue
        for name in (*node.input, *node.output):
            dt = types.get(name)
            if dt != onnx.TensorProto.FLOAT:
                problems.append(f"{node.name}: {name} is "
                                f"{onnx.TensorProto.DataType.Name(dt) if dt else 'untyped'}")
    return problems


def fp16_onnx_from_onnx(
    onnx_path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    checkpoint: str | os.PathLike[str] | Any | None = None,
    tolerance: ParityTolerance = DEFAULT_TOLERANCE,
    parity_shapes: Sequence[tuple[int, int, int]] = DEFAULT_SHAPES,
) -> Path:
    """Write the FP16 version of the FP32 nst ONNX file ``onnx_path`` to ``out``, parity-gated.

    The reference is the PyTorch FP32 model of ``checkpoint`` when given (what ``nst-export`` does), else the
    FP32 ONNX file itself run through ONNX Runtime (no torch needed; itself within 1 level of PyTorch). The gate
    is ``tolerance.fp16_min_psnr_db``. Written to a temp name and renamed only after passing, with a sidecar.
    """
    import onnx
    from nst_runtime.artifact import file_sha256

    onnx_path, out = Path(onnx_path), Path(out)
    if not onnx_path.is_file():
        raise ModelFileError(f"{onnx_path}: no such ONNX file. Export it first (nst-export CHECKPOINT).")
    try:
        model = onnx.load_model(os.fspath(onnx_path))
    except Exception as exc:
        raise ModelFileError(f"{onnx_path}: cannot read as ONNX ({type(exc).__name__}: {exc}).") from exc
    check_onnx_model(model, expect_precision="fp32")
    source_meta = None
    with contextlib.suppress(ModelFileError):
        source_meta = read_sidecar(onnx_path)
    log.info("converting %s to FP16 (InstanceNormalization and I/O kept FP32)", onnx_path)
    fp16 = fp16_model_from_fp32(model)
    style = source_meta.style if source_meta else None
    names = style.names if style is not None else ()
    if checkpoint is not None:
        from nst_train.checkpoint import checkpoint_sha256, load_checkpoint

        ckpt = load_checkpoint(checkpoint)
        net = ckpt.model()

        def reference_for(weights: Any) -> Any:
            return torch_reference(net, weights)

        reference_name = "pytorch-fp32"
        checkpoint_sha, architecture = checkpoint_sha256(ckpt), ckpt.metadata.architecture
    else:
        def reference_for(weights: Any) -> Any:
            return onnx_reference(onnx_path) if weights is None else onnx_reference_with(
                onnx_path, {STYLE_NAME: weights})

        reference_name = f"onnx-fp32 ({onnx_path.name}, onnxruntime CPU)"
        checkpoint_sha = source_meta.checkpoint_sha256 if source_meta else None
        architecture = source_meta.architecture if source_meta else None
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(out)
    try:
        save_model(fp16, tmp, final=out)
        report = check_parity_styles(tmp, reference_for, style_names=names, style_input=STYLE_NAME,
                                     precision="fp16", reference_name=reference_name, tolerance=tolerance,
                                     shapes=parity_shapes, label=str(out))
        log.info("FP16 parity: %s", report.summary())
        opset = next((o.version for o in fp16.opset_import if o.domain in ("", "ai.onnx")), None)
        meta = onnx_sidecar(precision="fp16", opset=opset, artifact_sha256=file_sha256(tmp),
                            checkpoint_sha256=checkpoint_sha, onnx_sha256=file_sha256(onnx_path),
                            parity=report, architecture=architecture, style=style,
                            gflop_per_mpx=source_meta.gflop_per_mpx if source_meta else None)
        return publish(tmp, out, meta)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
