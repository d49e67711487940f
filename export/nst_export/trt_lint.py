"""TensorRT compatibility lint: would TensorRT's ONNX parser (onnx-tensorrt) accept this graph?

No GPU and no TensorRT are needed: the rules below are what onnx-tensorrt documents and enforces, encoded as
data, so that every graph nst writes is checked on any machine, before any engine step. A graph that fails is
never handed to the builder.

Sources (read, not copied; the tables are transcribed facts):

* Operator table: onnx/onnx-tensorrt ``docs/operators.md`` as released with **TensorRT 10.15 GA**
  (2026-02-02; "TensorRT 10.15 supports operators in the inclusive range of opset 9 to opset 24"): which
  operators the parser supports ("Y"), documents as unsupported ("N"), with which data types, and the
  restrictions we check (Resize modes, pooling dilations, Q/DQ zero points, Constant attributes, constant
  axes). Its note "UINT8 is only supported as network input or output tensor types" is rule ``uint8-io``.
* UINT8: ``ModelImporter.cpp`` (``parseNode``: "TensorRT does not support UINT8 types for intermediate
  tensors", any non-Constant node producing UINT8 that is not a graph output) and NVIDIA/TensorRT#3985
  (maintainer: "All UINT8 inputs must directly feed into a cast layer ... even just data-movement ops like
  reshape / transpose").
* Q/DQ: ``onnxOpImporters.cpp`` (10.x): a UINT8 zero point is silently read as INT8 (values above 127 would
  change), scales must be positive, zero points zero. TensorRT documents INT8 (FP8, INT4, FP4) quantization.
* InstanceNormalization: the parser's ``NATIVE_INSTANCENORM`` flag (on by default since 10.0) keeps the op
  native; the plugin implementation "cannot be used for building version compatible or hardware compatible
  engines" (onnx-tensorrt README). A node in another domain, or an op type TensorRT does not know, is
  imported as a plugin, so both are refused here.
* TensorRT 11.x: NVIDIA's *ONNX Opset Guide* for 11.x (maximum opset 25, "Operator support list:
  ONNX-TensorRT operators.md") and the 11.0-11.5 parser release notes, which only *add* (Swish, TRT_*
  custom ops, opset 25). The 11.x ``operators.md`` itself was not readable where this was written, so the
  lint enforces the 10.15 table: what both majors document. Opsets: 9..24 (10.15's range, inside 11.x's).

Public API: :func:`tensorrt_lint` (list of :class:`Problem`) and :func:`check_tensorrt_compatible`
(raises :class:`~nst_runtime.errors.ModelFileError`, one line naming the node and the rule).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nst_runtime.errors import ModelFileError

log = logging.getLogger(__name__)

#: where the tables come from (shown in messages and docs)
SOURCE = "onnx-tensorrt docs/operators.md, TensorRT 10.15 GA (common subset of the 10.x and 11.x parsers)"
#: default-domain opsets the encoded parser documents (inclusive)
OPSET_RANGE = (9, 24)

# Data types as the table names them. ONNX TensorProto element types -> table label.
_TYPE_LABELS = {1: "FP32", 10: "FP16", 16: "BF16", 6: "INT32", 7: "INT64", 3: "INT8", 2: "UINT8", 9: "BOOL",
                11: "DOUBLE", 17: "FP8", 22: "INT4", 23: "FP4", 4: "UINT16", 5: "INT16", 8: "STRING",
                12: "UINT32", 13: "UINT64", 14: "COMPLEX64", 15: "COMPLEX128", 18: "FP8", 19: "FP8", 20: "FP8",
                21: "UINT4"}

_F = "FP32 FP16 BF16"
_FI = _F + " INT32 INT64"
_FIB = _FI + " BOOL"
# "Y" rows of the 10.15 table: operator -> supported data types. Grouped by their type list.
_SUPPORTED_ROWS = {
    _F: "Acos Acosh Asin Asinh Atan Atanh AveragePool BatchNormalization Ceil Celu Clip Conv ConvTranspose Cos "
        "Cosh CumSum Dropout Einsum Elu Erf Exp Floor Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool "
        "GroupNormalization GRU HardSigmoid HardSwish Hardmax ImageScaler InstanceNormalization IsInf "
        "LayerNormalization LeakyRelu Log LogSoftmax LRN LSTM LpNormalization LpPool MatMul MaxPool "
        "MeanVarianceNormalization ParametricSoftplus PRelu QuantizeLinear RandomNormal RandomNormalLike "
        "RandomUniform RandomUniformLike Reciprocal Resize RMSNormalization RNN RotaryEmbedding Round "
        "ScaledTanh Scan Selu Sigmoid Sin Sinh Softmax Softplus Softsign Sqrt Tan Tanh ThresholdedRelu "
        "Upsample",
    _FI: "Abs Add ArgMax ArgMin DepthToSpace Div Equal Greater GreaterOrEqual IsNaN Less LessOrEqual Max Min "
         "Mod Mul Neg Pad Pow Range ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin "
         "ReduceProd ReduceSum ReduceSumSquare Relu Scatter ScatterElements ScatterND Shrink Sign SpaceToDepth "
         "Sub Sum TopK",
    _FIB: "Concat Expand EyeLike Flatten Gather GatherElements GatherND Identity If Loop OneHot Reshape "
          "ReverseSequence Shape Size Slice Split Squeeze Tile Transpose Trilu Unsqueeze Where",
    "FP32 FP16": "BlackmanWindow DeformConv GridSample HammingWindow HannWindow Mish NonMaxSuppression NonZero "
                 "RoiAlign",
    "FP32": "STFT",
    "BOOL": "And Not Or Xor",
    _FIB.replace("BOOL", "UINT8 BOOL"): "Cast CastLike",
    _FIB.replace("BOOL", "FP8 FP4 INT4 BOOL"): "Constant ConstantOfShape",
    "INT8 FP8 FP4 INT4": "DequantizeLinear",
    _F + " INT8 FP8": "Attention",
    _F + " INT8 INT32 INT64": "Gelu",
    _F + " FP8 INT32 INT64": "Mean",
    _F + " INT32": "TensorScatter",
}
SUPPORTED: dict[str, frozenset[str]] = {
    op: frozenset(types.split()) for types, ops in _SUPPORTED_ROWS.items() for op in ops.split()
}
#: "N" rows of the 10.15 table: documented as unsupported
UNSUPPORTED = frozenset(
    "AffineGrid Bernoulli BitShift BitwiseAnd BitwiseNot BitwiseOr BitwiseXor Col2Im CenterCropPad Compress "
    "ConcatFromSequence ConvInteger DFT Det DynamicQuantizeLinear ImageDecoder MatMulInteger MaxRoiPool "
    "MaxUnpool MelWeightMatrix Multinomial NegativeLogLikelihoodLoss Optional OptionalGetElement "
    "OptionalHasElement QLinearConv QLinearMatMul RegexFullMatch SequenceAt SequenceConstruct SequenceEmpty "
    "SequenceErase SequenceInsert SequenceLength SequenceMap SoftmaxCrossEntropyLoss SplitToSequence "
    "StringConcat StringNormalizer StringSplit TfIdfVectorizer Unique".split()
)
#: attribute values the table allows (attribute -> allowed values; ONNX defaults in the comments)
ATTRIBUTE_VALUES: dict[str, dict[str, frozenset[Any]]] = {
    "Resize": {
        "coordinate_transformation_mode": frozenset({"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn",
                                                     "asymmetric", "align_corners"}),  # default half_pixel
        "mode": frozenset({"nearest", "linear"}),  # default nearest; cubic is not supported
        "nearest_mode": frozenset({"floor", "ceil", "round_prefer_floor", "round_prefer_ceil"}),
        "keep_aspect_ratio_policy": frozenset({"stretch"}),
        "antialias": frozenset({0}),
    },
    "ScatterND": {"reduction": frozenset({"none"})},
    "TopK": {"sorted": frozenset({1})},
    "LSTM": {"input_forget": frozenset({0}), "layout": frozenset({0})},
}
#: attributes the table says are unsupported outright
FORBIDDEN_ATTRIBUTES = {"Constant": frozenset({"sparse_value", "value_string", "value_strings"})}
#: pooling ops whose ``dilations`` must be empty or all ones
_DILATION_FREE = frozenset({"AveragePool", "MaxPool", "LpPool"})
#: (op, input index) that must be build-time constants (an initializer or a Constant node's output)
CONSTANT_INPUTS = {
    **{op: (1,) for op in ("ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax",
                             "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare")},
    "CumSum": (1,),
    "OneHot": (1,),
}
#: ops whose first output is not of the op's data type T (a comparison gives BOOL, Shape gives INT64, ...)
_OUTPUT_NOT_T = frozenset({"Equal", "Greater", "GreaterOrEqual", "Less", "LessOrEqual", "IsNaN", "IsInf",
                           "ArgMax", "ArgMin", "Shape", "Size", "NonZero", "NonMaxSuppression", "Cast",
                           "CastLike", "QuantizeLinear", "DequantizeLinear", "EyeLike", "ConstantOfShape",
                           "RandomNormalLike", "RandomUniformLike"})
_QUANTIZED = frozenset({"INT8", "FP8", "INT4", "FP4"})
_FLOATS = frozenset({"FP32", "FP16", "BF16"})
_UINT8 = 2

RULES = {
    "opset": "default-domain opset inside the parser's documented range",
    "custom-domain": "only ONNX-domain operators (anything else is imported as a plugin)",
    "unsupported-op": "operator inside onnx-tensorrt's support table",
    "data-type": "tensor types inside the operator's documented types",
    "attribute": "attribute values inside the documented restrictions",
    "constant-input": "inputs the table requires to be build-time constants",
    "uint8-io": "UINT8 only as a graph input/output, and only next to a Cast",
    "quantization": "Q/DQ as TensorRT documents it: INT8/FP8/INT4/FP4, zero point 0, positive scales",
    "instance-norm": "InstanceNormalization as the native ONNX op (not decomposed, not a plugin)",
}


@dataclass(frozen=True)
class Problem:
    """One thing the parser would reject: where (``node``, ``op``), which ``rule``, and why."""

    node: str
    op: str
    rule: str
    detail: str

    def __str__(self) -> str:
        where = f"node {self.node!r} ({self.op})" if self.op else self.node
        return f"{where}: {self.detail} [rule {self.rule}: {RULES[self.rule]}]"


def _load(model: Any) -> Any:
    import onnx

    if isinstance(model, (str, os.PathLike)):
        try:
            return onnx.load_model(os.fspath(model))
        except Exception as exc:  # onnx raises DecodeError, ValueError, OSError ...
            raise ModelFileError(f"{model}: cannot read as ONNX ({type(exc).__name__}: {exc}).") from exc
    return model


def _node_label(index: int, node: Any) -> str:
    return node.name or f"#{index} -> {node.output[0] if node.output else '?'}"


def _attr(node: Any, name: str) -> Any:
    import onnx

    for a in node.attribute:
        if a.name == name:
            value = onnx.helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return None


def _constant_values(model: Any, name: str) -> Any:
    """The numpy value of ``name`` if it is an initializer or a Constant node's output, else None."""
    from onnx import numpy_helper

    for init in model.graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output and node.output[0] == name:
            for a in node.attribute:
                if a.name == "value":
                    return numpy_helper.to_array(a.t)
    return None


