"""What every nst ONNX artifact shares, without torch: the I/O contract's names, the structural check, the
sidecar, and the temp-name / fsync / rename / sidecar way an artifact is published.

Torch-free on purpose (onnx is imported inside the functions): the FP16 conversion, the INT8 quantization, the
TensorRT engine build and the foreign ONNX import need only onnx and onnxruntime, so a machine that pulls and
imports ONNX models (nst_runtime.models) needs no torch. :mod:`nst_export.onnx_export` (which needs torch to
export a checkpoint) re-exports these names.
"""

from __future__ import annotations

import contextlib
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from nst_runtime.errors import ModelFileError
from nst_runtime.sidecar import Sidecar, StyleInput, TensorSpec, sidecar_path

from .parity import ParityReport

INPUT_NAME = "input"
OUTPUT_NAME = "output"
#: a multi-style network's second input: float32 ``[styles]`` style weights
STYLE_NAME = "style"
#: smallest H/W a TransformerNet graph takes (the runtime pads smaller images up to it)
MIN_SIZE = 8
DYNAMIC_DIMS = ("batch", "height", "width")


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def check_onnx_model(model: Any, *, expect_precision: str | None = None, styles: int | None = None) -> None:
    """Structural checks every nst ONNX graph must pass; :class:`ModelFileError` listing what is wrong.

    ``onnx.checker`` (full check, with shape inference), one uint8 input and output named per the contract,
    dynamic N/H/W and C == 3, and InstanceNormalization nodes present: TensorRT maps that op type natively and
    the FP16 conversion keeps exactly that op type in FP32, so a decomposed norm would silently lose both.
    """
    import onnx

    problems: list[str] = []
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        problems.append(f"onnx.checker: {str(exc).splitlines()[0]}")
    inputs = list(model.graph.input)
    style = [v for v in inputs if v.name == STYLE_NAME]
    if styles is not None:
        dims = [d.dim_value for d in style[0].type.tensor_type.shape.dim] if style else []
        if not style or dims != [styles]:
            problems.append(f"expected a float32 input {STYLE_NAME!r} of shape [{styles}] (the style weights)")
    # inputs besides the image (style weights; AdaIN's style statistics and alpha): float32 of a fixed shape
    for extra in (v for v in inputs if v.name != INPUT_NAME):
        tensor = extra.type.tensor_type
        if tensor.elem_type != onnx.TensorProto.FLOAT or not all(d.HasField("dim_value") for d in tensor.shape.dim):
            problems.append(f"input {extra.name!r}: expected float32 of a fixed shape besides the uint8 image")
    inputs = [v for v in inputs if v.name == INPUT_NAME] or inputs
    for kind, values, name in (("input", inputs, INPUT_NAME), ("output", model.graph.output, OUTPUT_NAME)):
        if len(values) != 1 or values[0].name != name:
            problems.append(f"expected one {kind} named {name!r}, found {[v.name for v in values]}")
            continue
        tensor = values[0].type.tensor_type
        if tensor.elem_type != onnx.TensorProto.UINT8:
            problems.append(f"{kind} dtype {onnx.TensorProto.DataType.Name(tensor.elem_type)}, expected UINT8")
        dims = tensor.shape.dim
        if len(dims) != 4:
            problems.append(f"{kind} rank {len(dims)}, expected 4 (NHWC)")
            continue
        for axis, d in zip(DYNAMIC_DIMS, dims, strict=False):
            if not d.dim_param or d.HasField("dim_value"):
                problems.append(f"{kind} {axis} is fixed ({d.dim_value}), expected dynamic")
        if dims[3].dim_value != 3:
            problems.append(f"{kind} channels {dims[3].dim_value or dims[3].dim_param!r}, expected 3")
    ops = [n.op_type for n in model.graph.node]
    if ops.count("InstanceNormalization") == 0:
        problems.append("no InstanceNormalization nodes (the norm was decomposed); TensorRT's native mapping and "
                        "the FP32 island of the FP16 graph rely on that op type")
    if expect_precision is not None:
        conv_dtypes = conv_weight_dtypes(model)
        want = onnx.TensorProto.FLOAT16 if expect_precision == "fp16" else onnx.TensorProto.FLOAT
        wrong = sorted(name for name, dt in conv_dtypes.items() if dt != want)
        if wrong:
            problems.append(f"{len(wrong)} Conv weights not {expect_precision} (e.g. {wrong[0]})")
    if problems:
        raise ModelFileError(
            f"the exported ONNX graph breaks the nst contract: {'; '.join(problems)}. This is a bug in the "
            "export (or an unsupported PyTorch version); please report it with `pip list` output."
        )


def conv_weight_dtypes(model: Any) -> dict[str, int]:
    """Conv weight name -> its initializer's ONNX data type (0 where the weight is not an initializer)."""
    inits = {i.name: i.data_type for i in model.graph.initializer}
    return {n.input[1]: inits.get(n.input[1], 0) for n in model.graph.node if n.op_type == "Conv"}


def save_model(model: Any, path: str | os.PathLike[str], *, final: Path) -> None:
    """Serialize ``model`` to ``path`` (the temp name of ``final``); a full disk becomes a one-line
    :class:`WriteError` naming ``final``."""
    import onnx
    from nst_runtime.errors import write_error

    try:
        onnx.save_model(model, os.fspath(path))
        with open(path, "rb+") as f:  # on disk before the rename that publishes it
            os.fsync(f.fileno())
    except OSError as exc:
        raise write_error(final, exc) from exc


def temp_path_for(out: Path) -> Path:
    """A hidden temp name in the destination folder (same filesystem, so the final rename is atomic)."""
    return out.with_name(f".{out.name}.{os.getpid()}.tmp")


def publish(tmp: Path, out: Path, sidecar: Sidecar) -> Path:
    """Move a checked artifact into place, then write its sidecar atomically."""
    from nst_runtime.atomic import atomic_write

    os.replace(tmp, out)
    try:
        with atomic_write(sidecar_path(out), "w") as f:
            f.write(sidecar.to_json())
        make_readable(out)
        make_readable(sidecar_path(out))
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            out.unlink()
        raise
    return out


def make_readable(path: Path) -> None:
    """Temp files are created 0600; artifacts are shared (Triton, containers), so give them the umask's mode."""
    umask = os.umask(0)
    os.umask(umask)
    with contextlib.suppress(OSError):
        os.chmod(path, 0o666 & ~umask)


def onnx_sidecar(*, precision: str, opset: int | None, artifact_sha256: str, checkpoint_sha256: str | None,
                 onnx_sha256: str | None, parity: ParityReport, architecture: str | None,
                 style: StyleInput | None = None, gflop_per_mpx: float | None = None) -> Sidecar:
    return Sidecar(
        kind="onnx", precision=precision,  # type: ignore[arg-type]
        input=TensorSpec(INPUT_NAME), output=TensorSpec(OUTPUT_NAME), min_size=MIN_SIZE, opset=opset,
        artifact_sha256=artifact_sha256, checkpoint_sha256=checkpoint_sha256, onnx_sha256=onnx_sha256,
        parity=parity.to_dict(), architecture=architecture, created_at=utc_now(), style=style,
        gflop_per_mpx=gflop_per_mpx,
    )
