"""Foreign ONNX style networks -> nst artifacts: the uint8 NHWC contract by graph composition, no re-training.

People hold style networks that nst did not export: the ONNX Model Zoo's fast-neural-style files (pytorch/examples'
TransformerNet at opset 8/9, a fixed ``1x3x224x224`` float input in 0..255, float output) or their own
``torch.onnx.export`` of that network (opset 11+, fixed shape). :func:`onnx_from_foreign` turns such a file into
the same artifact and sidecar ``nst-export`` writes for its own checkpoints, so nothing downstream (FP16, the
runtime, TensorRT, ``nst-info``) can tell the difference:

1. **read** (:func:`inspect_foreign`): the image input and output, their layout (NCHW or NHWC, found from where
   the 3 channels are), the original opset, shape, producer and sha256 (all recorded in the sidecar's ``source``);
2. **modernize**: the graph is converted to the export opset (``onnx.version_converter``: opset-8/9 ``Upsample``
   becomes ``Resize``, attribute ``pads`` become an input), constants are folded and ``Identity`` nodes dropped,
   so FP16 conversion and TensorRT's parser see a clean graph;
3. **probe** (:func:`probe_dynamic`): the input's N/H/W are declared dynamic and the graph is *run* at other
   sizes on ONNX Runtime. A graph that runs there and keeps the size, and whose batch of two equals two single
   runs, becomes a dynamic artifact. Otherwise the reason is given exactly: the structural culprits (a
   ``Reshape`` to constant sizes, a ``Resize`` to constant ``sizes``, a constant crop, ...) by node name, and
   what ONNX Runtime said;
4. **compose** (:func:`deploy_model_from_foreign`): uint8 NHWC RGB in -> cast, layout, scale to the network's
   input range, reflection pad to the network's size multiple -> the foreign graph, unchanged -> crop, scale
   from its output range, clamp, round, layout, cast -> uint8 NHWC out. For a graph that cannot take other sizes,
   ``fixed_size=True`` composes resize-in / resize-out around it instead (bilinear in and out, without
   antialiasing, which TensorRT's Resize lacks): it runs on any image size, at the network's native resolution;
5. **gate**: parity against the **original file** on ONNX Runtime (within 1 uint8 level in FP32; PSNR for FP16) at
   its native shape, and at other sizes against the same graph with only its input dims declared dynamic;
   the TensorRT lint of every precision written (fatal unless ``require_tensorrt=False``, ``--onnx-only``:
   then recorded and warned about); then the sidecar (a graph whose batch is fixed
   records it as the sidecar's ``profile``, and the runtime sends it one image per call).

Value ranges: :class:`ForeignImport` carries ``input_range``/``output_range`` (e.g. ``(0, 1)`` for exports that
take 0..1 and end in a Sigmoid). ``onnx_from_foreign(source_extra=...)`` adds a catalogue's URL, licence or style
names to the sidecar's ``source`` (issue 19).

Inputs besides the image (multi-style networks: a style-weight vector; arbitrary-style ones: a style
embedding) each need a value, given one of two ways (:func:`check_extra_inputs` refuses a graph that leaves one
open, in one line naming both):

* ``bind={NAME: (v1, v2, ...)}`` (``--bind NAME=v1,v2,...``): a constant inside the artifact, one fixed style;
  the result is a plain one-style artifact, and constants it makes foldable are folded;
* ``style_input=NAME`` (``--style-input NAME [--style-names n1,n2,...]``): kept as the artifact's second input
  ``style``, a float32 vector of the N style weights (:class:`nst_runtime.sidecar.StyleInput` in the sidecar
  names the styles; the runtime feeds it on every call, ``--style NAME|INDEX|"3:0.5,12:0.5"``). The wrapper
  reshapes it to what the network declares (``[N]``, ``[1, N]``, ``[batch, N]``, ``[1, N, 1, 1]``...) and casts
  it to the network's float type. The parity gate then runs for the first style, the last and an even blend of
  the two, each against the original file fed the same vector.

Normalization written out as ``ReduceMean``/``Sub``/``Pow``/``Sqrt``/``Div`` (conditional instance norm as
PyTorch's TorchScript exporter writes it) holds the FP16 trap of ``InstanceNormalization`` without its op type:
for such graphs the FP16 file converts only the ops of :data:`FP16_OPS_WITH_DECOMPOSED_NORM` and keeps the rest
in FP32 (:func:`decomposed_norm_nodes` finds them; the result is checked).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from nst_runtime.errors import ModelFileError, UsageError

from .parity import (
    DEFAULT_SHAPES,
    DEFAULT_TOLERANCE,
    ParityReport,
    ParityTolerance,
    check_parity_styles,
    style_checks,
)

log = logging.getLogger(__name__)

INPUT_NAME, OUTPUT_NAME = "input", "output"
#: the opset foreign graphs are converted to (the same as nst's own exports; inside TensorRT 10/11's range)
DEFAULT_IMPORT_OPSET = 18
#: prefix of every tensor and node of the foreign graph inside the composed one (no name can clash with ours)
NET_PREFIX = "net/"
#: prefix of the wrapper's own nodes and tensors (the FP16 conversion keeps these FP32)
WRAP_PREFIX = "nst/"
#: candidate minimum sizes, smallest first; the first one the composed graph runs at is recorded as min_size
_MIN_SIZE_CANDIDATES = (8, 16, 32, 64, 128)
#: ops whose given input carries an output shape: constant there + image-dependent data = a baked-in size
_SHAPE_INPUTS = {"Reshape": 1, "Expand": 1, "Tile": 1, "Resize": 3}
#: the artifact's style input (multi-style imports): float32 [number of styles]
STYLE_NAME = "style"
#: graphs that normalize with ReduceMean/Sub/Pow/Sqrt/Div: the only ops their FP16 file computes in FP16
FP16_OPS_WITH_DECOMPOSED_NORM = frozenset({"Conv", "ConvTranspose", "Relu", "LeakyRelu", "Pad", "MaxPool",
                                           "AveragePool"})

Layout = Literal["NCHW", "NHWC"]


#: ONNX Runtime's log severity for probe sessions: 4 (fatal only); a probe's expected failure is no error
PROBE_LOG_SEVERITY = 4


@dataclass(frozen=True)
class ForeignImport:
    """How to read a foreign network's image tensors (what the file itself does not say)."""

    #: the float values the network expects for black .. white (pytorch/examples: 0..255)
    input_range: tuple[float, float] = (0.0, 255.0)
    #: the float values the network returns for black .. white
    output_range: tuple[float, float] = (0.0, 255.0)
    #: compose resize-in / resize-out around a graph whose size is fixed (see the module docstring)
    fixed_size: bool = False
    opset: int = DEFAULT_IMPORT_OPSET
    #: inputs besides the image fixed to constants (``--bind NAME=v1,v2,...``): name -> values
    bind: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    #: the input kept as the artifact's style input (``--style-input NAME``)
    style_input: str | None = None
    #: names of its styles, in order (``--style-names``; default: the indices)
    style_names: tuple[str, ...] = ()
    #: a graph TensorRT's ONNX parser would refuse (``nst_export.trt_lint``) is an error; False
    #: (``--onnx-only``): recorded in the sidecar and warned about, the artifact is for ONNX Runtime
    require_tensorrt: bool = True

    def __post_init__(self) -> None:
        for name in ("input_range", "output_range"):
            lo, hi = getattr(self, name)
            if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
                raise UsageError(f"{name} {lo},{hi}: expected two finite numbers LOW,HIGH with HIGH > LOW "
                                 "(e.g. 0,255 or 0,1).")
        for name, values in self.bind.items():
            if not values or not all(np.isfinite(v) for v in values):
                raise UsageError(f"--bind {name}=...: expected one or more finite numbers, e.g. --bind "
                                 f"{name}=0,0,1,0.")
        if self.style_input is not None and self.style_input in self.bind:
            raise UsageError(f"{self.style_input!r} is both bound (--bind) and the style input (--style-input); "
                             "choose one.")
        if self.style_names and self.style_input is None:
            raise UsageError("--style-names names the styles of --style-input NAME; add --style-input.")
        if len(set(self.style_names)) != len(self.style_names) or not all(n.strip() for n in self.style_names):
            raise UsageError(f"--style-names {','.join(self.style_names)}: each style needs its own non-empty name.")