def _is_constant(model: Any, name: str) -> bool:
    return (any(i.name == name for i in model.graph.initializer)
            or any(n.op_type == "Constant" and name in n.output for n in model.graph.node))


def _tensor_types(model: Any) -> dict[str, int]:
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # a graph shape inference cannot follow: check what is declared
        inferred = model
    graph = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in (*graph.input, *graph.output, *graph.value_info)
             if v.type.HasField("tensor_type") and v.type.tensor_type.elem_type}
    types.update({i.name: i.data_type for i in graph.initializer})
    for node in graph.node:  # Constant outputs shape inference may not list
        if node.op_type == "Constant" and node.output:
            for a in node.attribute:
                if a.name == "value":
                    types.setdefault(node.output[0], a.t.data_type)
    return types


def tensorrt_lint(model: Any, *, expect_instance_norm: bool = True) -> list[Problem]:
    """Every rule of onnx-tensorrt's documented support that ``model`` breaks (empty: the parser accepts it).

    ``model``: an ``onnx.ModelProto`` or a path. ``expect_instance_norm``: the graph is a TransformerNet deploy
    graph, which must hold native InstanceNormalization nodes (False for the tiling graph, whose norms take
    their statistics as inputs). Subgraphs of If/Loop/Scan are not descended into (nst writes none).
    """
    model = _load(model)
    graph = model.graph
    problems: list[Problem] = []

    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    version = opsets.get("ai.onnx")
    lo, hi = OPSET_RANGE
    if version is None or not lo <= version <= hi:
        problems.append(Problem("graph", "", "opset", f"default-domain opset {version}; the parser documents "
                                f"{lo}..{hi}. Re-export with --opset 18"))

    types = _tensor_types(model)
    label = {name: _TYPE_LABELS.get(t, f"type {t}") for name, t in types.items()}
    inputs = {v.name for v in graph.input}
    outputs = {v.name for v in graph.output}
    initializers = {i.name for i in graph.initializer}
    producer: dict[str, tuple[int, Any]] = {}
    consumers: dict[str, list[tuple[int, Any]]] = {}
    for i, node in enumerate(graph.node):
        for name in node.output:
            producer[name] = (i, node)
        for name in node.input:
            if name:
                consumers.setdefault(name, []).append((i, node))

    def add(i: int, node: Any, rule: str, detail: str) -> None:
        problems.append(Problem(_node_label(i, node), node.op_type, rule, detail))

    qdq_zero_points = {node.input[2] for node in graph.node
                       if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2}

    # --- uint8-io: where UINT8 tensors may appear and what may touch them
    for name in sorted(n for n, t in types.items() if t == _UINT8):
        made_by = producer.get(name)
        if name in qdq_zero_points or (made_by and made_by[1].op_type == "QuantizeLinear"):
            continue  # reported by the quantization rule, with a better fix
        if name in initializers or (made_by and made_by[1].op_type == "Constant"):
            where = made_by or next(iter(consumers.get(name, [])), None)
            detail = (f"UINT8 constant {name!r}: TensorRT takes UINT8 only as a network input or output "
                      "(a constant would be widened to INT32); store it as INT32 or a float")
            if where:
                add(*where, "uint8-io", detail)
            else:
                problems.append(Problem(name, "", "uint8-io", detail))
            continue
        if name not in inputs and name not in outputs:
            if made_by:
                add(*made_by, "uint8-io", f"produces the UINT8 intermediate tensor {name!r}; TensorRT supports "
                    "UINT8 only as a network input or output. Compute in float and cast to uint8 as the last node")
            continue
        if name in outputs and made_by and made_by[1].op_type != "Cast":
            add(*made_by, "uint8-io", f"produces the UINT8 graph output {name!r}; only a Cast may (transpose or "
                "reshape in float, then cast to uint8 as the last node)")
        for i, node in consumers.get(name, []):
            if node.op_type != "Cast":
                kind = "input" if name in inputs else "output"
                add(i, node, "uint8-io", f"reads the UINT8 graph {kind} {name!r}; TensorRT lets only a Cast "
                    "read a UINT8 tensor (not even Transpose, Reshape or Shape): cast to float first")

    # --- per node: domain, operator, types, attributes, constants, quantization
    native_norms = 0
    for i, node in enumerate(graph.node):
        op = node.op_type
        if node.domain not in ("", "ai.onnx"):
            hint = (" (TensorRT's InstanceNormalization plugin cannot go into version-compatible engines; "
                    "export the ONNX InstanceNormalization op)" if "instancenorm" in op.lower() else "")
            add(i, node, "instance-norm" if hint else "custom-domain",
                f"operator domain {node.domain!r}: the parser would import it as a plugin{hint}")
            continue
        if op == "InstanceNormalization":
            native_norms += 1
        if op not in SUPPORTED:
            why = "documented as unsupported" if op in UNSUPPORTED else "not in the support table"
            add(i, node, "unsupported-op", f"{op} is {why} ({SOURCE})")
            continue
        allowed = SUPPORTED[op]
        checked: list[str] = []
        if op in ("Cast", "CastLike"):
            checked = [node.input[0], node.output[0]]
        elif op == "Where":
            checked = [node.input[1]] if len(node.input) > 1 else []
        elif op not in ("QuantizeLinear", "DequantizeLinear", "Constant", "ConstantOfShape", "EyeLike",
                        "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Range"):
            checked = [node.input[0]] if node.input and node.input[0] else []
        if op not in _OUTPUT_NOT_T and node.output and op not in ("Cast", "CastLike"):
            checked.append(node.output[0])
        for name in checked:
            t = types.get(name)
            if t is None or (t == _UINT8 and op not in ("Cast", "CastLike")):
                continue  # unknown type, or UINT8 (the uint8-io rule reports it)
            if label[name] not in allowed:
                add(i, node, "data-type", f"tensor {name!r} is {label[name]}; {op} supports "
                    f"{', '.join(sorted(allowed))}")
        for attr, values in ATTRIBUTE_VALUES.get(op, {}).items():
            value = _attr(node, attr)
            if value is not None and value not in values:
                add(i, node, "attribute", f"{attr}={value!r}; TensorRT supports {sorted(values, key=str)}")
        for attr in FORBIDDEN_ATTRIBUTES.get(op, ()):
            if _attr(node, attr) is not None:
                add(i, node, "attribute", f"attribute {attr} is not supported")
        if op in _DILATION_FREE:
            dilations = _attr(node, "dilations")
            if dilations and any(d != 1 for d in dilations):
                add(i, node, "attribute", f"dilations={list(dilations)}; must be empty or all ones")
        for k in CONSTANT_INPUTS.get(op, ()):
            if len(node.input) > k and node.input[k] and not _is_constant(model, node.input[k]):
                add(i, node, "constant-input", f"input {k} ({node.input[k]!r}) must be an initializer")
        if op in ("QuantizeLinear", "DequantizeLinear"):
            problems.extend(_quantization_problems(model, i, node, label))
    if expect_instance_norm and native_norms == 0:
        problems.append(Problem("graph", "", "instance-norm", "no ONNX InstanceNormalization node: the norm was "
                                "decomposed (or replaced by a plugin); TensorRT's native mapping and the FP32 "
                                "island of the FP16 graph rely on that op type"))
    return problems