@dataclass(frozen=True)
class ExtraInput:
    """An input of the foreign graph besides the image, as the file declares it."""

    name: str
    dims: tuple[int | str, ...]
    elem_type: int

    @property
    def batch_dynamic(self) -> bool:
        """A leading dimension that is not a number: one row per image of the batch."""
        return len(self.dims) > 1 and not isinstance(self.dims[0], int)

    def vector_axis(self) -> int | None:
        """The one axis that holds the values (the others are 1, or the dynamic batch); None if none is."""
        start = 1 if self.batch_dynamic else 0
        axes = [a for a in range(start, len(self.dims)) if self.dims[a] != 1]
        if len(axes) == 1:
            return axes[0]
        if not axes and len(self.dims) > start:
            return start  # every dim is 1: one value
        return None

    @property
    def size(self) -> int | None:
        """How many values it takes (None: the file does not say)."""
        axis = self.vector_axis()
        if axis is None:
            return None
        d = self.dims[axis]
        return d if isinstance(d, int) and d > 0 else None

    def shape_for(self, size: int, batch: int = 1) -> tuple[int, ...]:
        axis = self.vector_axis()
        return tuple(size if a == axis else (batch if a == 0 and self.batch_dynamic else 1)
                     for a in range(len(self.dims)))

    def value(self, vector: np.ndarray, batch: int = 1) -> np.ndarray:
        """``vector`` in the declared shape and float type, repeated for ``batch`` images where the batch is
        an axis (what the original graph is fed)."""
        import onnx

        dtype = onnx.helper.tensor_dtype_to_np_dtype(self.elem_type)
        single = np.asarray(vector, np.float32).reshape(self.shape_for(vector.size, 1))
        if self.batch_dynamic:
            single = np.repeat(single, batch, axis=0)
        return single.astype(dtype)


@dataclass(frozen=True)
class ForeignGraph:
    """What nst found in a foreign file; recorded in the artifact's sidecar (``source``)."""

    path: Path
    sha256: str
    opset: int
    ir_version: int
    producer: str
    input_name: str
    output_name: str
    input_shape: tuple[int | str, ...]
    output_shape: tuple[int | str, ...]
    layout: Layout
    #: the input's spatial size as the file declares it (None where already dynamic)
    native_hw: tuple[int, int] | None
    native_batch: int | None
    #: product of the strides on the image path: inputs are padded to a multiple of it
    size_multiple: int = 1
    dynamic_batch: bool = False
    dynamic_hw: bool = False
    #: why N or H/W cannot vary (empty when both can)
    why_fixed: tuple[str, ...] = ()
    min_size: int = 8
    #: inputs besides the image, in graph order
    extra_inputs: tuple[ExtraInput, ...] = ()

    def source_record(self, mode: str) -> dict[str, Any]:
        """The sidecar's ``source`` entry."""
        extra = ({"extra_inputs": [{"name": e.name, "shape": list(e.dims)} for e in self.extra_inputs]}
                 if self.extra_inputs else {})
        return {**extra,
            "kind": "foreign-onnx", "file": self.path.name, "sha256": self.sha256, "opset": self.opset,
            "ir_version": self.ir_version, "producer": self.producer, "input": self.input_name,
            "input_shape": list(self.input_shape), "output": self.output_name,
            "output_shape": list(self.output_shape), "layout": self.layout, "size_multiple": self.size_multiple,
            "dynamic_batch": self.dynamic_batch, "dynamic_hw": self.dynamic_hw, "why_fixed": list(self.why_fixed),
            "mode": mode,
        }


# ------------------------------------------------------------------------------------------------ reading
def load_foreign(path: str | os.PathLike[str]) -> Any:
    """``onnx.load`` with nst's checks: the file exists, parses, and reads no external data outside its folder."""
    import onnx
    from nst_runtime.artifact import check_onnx_external_data

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such ONNX file. Fix: check the path.")
    check_onnx_external_data(path)
    try:
        model = onnx.load_model(os.fspath(path))
    except Exception as exc:  # protobuf DecodeError and friends
        raise ModelFileError(f"{path}: cannot read as ONNX ({type(exc).__name__}: {str(exc)[:200]}). "
                             "Fix: pass an .onnx model file.") from None
    if not model.graph.node:
        raise ModelFileError(f"{path}: the ONNX graph has no nodes; expected a style network.")
    return model


def _dims(value_info: Any) -> tuple[int | str, ...]:
    return tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                 for d in value_info.type.tensor_type.shape.dim)


def _graph_inputs(model: Any) -> list[Any]:
    inits = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def _layout_of(dims: tuple[int | str, ...], what: str, path: Path) -> Layout:
    if len(dims) == 4 and dims[1] == 3 and dims[3] != 3:
        return "NCHW"
    if len(dims) == 4 and dims[3] == 3 and dims[1] != 3:
        return "NHWC"
    if len(dims) == 4 and dims[1] == 3:
        return "NCHW"  # 3x...x3: the ONNX convention
    raise ModelFileError(f"{path}: the {what} has shape {list(dims)}; expected a 4-D image tensor with 3 "
                         "channels, NCHW [N,3,H,W] or NHWC [N,H,W,3].")


def check_extra_inputs(graph: ForeignGraph, options: ForeignImport) -> None:
    """Every input besides the image is bound (``options.bind``) or kept as the style input, with a value count
    that fits its declared shape; one line naming what is missing and both fixes otherwise."""
    extra = {e.name: e for e in graph.extra_inputs}
    named = [*options.bind, *([options.style_input] if options.style_input else [])]
    unknown = [n for n in named if n not in extra]
    if unknown:
        raise UsageError(f"{graph.path}: {unknown[0]!r} is not an input of the graph besides the image "
                         f"{graph.input_name!r}; those are {sorted(extra) or 'none'}.")
    open_ = [n for n in extra if n not in named]
    if open_:
        first = extra[open_[0]]
        example = ",".join(["0"] * min(first.size or 3, 3)) + ("..." if (first.size or 3) > 3 else "")
        raise ModelFileError(
            f"{graph.path}: the graph has inputs {open_} besides the image {graph.input_name!r}; nst needs a value "
            f"for each. Fix: --bind {first.name}={example} (a constant: one fixed style) or --style-input "
            f"{first.name} [--style-names n1,n2,...] (kept as the artifact's style input; nst-stylize --style).")
    if options.style_input is not None and (extra[options.style_input].elem_type not in _float_types()):
        raise ModelFileError(f"{graph.path}: the style input {options.style_input!r} is not a float tensor; nst "
                             "feeds style weights as floats.")
    for name, values in options.bind.items():
        _check_vector_input(graph, extra[name], len(values), f"--bind {name}")
    if options.style_input is not None:
        e = extra[options.style_input]
        count = len(options.style_names) or e.size
        if count is None:
            raise UsageError(f"{graph.path}: the style input {e.name!r} declares shape {list(e.dims)}, which does "
                             "not say how many styles it holds. Fix: --style-names n1,n2,... (one per style).")
        _check_vector_input(graph, e, count, "--style-names" if options.style_names else "--style-input")


def _float_types() -> tuple[int, ...]:
    import onnx

    return (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16)


def _check_vector_input(graph: ForeignGraph, extra: ExtraInput, count: int, option: str) -> None:
    if extra.vector_axis() is None:
        raise ModelFileError(f"{graph.path}: input {extra.name!r} has shape {list(extra.dims)}; nst feeds extra "
                             "inputs as one vector of values (shapes like [N], [1, N], [batch, N], [1, N, 1, 1]).")
    if extra.size is not None and count != extra.size:
        raise UsageError(f"{option}: {count} value(s) for input {extra.name!r}, which takes {extra.size} "
                         f"(shape {list(extra.dims)}).")


def _image_input(inputs: Sequence[Any]) -> Any:
    """The 4-D input with 3 channels first or last (a 4-D style embedding like [1, 100, 1, 1] is not it)."""
    four = [i for i in inputs if len(_dims(i)) == 4]
    rgb = [i for i in four if 3 in (_dims(i)[1], _dims(i)[3])]
    return (rgb or four)[0] if four else None


def inspect_foreign(model: Any, path: Path, *, sha256: str) -> ForeignGraph:
    """Find the image input/output, layout and native shape of a foreign graph (no probing yet)."""
    import onnx

    inputs = _graph_inputs(model)
    float_types = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE)
    image = _image_input(inputs)
    if image is None:
        raise ModelFileError(f"{path}: no 4-D image input among {[i.name for i in inputs]}; expected a style "
                             "network taking an [N,3,H,W] or [N,H,W,3] float image.")
    extra = tuple(ExtraInput(i.name, _dims(i), i.type.tensor_type.elem_type) for i in inputs if i.name != image.name)
    if image.type.tensor_type.elem_type not in float_types:
        dtype = onnx.TensorProto.DataType.Name(image.type.tensor_type.elem_type)
        raise ModelFileError(f"{path}: the image input {image.name!r} is {dtype}; expected a float tensor. "
                             "(A uint8 input may already be an nst artifact: it needs its sidecar .json.)")
    outputs = [o for o in model.graph.output if len(_dims(o)) == 4]
    if not outputs:
        raise ModelFileError(f"{path}: no 4-D image output among {[o.name for o in model.graph.output]}.")
    out = outputs[0]
    in_dims, out_dims = _dims(image), _dims(out)
    layout = _layout_of(in_dims, f"input {image.name!r}", path)
    h_ax, w_ax = (2, 3) if layout == "NCHW" else (1, 2)
    native_hw = ((in_dims[h_ax], in_dims[w_ax]) if all(isinstance(in_dims[a], int) and in_dims[a] > 0
                                                      for a in (h_ax, w_ax)) else None)
    native_batch = in_dims[0] if isinstance(in_dims[0], int) and in_dims[0] > 0 else None
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    return ForeignGraph(
        path=path, sha256=sha256, opset=opset, ir_version=model.ir_version,
        producer=f"{model.producer_name} {model.producer_version}".strip() or "unknown",
        input_name=image.name, output_name=out.name, input_shape=in_dims, output_shape=out_dims, layout=layout,
        native_hw=native_hw, native_batch=native_batch, size_multiple=_size_multiple(model, image.name),
        extra_inputs=extra,
    )


def _size_multiple(model: Any, image: str) -> int:
    """Product of the strides of the strided Conv/pooling nodes fed by the image (TransformerNet: 2*2 = 4)."""
    dependent = _image_dependent(model, image)
    multiple = 1
    for node in model.graph.node:
        if node.op_type in ("Conv", "MaxPool", "AveragePool") and node.output[0] in dependent:
            strides = next((list(a.ints) for a in node.attribute if a.name == "strides"), [])
            multiple *= max(strides, default=1)
    return max(1, min(multiple, 64))


def _image_dependent(model: Any, image: str) -> set[str]:
    """Tensors whose value depends on the image (topological order is an ONNX requirement)."""
    dependent = {image}
    for node in model.graph.node:
        if any(name in dependent for name in node.input):
            dependent.update(node.output)
    return dependent


def _shape_derived(model: Any, dependent: set[str]) -> set[str]:
    """Tensors computed from the image's *shape* (Shape/Size of it and what follows): these follow the input."""
    derived: set[str] = set()
    for node in model.graph.node:
        if (node.op_type in ("Shape", "Size") and node.input[0] in dependent) or any(
                name in derived for name in node.input):
            derived.update(node.output)
    return derived


def fixed_size_culprits(model: Any, image: str) -> list[str]:
    """Nodes that bake a size into the graph: a constant shape applied to image-dependent data."""
    from onnx import numpy_helper

    dependent = _image_dependent(model, image)
    derived = _shape_derived(model, dependent)
    consts = {i.name: i for i in model.graph.initializer}
    consts.update({n.output[0]: next(a.t for a in n.attribute if a.name == "value")
                   for n in model.graph.node if n.op_type == "Constant"
                   and any(a.name == "value" for a in n.attribute)})
    found = []
    for node in model.graph.node:
        data = node.input[0] if node.input else ""
        if data not in dependent:
            continue
        idx = _SHAPE_INPUTS.get(node.op_type)
        if idx is not None and len(node.input) > idx and node.input[idx] and node.input[idx] not in derived:
            name = node.input[idx]
            value = (numpy_helper.to_array(consts[name]).tolist() if name in consts else "a constant expression")
            what = {"Reshape": "reshapes the image-dependent tensor to the constant shape",
                    "Expand": "expands to the constant shape", "Tile": "tiles by the constant repeats",
                    "Resize": "resizes to the constant sizes"}[node.op_type]
            found.append(f"{node.op_type} node {node.name or node.output[0]!r} {what} {value}")
        if node.op_type in ("Gemm", "MatMul") and all(i not in dependent for i in node.input[1:]):
            found.append(f"{node.op_type} node {node.name or node.output[0]!r} multiplies the image-dependent "
                         "tensor by constant weights (a fully connected layer fixes the size)")
        if node.op_type == "Slice" and len(node.input) > 2 and node.input[2] in consts:
            ends = numpy_helper.to_array(consts[node.input[2]]).tolist()
            if any(0 < e < 1 << 30 for e in ends):
                found.append(f"Slice node {node.name or node.output[0]!r} crops to the constant ends {ends}")
    return found