def _quantization_problems(model: Any, i: int, node: Any, label: dict[str, str]) -> list[Problem]:
    import numpy as np

    op, where = node.op_type, _node_label(i, node)
    found: list[Problem] = []

    def add(detail: str) -> None:
        found.append(Problem(where, op, "quantization", detail))

    quantized = node.output[0] if op == "QuantizeLinear" else node.input[0]
    real = node.input[0] if op == "QuantizeLinear" else node.output[0]
    zero_point = node.input[2] if len(node.input) > 2 and node.input[2] else None
    q_type = label.get(quantized)
    if q_type == "UINT8" or (op == "QuantizeLinear" and zero_point is None and _attr(node, "output_dtype") is None):
        add(f"quantizes to UINT8 ({'a UINT8 zero point' if zero_point else 'no zero point: ONNX then means UINT8'}"
            "); TensorRT quantizes to INT8 only and would read it as INT8 (values above 127 change). Give an "
            "INT8 zero point of 0")
    elif q_type is not None and q_type not in _QUANTIZED:
        add(f"quantized tensor {quantized!r} is {q_type}; TensorRT supports {', '.join(sorted(_QUANTIZED))}")
    if label.get(real) is not None and label[real] not in _FLOATS:
        add(f"tensor {real!r} is {label[real]}; Q/DQ convert to/from FP32, FP16 or BF16")
    if zero_point is not None:
        values = _constant_values(model, zero_point)
        if values is None:
            add(f"zero point {zero_point!r} must be an initializer (of zeros)")
        elif np.any(np.asarray(values, dtype=np.float64) != 0):
            add(f"zero point {zero_point!r} is not all zeros; TensorRT supports symmetric quantization only")
    scale = _constant_values(model, node.input[1]) if len(node.input) > 1 else None
    if scale is not None and not np.all(np.asarray(scale, dtype=np.float64) > 0):
        add(f"scale {node.input[1]!r} has values <= 0; TensorRT requires positive scales")
    return found


def format_problems(problems: Iterable[Problem]) -> str:
    """All problems, one per line (for logs and reports)."""
    return "\n".join(str(p) for p in problems)


def check_tensorrt_compatible(model: Any, *, label: str, expect_instance_norm: bool = True,
                              fix: str | None = None) -> None:
    """Raise :class:`ModelFileError` (one line: the first problem, naming its node and rule, and how many more)
    unless :func:`tensorrt_lint` finds nothing. Every problem is logged at debug level. ``fix``: the advice
    (default: nst's own graphs')."""
    problems = tensorrt_lint(model, expect_instance_norm=expect_instance_norm)
    if not problems:
        return
    for p in problems:
        log.debug("%s: %s", label, p)
    more = f" (and {len(problems) - 1} more problem(s): rules " \
           f"{', '.join(sorted({p.rule for p in problems[1:]}))})" if len(problems) > 1 else ""
    name = Path(label).name if isinstance(label, Path) else label
    raise ModelFileError(
        f"{name}: TensorRT's ONNX parser would reject this graph: {problems[0]}{more}. Fix: "
        + (fix or "export it with this nst version (nst-export writes TensorRT-parseable graphs); for a graph of "
                  "your own, change it as the rule says") + "."
    )