# ------------------------------------------------------------------------------------------------ modernizing
def modernize(model: Any, *, opset: int = DEFAULT_IMPORT_OPSET) -> Any:
    """Convert to ``opset``, fold constants, drop ``Identity``; returns a new, checked ModelProto."""
    import onnx
    from onnx import version_converter

    current = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if current > opset:
        raise ModelFileError(f"the graph uses opset {current}, newer than nst's import opset {opset}. Fix: pass "
                             f"--opset {current} (TensorRT 10's parser reads opsets up to 24).")
    converted = model
    if current < opset:
        try:
            converted = version_converter.convert_version(model, opset)
        except Exception as exc:
            raise ModelFileError(f"cannot convert the graph from opset {current} to {opset} "
                                 f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}). Fix: re-export the "
                                 f"network at opset {opset} or pass --opset {current} if TensorRT is not needed."
                                 ) from None
    converted = fold_constants(converted)
    converted.ir_version = max(converted.ir_version, onnx.helper.find_min_ir_version_for(
        list(converted.opset_import), ignore_unknown=True))
    try:
        onnx.checker.check_model(converted, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ModelFileError(f"the graph does not pass onnx.checker after conversion to opset {opset}: "
                             f"{str(exc).splitlines()[0][:300]}") from None
    return converted


def fold_constants(model: Any, *, max_elements: int = 1 << 22) -> Any:
    """Evaluate every node whose inputs are all constants (onnx's reference evaluator) and drop ``Identity``.

    Exporters at opset 11+ compute Pad's ``pads`` with a dozen Constant/Reshape/Slice/Transpose nodes per
    layer; folded, each Pad reads one initializer, which TensorRT's parser and the FP16 converter both want.
    """
    import onnx
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    values: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    outputs = {o.name for o in graph.output}
    rename: dict[str, str] = {}
    kept = []
    opsets = list(model.opset_import)
    for node in graph.node:
        for k, name in enumerate(node.input):
            node.input[k] = rename.get(name, name)
        if node.op_type == "Identity" and node.output[0] not in outputs:
            rename[node.output[0]] = node.input[0]
            if node.input[0] in values:
                values[node.output[0]] = values[node.input[0]]
            continue
        foldable = (node.domain in ("", "ai.onnx") and not any(a.type in (5, 10) for a in node.attribute)
                    and node.op_type not in ("RandomNormal", "RandomUniform", "RandomNormalLike",
                                             "RandomUniformLike", "Multinomial", "Bernoulli")
                    and all(not name or name in values for name in node.input))
        if foldable:
            try:
                single = helper.make_model(helper.make_graph(
                    [node], "fold", [], [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None)
                                         for o in node.output]), opset_imports=opsets)
                feeds = {n: values[n] for n in node.input if n}
                # the reference evaluator wants graph inputs for what it is fed
                single.graph.input.extend(helper.make_tensor_value_info(
                    n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape) for n, v in feeds.items())
                results = ReferenceEvaluator(single).run(None, feeds)
            except Exception as exc:  # an op the reference evaluator lacks: keep the node
                log.debug("not folding %s %s: %s", node.op_type, node.name, exc)
            else:
                if all(np.asarray(r).size <= max_elements for r in results):
                    values.update({o: np.asarray(r) for o, r in zip(node.output, results, strict=True)})
                    continue
        kept.append(node)
    used = {name for node in kept for name in node.input} | outputs
    initializers = [numpy_helper.from_array(np.asarray(values[name]), name)
                    for name in sorted(used) if name in values]
    del graph.node[:]
    graph.node.extend(kept)
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    del graph.value_info[:]  # shapes of removed tensors would dangle; shape inference recomputes the rest
    # old IR versions list every weight as a graph input too; only the real inputs remain inputs
    real_inputs = [i for i in graph.input if i.name not in values]
    del graph.input[:]
    graph.input.extend(real_inputs)
    return model


# ------------------------------------------------------------------------------------------------ probing
def relaxed(model: Any, graph: ForeignGraph, *, batch: bool = True, hw: bool = True) -> Any:
    """A copy whose image input/output declare N (and H, W) dynamic; nothing else changes."""
    import onnx

    copy = onnx.ModelProto.FromString(model.SerializeToString())
    h_ax, w_ax = (2, 3) if graph.layout == "NCHW" else (1, 2)
    for value, prefix in ((next(i for i in copy.graph.input if i.name == graph.input_name), "in"),
                          (next(o for o in copy.graph.output if o.name == graph.output_name), "out")):
        dims = value.type.tensor_type.shape.dim
        for axis, name, on in ((0, "batch", batch), (h_ax, "height", hw), (w_ax, "width", hw)):
            if on and axis < len(dims):
                dims[axis].Clear()
                dims[axis].dim_param = f"{prefix}_{name}"
    for value in copy.graph.output:
        if value.name != graph.output_name:
            value.type.tensor_type.ClearField("shape")
    del copy.graph.value_info[:]
    return copy


def _session(model: Any) -> Any:
    """A CPU session for probing: a probe that fails is an expected outcome (reported by nst in its own words),
    so ONNX Runtime logs nothing, not even its errors (severity 4: fatal only)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = PROBE_LOG_SEVERITY
    return ort.InferenceSession(model.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])


def _probe_input(graph: ForeignGraph, n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 255.0, (n, 3, h, w)).astype(np.float32)
    return x if graph.layout == "NCHW" else np.ascontiguousarray(x.transpose(0, 2, 3, 1))


#: the values of the inputs besides the image for a batch of N images: ``feeds(N) -> {name: array}``
Feeds = Callable[[int], dict[str, np.ndarray]]


def original_feeds(graph: ForeignGraph, options: ForeignImport, style: np.ndarray | None = None) -> Feeds:
    """What the original graph's inputs besides the image are fed: the bound values, and ``style`` (the weight
    vector) for the style input, each in the declared shape and type."""
    def feeds(batch: int) -> dict[str, np.ndarray]:
        out = {}
        for e in graph.extra_inputs:
            if e.name in options.bind:
                out[e.name] = e.value(np.asarray(options.bind[e.name], np.float32), batch)
            elif e.name == options.style_input and style is not None:
                out[e.name] = e.value(style, batch)
        return out

    return feeds


def style_count(graph: ForeignGraph, options: ForeignImport) -> int | None:
    """How many styles the style input holds (None: no style input)."""
    if options.style_input is None:
        return None
    extra = next(e for e in graph.extra_inputs if e.name == options.style_input)
    return len(options.style_names) or extra.size


def _no_feeds(batch: int) -> dict[str, np.ndarray]:
    return {}


def probe_dynamic(model: Any, graph: ForeignGraph, feeds: Feeds = _no_feeds) -> ForeignGraph:
    """Run the graph with N/H/W declared dynamic at other sizes; return ``graph`` with the verdict filled in.
    ``feeds``: the values of the inputs besides the image (:func:`original_feeds`)."""
    native_h, native_w = graph.native_hw or (64, 64)
    m = graph.size_multiple
    h_ax, w_ax = (2, 3) if graph.layout == "NCHW" else (1, 2)
    reasons: list[str] = []
    culprits = fixed_size_culprits(model, graph.input_name)

    def run(session: Any, x: np.ndarray) -> np.ndarray:
        return session.run([graph.output_name], {graph.input_name: x, **feeds(x.shape[0])})[0]

    try:
        session = _session(relaxed(model, graph))
    except Exception as exc:
        return dataclasses.replace(graph, why_fixed=(*culprits, f"onnxruntime refuses dynamic N/H/W: "
                                                                 f"{_first_line(exc)}"))
    # H/W: another size, a multiple of the stride product, non-square
    alt_h, alt_w = native_h + 2 * m, native_w + 4 * m
    dynamic_hw = True
    try:
        y = run(session, _probe_input(graph, 1, alt_h, alt_w))
        if (y.shape[h_ax], y.shape[w_ax]) != (alt_h, alt_w):
            dynamic_hw = False
            reasons.append(f"at {alt_h}x{alt_w} the output is {y.shape[h_ax]}x{y.shape[w_ax]} (the size is not kept)")
    except Exception as exc:
        dynamic_hw = False
        reasons.append(f"onnxruntime at {alt_h}x{alt_w}: {_first_line(exc)}")
    if not dynamic_hw:
        reasons = culprits + reasons
    # N: a batch of two must equal two single runs (a Reshape that folds the batch would mix them)
    dynamic_batch = True
    probe = _probe_input(graph, 2, native_h, native_w, seed=1)
    try:
        both = run(session, probe)
        singles = np.concatenate([run(session, probe[i:i + 1]) for i in range(2)])
        if both.shape != singles.shape or not np.allclose(both, singles, rtol=1e-3, atol=1e-2):
            dynamic_batch = False
            reasons.append("a batch of 2 differs from two single images (the graph mixes the batch)")
    except Exception as exc:
        dynamic_batch = False
        reasons.append(f"onnxruntime at batch 2: {_first_line(exc)}")
    if not dynamic_batch and not any("Reshape" in c for c in reasons):
        reasons = [c for c in culprits if c not in reasons] + reasons
    return dataclasses.replace(graph, dynamic_batch=dynamic_batch, dynamic_hw=dynamic_hw,
                               why_fixed=tuple(dict.fromkeys(reasons)))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = next((t for t in text if t.strip()), type(exc).__name__)
    return line[:300]


# ------------------------------------------------------------------------------------------------ composing
class _Wrapper:
    """Builds the wrapper's nodes and constants with deterministic names (the same file on every run)."""

    def __init__(self) -> None:
        self.before: list[Any] = []
        self.after: list[Any] = []
        self.inits: list[Any] = []
        self.target = self.before
        self._count = 0

    def const(self, value: Any, dtype: Any = np.int64) -> str:
        from onnx import numpy_helper

        self._count += 1
        name = f"{WRAP_PREFIX}const_{self._count}"
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def node(self, op: str, inputs: Sequence[str], output: str | None = None, **attrs: Any) -> str:
        from onnx import helper

        self._count += 1
        out = output or f"{WRAP_PREFIX}{op.lower()}_{self._count}"
        self.target.append(helper.make_node(op, list(inputs), [out], name=f"{WRAP_PREFIX}{op}_{self._count}",
                                            **attrs))
        return out

    def affine(self, x: str, src: tuple[float, float], dst: tuple[float, float]) -> str:
        """Map values from range ``src`` to ``dst`` (no node when they are equal)."""
        if tuple(map(float, src)) == tuple(map(float, dst)):
            return x
        scale = (dst[1] - dst[0]) / (src[1] - src[0])
        shift = dst[0] - src[0] * scale
        x = self.node("Mul", [x, self.const(scale, np.float32)])
        return self.node("Add", [x, self.const(shift, np.float32)]) if shift else x


def deploy_model_from_foreign(model: Any, graph: ForeignGraph, options: ForeignImport) -> Any:
    """Compose the uint8 NHWC wrapper around the (modernized) foreign graph; returns a new ModelProto.

    Dynamic mode (the graph takes any size): reflection pad to the size multiple and crop back, like nst's own
    export. Fixed mode: resize to the native size and back.
    """
    import onnx
    from onnx import compose, helper

    fixed = not graph.dynamic_hw
    if fixed and not options.fixed_size:
        raise ModelFileError(_why_fixed_message(graph))
    if fixed and graph.native_hw is None:
        raise ModelFileError(f"{graph.path}: the graph cannot take other sizes, and it declares no fixed size "
                             "to resize to; nst cannot tell what size it needs.")
    net = compose.add_prefix(model, NET_PREFIX)
    src_in, src_out = NET_PREFIX + graph.input_name, NET_PREFIX + graph.output_name
    nchw = graph.layout == "NCHW"
    h_ax, w_ax = (2, 3) if nchw else (1, 2)
    w = _Wrapper()
    # ---- in: uint8 NHWC -> float, the network's layout and value range, its size
    x = w.node("Cast", [INPUT_NAME], to=onnx.TensorProto.FLOAT)
    batch_size = w.node("Slice", [w.node("Shape", [x]), w.const([0]), w.const([1])]) if any(
        e.batch_dynamic for e in graph.extra_inputs) else None
    for extra in graph.extra_inputs:
        _compose_extra(w, extra, graph, options, batch_size)
    if nchw:
        x = w.node("Transpose", [x], perm=[0, 3, 1, 2])
    hw = w.node("Slice", [w.node("Shape", [x]), w.const([h_ax]), w.const([w_ax + 1])])
    x = w.affine(x, (0.0, 255.0), options.input_range)
    if fixed:
        w.node("Resize", [x, "", "", w.const(list(graph.native_hw or ()))], output=src_in, axes=[h_ax, w_ax],
               mode="linear", antialias=0)  # TensorRT's Resize has no antialiasing (trt_lint rule)
    elif graph.size_multiple > 1:
        mult = w.const([graph.size_multiple] * 2)
        pad_hw = w.node("Mod", [w.node("Sub", [mult, w.node("Mod", [hw, mult])]), mult])
        ends = [w.const([0, 0]), pad_hw] if nchw else [w.const([0]), pad_hw, w.const([0])]
        pads = w.node("Concat", [w.const([0, 0, 0, 0]), *ends], axis=0)
        w.node("Pad", [x, pads], output=src_in, mode="reflect")
    else:
        w.node("Identity", [x], output=src_in)
    # ---- out: back to the input's size, range 0..255, uint8 NHWC
    w.target = w.after
    if fixed:
        y = w.node("Resize", [src_out, "", "", hw], axes=[h_ax, w_ax], mode="linear")
    else:
        y = w.node("Slice", [src_out, w.const([0, 0]), hw, w.const([h_ax, w_ax])])
    y = w.affine(y, options.output_range, (0.0, 255.0))
    y = w.node("Clip", [y, w.const(0.0, np.float32), w.const(255.0, np.float32)])
    y = w.node("Round", [y])
    if nchw:
        y = w.node("Transpose", [y], perm=[0, 2, 3, 1])
    # UINT8 only at the graph's edges, next to a Cast (TensorRT's parser; nst_export.trt_lint rule uint8-io)
    w.node("Cast", [y], output=OUTPUT_NAME, to=onnx.TensorProto.UINT8)
    batch: int | str = "batch" if graph.dynamic_batch or graph.native_batch is None else graph.native_batch
    dims: list[int | str] = [batch, "height", "width", 3]
    styles = style_count(graph, options)
    style_in = ([helper.make_tensor_value_info(STYLE_NAME, onnx.TensorProto.FLOAT, [styles])]
                if styles is not None else [])
    composed = helper.make_model(
        helper.make_graph([*w.before, *net.graph.node, *w.after], "nst_foreign",
                          [helper.make_tensor_value_info(INPUT_NAME, onnx.TensorProto.UINT8, dims), *style_in],
                          [helper.make_tensor_value_info(OUTPUT_NAME, onnx.TensorProto.UINT8, dims)],
                          initializer=[*net.graph.initializer, *w.inits]),
        opset_imports=list(net.opset_import), producer_name="nst-export", ir_version=net.ir_version)
    composed.functions.extend(net.functions)
    if options.bind:  # the bound values are constants now: what only they fed folds away
        composed = fold_constants(composed)
    contract = "uint8 NHWC RGB in [0,255] -> uint8 NHWC RGB, same N/H/W"
    if styles is not None:
        contract += f"; float32 {STYLE_NAME}[{styles}]: style weights"
    for key, value in (("nst.contract", contract),
                       ("nst.source_sha256", graph.sha256),
                       ("nst.import_mode", "fixed-size (resize in/out)" if fixed else "dynamic")):
        composed.metadata_props.add(key=key, value=value)
    return composed


def _compose_extra(w: _Wrapper, extra: ExtraInput, graph: ForeignGraph, options: ForeignImport,
                   batch_size: str | None) -> None:
    """The wrapper's nodes that feed one input besides the image: a bound constant, or the artifact's style
    input, reshaped to the declared shape (repeated over the batch where that is an axis) and cast to its type."""
    import onnx

    if extra.name in options.bind:
        values = np.asarray(options.bind[extra.name], np.float32)
        source, size = w.const(values, np.float32), values.size
    else:
        source, size = STYLE_NAME, style_count(graph, options) or 1
    shape = extra.shape_for(size, 1)
    y = source if shape == (size,) else w.node("Reshape", [source, w.const(list(shape))])
    if extra.batch_dynamic and batch_size is not None:
        y = w.node("Expand", [y, w.node("Concat", [batch_size, w.const(list(shape[1:]))], axis=0)])
    if extra.elem_type != onnx.TensorProto.FLOAT:
        y = w.node("Cast", [y], to=extra.elem_type)
    w.node("Identity", [y], output=NET_PREFIX + extra.name)


def _why_fixed_message(graph: ForeignGraph) -> str:
    size = "x".join(map(str, graph.native_hw)) if graph.native_hw else "its declared size"
    reasons = "; ".join(graph.why_fixed) or "it does not keep the input size"
    return (f"{graph.path}: this network cannot take other image sizes than {size}: {reasons}. Fix: pass "
            f"--fixed-size for an artifact that resizes every image to {size}, runs the network there, and "
            "resizes the result back (lower detail on large images; --max-size in nst-stylize does the same "
            "on the host), or re-export the network without fixed sizes.")


# ------------------------------------------------------------------------------------------------ checking
def check_foreign_deploy_model(model: Any, *, dynamic_batch: bool, precision: str | None = None,
                               styles: int | None = None) -> None:
    """The nst contract on a composed graph: checker, uint8 NHWC I/O named ``input``/``output``, dynamic H/W;
    ``styles``: a second input ``style``, float32 [styles]."""
    import onnx

    problems = []
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        problems.append(f"onnx.checker: {str(exc).splitlines()[0]}")
    inputs = list(model.graph.input)
    if styles is not None:
        style = [v for v in inputs if v.name == STYLE_NAME]
        if len(style) != 1 or style[0].type.tensor_type.elem_type != onnx.TensorProto.FLOAT or _dims(
                style[0]) != (styles,):
            problems.append(f"expected a float32 input {STYLE_NAME!r} of shape [{styles}]")
        inputs = [v for v in inputs if v.name != STYLE_NAME]
    for kind, values, name in (("input", inputs, INPUT_NAME), ("output", model.graph.output, OUTPUT_NAME)):
        if [v.name for v in values] != [name]:
            problems.append(f"expected one {kind} named {name!r}, found {[v.name for v in values]}")
            continue
        tensor = values[0].type.tensor_type
        if tensor.elem_type != onnx.TensorProto.UINT8:
            problems.append(f"{kind} is not UINT8")
        dims = _dims(values[0])
        if len(dims) != 4 or dims[3] != 3 or not all(isinstance(d, str) for d in dims[1:3]):
            problems.append(f"{kind} shape {list(dims)}, expected [N, height, width, 3] with dynamic H and W")
        elif dynamic_batch and not isinstance(dims[0], str):
            problems.append(f"{kind} batch is fixed ({dims[0]}), expected dynamic")
    if precision == "fp16":
        from .artifacts import conv_weight_dtypes

        wrong = [n for n, dt in conv_weight_dtypes(model).items() if dt != onnx.TensorProto.FLOAT16]
        if wrong:
            problems.append(f"{len(wrong)} Conv weights not FP16 (e.g. {wrong[0]})")
    if problems:
        raise ModelFileError("the imported graph breaks the nst contract: " + "; ".join(problems)
                             + ". This is a bug in the import; please report it with the source file.")


def decomposed_norm_nodes(model: Any) -> list[str]:
    """Names of the nodes of a normalization written out with primitive ops on image data (``ReduceMean``,
    ``Pow``, ``Sqrt``, ``Div``, ``ReduceSumSquare``...): the statistics FP16 must not compute."""
    dependent = _image_dependent(model, INPUT_NAME)
    stats = {"ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL2", "Pow", "Sqrt", "Div", "Reciprocal"}
    return [n.name for n in model.graph.node if n.op_type in stats and n.input and n.input[0] in dependent]


def fp16_model_from_foreign(model: Any, *, dynamic_batch: bool, styles: int | None = None) -> Any:
    """FP16 version of a composed FP32 graph: the same method as nst's own exports (see ``nst_export.fp16``):
    convolutions FP16; InstanceNormalization, the wrapper and everything outside the first..last Conv FP32.
    A graph whose normalization is written out in primitive ops (:func:`decomposed_norm_nodes`) converts only
    :data:`FP16_OPS_WITH_DECOMPOSED_NORM`: mean, variance, scale and shift stay FP32."""
    import onnx

    from .fp16 import fp16_model_from_fp32, fp32_island_problems

    decomposed: list[str] = []

    def keep(named: Any) -> list[str]:
        """The wrapper's nodes and, where the norm is written out, everything but the convolution-like ops
        (on the copy whose nodes all have names, so the names found here are the converted graph's)."""
        decomposed.extend(decomposed_norm_nodes(named))
        names = [n.name for n in named.graph.node if n.name.startswith(WRAP_PREFIX)]
        if decomposed:
            names += [n.name for n in named.graph.node if n.op_type not in FP16_OPS_WITH_DECOMPOSED_NORM]
        return names

    fp16 = fp16_model_from_fp32(model, keep=keep, nst_contract=False)
    check_foreign_deploy_model(fp16, dynamic_batch=dynamic_batch, precision="fp16", styles=styles)
    problems = fp32_island_problems(fp16)
    if decomposed:
        from .fp16 import tensor_dtypes

        types = tensor_dtypes(fp16)
        wanted = set(decomposed)
        problems += [f"{n.name}: {name} is {onnx.TensorProto.DataType.Name(types.get(name, 0))}"
                     for n in fp16.graph.node if n.name in wanted for name in (*n.input[:1], *n.output)
                     if types.get(name) != onnx.TensorProto.FLOAT]
    if problems:
        raise ModelFileError(f"FP16 conversion left the normalization outside FP32: {'; '.join(problems)}.")
    return fp16


# ------------------------------------------------------------------------------------------------ the reference
def original_reference(path: Path, model: Any, graph: ForeignGraph, options: ForeignImport,
                       feeds: Feeds = _no_feeds) -> Callable[[np.ndarray], np.ndarray]:
    """uint8 NHWC -> uint8 NHWC through the **original file** on ONNX Runtime CPU, with the wrapper's host-side
    equivalent in numpy (layout, range, reflection pad to the size multiple, crop, clamp, round); ``feeds``:
    the original's inputs besides the image (:func:`original_feeds`).

    Batches at the file's declared shape run on the unmodified file; other shapes (dynamic artifacts only) on
    the same graph with its input dims declared dynamic (:func:`relaxed`), the only way the original runs there.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    original = ort.InferenceSession(os.fspath(path), sess_options=opts, providers=["CPUExecutionProvider"])
    sessions: dict[str, Any] = {}

    def session_for(x: np.ndarray) -> Any:
        declared = graph.input_shape
        if all(not isinstance(d, int) or d <= 0 or d == s for d, s in zip(declared, x.shape, strict=True)):
            return original
        if "relaxed" not in sessions:
            sessions["relaxed"] = _session(relaxed(model, graph, batch=graph.dynamic_batch, hw=graph.dynamic_hw))
        return sessions["relaxed"]

    nchw = graph.layout == "NCHW"
    (ilo, ihi), (olo, ohi) = options.input_range, options.output_range

    def run_one(x: np.ndarray) -> np.ndarray:
        return session_for(x).run([graph.output_name], {graph.input_name: x, **feeds(x.shape[0])})[0]

    def run(batch: np.ndarray) -> np.ndarray:
        n, h, w, _ = batch.shape
        x = batch.astype(np.float32)
        x = x * np.float32((ihi - ilo) / 255.0) + np.float32(ilo) if (ilo, ihi) != (0.0, 255.0) else x
        m = graph.size_multiple if graph.dynamic_hw else 1
        ph, pw = (-h) % m, (-w) % m
        x = np.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="reflect") if ph or pw else x
        if nchw:
            x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        if graph.dynamic_batch or graph.native_batch in (None, n):
            y = run_one(x)
        else:
            y = np.concatenate([run_one(x[i:i + 1]) for i in range(n)])
        y = y if not nchw else y.transpose(0, 2, 3, 1)
        y = y[:, :h, :w].astype(np.float32)
        y = (y - np.float32(olo)) * np.float32(255.0 / (ohi - olo)) if (olo, ohi) != (0.0, 255.0) else y
        return np.rint(np.clip(y, 0.0, 255.0)).astype(np.uint8)

    return run


def parity_shapes_for(graph: ForeignGraph, min_size: int,
                      shapes: Sequence[tuple[int, int, int]] = DEFAULT_SHAPES) -> list[tuple[int, int, int]]:
    """The native shape first (checked against the untouched original file), then nst's usual shapes where the
    graph takes other sizes. A fixed-size artifact is checked at its native size only (resizing there is the
    identity), with a batch of two where the artifact's batch is dynamic."""
    native = graph.native_hw
    out: list[tuple[int, int, int]] = []
    if native is not None:
        out.append((graph.native_batch or 1, *native))
    if graph.dynamic_hw:
        out += [s for s in shapes if min(s[1:]) >= min_size and (graph.dynamic_batch or s[0] == 1)]
    elif graph.dynamic_batch and native is not None:
        out.append((2, *native))
    return list(dict.fromkeys(out))


def _min_size(deploy: Any, graph: ForeignGraph, feeds: Mapping[str, np.ndarray] | None = None) -> int:
    """The smallest candidate H=W at which the composed graph runs (the runtime pads smaller images)."""
    if not graph.dynamic_hw:
        return _MIN_SIZE_CANDIDATES[0]  # resize-in: any size works
    session = _session(deploy)
    for size in _MIN_SIZE_CANDIDATES:
        try:
            session.run(None, {INPUT_NAME: np.zeros((1, size, size, 3), np.uint8), **(feeds or {})})
            return size
        except Exception as exc:
            log.debug("composed graph fails at %dx%d: %s", size, size, _first_line(exc))
    raise ModelFileError(f"{graph.path}: the imported graph runs at none of the sizes "
                         f"{list(_MIN_SIZE_CANDIDATES)}; it is not a size-preserving image network.")


# ------------------------------------------------------------------------------------------------ the whole step
@dataclass(frozen=True)
class ForeignResult:
    """What :func:`onnx_from_foreign` wrote and found."""

    fp32: Path
    graph: ForeignGraph
    parity: ParityReport
    fp16: Path | None = None
    fp16_parity: ParityReport | None = None
    #: what TensorRT's parser would refuse in each file (empty: nothing; only with require_tensorrt=False)
    lint: list[str] = field(default_factory=list)
    fp16_lint: list[str] = field(default_factory=list)


def onnx_from_foreign(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    options: ForeignImport = ForeignImport(),
    fp16_out: str | os.PathLike[str] | None = None,
    tolerance: ParityTolerance = DEFAULT_TOLERANCE,
    parity_shapes: Sequence[tuple[int, int, int]] = DEFAULT_SHAPES,
    source_extra: Mapping[str, Any] | None = None,
) -> ForeignResult:
    """Import the foreign ONNX file ``source`` as the nst artifact ``out`` (and ``fp16_out`` when given).

    Each file is written to a temp name, checked, parity-gated against the original file and renamed only
    after passing, then its sidecar is written (``source`` records the original's name, sha256, opset, shapes
    and the import mode, plus ``source_extra``: a catalogue's URL, licence, style names...). Raises
    :class:`ModelFileError` (unreadable, not an image network, fixed size without ``options.fixed_size``),
    :class:`ParityError`, :class:`UsageError`.
    """
    from nst_runtime.artifact import file_sha256

    from .artifacts import onnx_sidecar, publish, save_model, temp_path_for

    source, out = Path(source), Path(out)
    if source.resolve() == out.resolve() or (fp16_out is not None and source.resolve() == Path(fp16_out).resolve()):
        raise UsageError(f"{source}: the output would overwrite the file being imported. Fix: --out-dir elsewhere "
                         "or another --name.")
    model = load_foreign(source)
    graph = inspect_foreign(model, source, sha256=file_sha256(source))
    log.info("%s: %s, opset %d, input %s %s (%s), output %s", source.name, graph.producer, graph.opset,
             graph.input_name, list(graph.input_shape), graph.layout, list(graph.output_shape))
    check_extra_inputs(graph, options)
    styles = style_count(graph, options)
    style_names = options.style_names or tuple(str(i) for i in range(styles or 0))
    # the parity gate runs per style: the first, the last and an even blend of the two (one run without styles)
    # the parity gate runs per style: the first, the last and an even blend of the two (one run without styles)
    checks = style_checks(style_names if styles is not None else ())
    modern = modernize(model, opset=options.opset)
    graph = probe_dynamic(modern, graph, original_feeds(graph, options, checks[0][1]))
    mode = "dynamic" if graph.dynamic_hw else "fixed-size"
    if graph.why_fixed:
        log.info("%s: N dynamic: %s, H/W dynamic: %s (%s)", source.name, graph.dynamic_batch, graph.dynamic_hw,
                 "; ".join(graph.why_fixed))
    deploy = deploy_model_from_foreign(modern, graph, options)
    check_foreign_deploy_model(deploy, dynamic_batch=graph.dynamic_batch, styles=styles)

    def deploy_feeds(weights: np.ndarray | None) -> dict[str, np.ndarray]:
        return {} if weights is None else {STYLE_NAME: weights}

    graph = dataclasses.replace(graph, min_size=_min_size(deploy, graph, deploy_feeds(checks[0][1])))
    reference_name = f"original ONNX {source.name} (sha256 {graph.sha256[:12]}…, onnxruntime CPU)"
    shapes = parity_shapes_for(graph, graph.min_size, parity_shapes)
    written: list[tuple[Any, Path, str]] = [(deploy, out, "fp32")]
    if fp16_out is not None:
        written.append((fp16_model_from_foreign(deploy, dynamic_batch=graph.dynamic_batch, styles=styles),
                        Path(fp16_out), "fp16"))
    lints = {precision: _trt_lint(proto, label=f"{source.name} imported ({precision.upper()})",
                                  fatal=options.require_tensorrt)
             for proto, _path, precision in written}
    style_meta = None
    if styles is not None:
        from nst_runtime.sidecar import StyleInput

        style_meta = StyleInput(name=STYLE_NAME, size=styles, names=tuple(style_names))
    imported = {"style_input": options.style_input} if options.style_input else {}
    if options.bind:
        imported["bind"] = {k: list(v) for k, v in options.bind.items()}
    reports: dict[str, ParityReport] = {}
    fp32_sha = None
    for proto, path, precision in written:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_path_for(path)
        try:
            save_model(proto, tmp, final=path)
            report = check_parity_styles(
                tmp, lambda weights: original_reference(source, modern, graph, options,
                                                        original_feeds(graph, options, weights)),
                style_names=style_names if styles is not None else (), style_input=STYLE_NAME,
                precision=precision, reference_name=reference_name, tolerance=tolerance, shapes=shapes,
                label=str(path))
            log.info("%s parity against the original: %s", precision.upper(), report.summary())
            sha = file_sha256(tmp)
            meta = onnx_sidecar(precision=precision, opset=options.opset, artifact_sha256=sha,
                                checkpoint_sha256=None, onnx_sha256=fp32_sha, parity=report,
                                architecture=f"foreign-onnx ({graph.producer})")
            meta = dataclasses.replace(meta, min_size=graph.min_size, profile=_fixed_batch_profile(graph),
                                       source={**graph.source_record(mode), "tensorrt_lint": lints[precision],
                                               **imported,
                                               **dict(source_extra or {})}, style=style_meta)
            publish(tmp, path, meta)
            reports[precision] = report
            fp32_sha = fp32_sha or sha
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    return ForeignResult(fp32=out, graph=graph, parity=reports["fp32"], fp16=Path(fp16_out) if fp16_out else None,
                         fp16_parity=reports.get("fp16"), lint=lints["fp32"], fp16_lint=lints.get("fp16", []))


def _fixed_batch_profile(graph: ForeignGraph) -> Any:
    """An artifact whose batch the graph fixes records it as the sidecar's profile (N fixed, H/W free), so the
    runtime never sends it a larger batch; None where the batch is dynamic."""
    from nst_runtime.sidecar import ShapeProfile

    if graph.dynamic_batch or graph.native_batch is None:
        return None
    n = graph.native_batch
    opt = graph.native_hw or (graph.min_size, graph.min_size)
    return ShapeProfile(min=(n, graph.min_size, graph.min_size), opt=(n, *opt), max=(n, 1 << 15, 1 << 15))


def _trt_lint(model: Any, *, label: str, fatal: bool) -> list[str]:
    """What TensorRT's ONNX parser would refuse (``nst_export.trt_lint``): :class:`ModelFileError` when ``fatal``
    (the rule of nst's own graphs), else each problem is warned about and returned for the sidecar (an
    ``--onnx-only`` artifact still runs on ONNX Runtime; an engine build from it refuses it there)."""
    from .trt_lint import check_tensorrt_compatible, tensorrt_lint

    has_norm = any(n.op_type == "InstanceNormalization" for n in model.graph.node)
    if fatal:
        check_tensorrt_compatible(model, label=label, expect_instance_norm=has_norm,
                                  fix="import it with --onnx-only for ONNX Runtime only (the problems are then "
                                      "recorded in its sidecar), or change the graph as the rule says")
        return []
    problems = [str(p) for p in tensorrt_lint(model, expect_instance_norm=has_norm)]
    for problem in problems:
        log.warning("%s: TensorRT lint (--onnx-only: recorded, not fatal): %s", label, problem)
    return problems


def is_foreign_onnx(path: str | os.PathLike[str]) -> bool:
    """An ``.onnx`` file without an nst sidecar beside it (what ``nst-export`` imports instead of exporting)."""
    from nst_runtime.sidecar import sidecar_path

    path = Path(path)
    return path.suffix.lower() == ".onnx" and not sidecar_path(path).is_file()
