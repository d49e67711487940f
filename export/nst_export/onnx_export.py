"""Checkpoint -> ONNX with the uint8 NHWC contract and dynamic N/H/W, checked and parity-gated.

Exporter: ``torch.onnx.export(..., dynamo=True)`` (the torch.export-based exporter, default since PyTorch 2.9;
the TorchScript exporter is deprecated there and announced for removal). Its graph of this network is just the
operators (Pad, Conv, InstanceNormalization, Relu, Resize, Add, Cast, Transpose, Clip, Round) with no
Identity/Constant clutter, which keeps the FP16 conversion and TensorRT's parser on a clean graph.

Opset: 18 by default, the lowest the dynamo exporter emits (its version converter cannot go down to 17:
no adapter for Pad). TensorRT's ONNX parser documents opsets 9-24 for TensorRT 10.15 (onnx-tensorrt
``docs/operators.md``) and 9-25 for TensorRT 11.x (NVIDIA "ONNX Opset Guide"), so 18 sits inside both; see
``docs/export.md``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from nst_runtime.errors import UsageError
from nst_runtime.sidecar import StyleInput

# the torch-free helpers every artifact shares live in .artifacts; importable from here as before
from .artifacts import (  # noqa: F401
    DYNAMIC_DIMS,
    check_onnx_model,
    conv_weight_dtypes,
    make_readable,
    onnx_sidecar,
    publish,
    save_model,
    temp_path_for,
    utc_now,
)
from .parity import (
    DEFAULT_SHAPES,
    DEFAULT_TOLERANCE,
    ParityTolerance,
    check_parity_styles,
    torch_reference,
)
from .wrapper import INPUT_NAME, MIN_SIZE, OUTPUT_NAME, STYLE_NAME, DeployWrapper, uint8_edges_only_at_casts

log = logging.getLogger(__name__)

DEFAULT_OPSET = 18
#: lowest opset the dynamo exporter emits .. highest documented for TensorRT 10.15's parser (11.x: 25)
MIN_OPSET, MAX_OPSET = 18, 24
#: upper bounds given to torch.export for the symbolic dims (they do not end up in the ONNX file)
_MAX_DIM = 1 << 16


@contextlib.contextmanager
def quiet_torch_exporter() -> Iterator[None]:
    """The dynamo exporter logs and warns about things irrelevant here (missing torchvision ops, deprecations)."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnx_ir", "onnxscript")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def export_onnx_model(net: Any, *, opset: int = DEFAULT_OPSET) -> Any:
    """Export a TransformerNet wrapped in :class:`DeployWrapper` to an in-memory, checked ``onnx.ModelProto``."""
    import torch
    from torch.export import Dim

    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise UsageError(
            f"opset {opset} is outside the supported range {MIN_OPSET}..{MAX_OPSET}: {MIN_OPSET} is the lowest "
            f"the PyTorch exporter emits, {MAX_OPSET} the highest TensorRT 10.x's ONNX parser documents. "
            f"Pass --opset {DEFAULT_OPSET} (the default)."
        )
    wrapper = DeployWrapper(net).eval().float().cpu()
    example = torch.zeros((1, 64, 64, 3), dtype=torch.uint8)
    dims = {0: Dim("batch", min=1, max=_MAX_DIM), 1: Dim("height", min=MIN_SIZE, max=_MAX_DIM),
            2: Dim("width", min=MIN_SIZE, max=_MAX_DIM)}
    styles = getattr(net, "styles", 1)
    args: tuple[Any, ...] = (example,)
    names, shapes = [INPUT_NAME], (dims,)
    if styles > 1:  # the style weights: a second input of fixed shape [styles]
        args, names, shapes = (example, torch.eye(styles)[0]), [INPUT_NAME, STYLE_NAME], (dims, None)
    with quiet_torch_exporter():
        program = torch.onnx.export(
            wrapper, args, None, input_names=names, output_names=[OUTPUT_NAME],
            opset_version=opset, dynamo=True, dynamic_shapes=shapes, optimize=True, verbose=False,
        )
    model = program.model_proto
    _name_dynamic_dims(model)
    uint8_edges_only_at_casts(model)  # TensorRT: a uint8 input may feed nothing but a Cast
    model.producer_name = "nst-export"
    contract = "uint8 NHWC RGB in [0,255] -> uint8 NHWC RGB, same N/H/W"
    if styles > 1:
        contract += f"; float32 {STYLE_NAME}[{styles}]: style weights"
    _set_metadata(model, {"nst.contract": contract, "nst.min_size": str(MIN_SIZE)})
    check_onnx_model(model, styles=styles if styles > 1 else None)
    from .trt_lint import check_tensorrt_compatible

    check_tensorrt_compatible(model, label="the exported FP32 graph")
    return model


def _name_dynamic_dims(model: Any) -> None:
    """The exporter names the output dims with sympy expressions equal to the input dims; name both plainly."""
    for value in (*model.graph.input, *model.graph.output):
        if value.name == STYLE_NAME:
            continue  # [styles]: fixed
        dims = value.type.tensor_type.shape.dim
        for d, name in zip(dims, DYNAMIC_DIMS, strict=False):
            d.ClearField("dim_value")
            d.dim_param = name


def _set_metadata(model: Any, items: dict[str, str]) -> None:
    existing = {p.key: p for p in model.metadata_props}
    for key, value in items.items():
        prop = existing.get(key) or model.metadata_props.add()
        prop.key, prop.value = key, value


def onnx_from_checkpoint(
    checkpoint: str | os.PathLike[str] | Any,
    out: str | os.PathLike[str],
    *,
    opset: int = DEFAULT_OPSET,
    tolerance: ParityTolerance = DEFAULT_TOLERANCE,
    parity_shapes: Sequence[tuple[int, int, int]] = DEFAULT_SHAPES,
) -> Path:
    """Export ``checkpoint`` (nst or pytorch/examples state dict) to an FP32 ONNX file at ``out``.

    The file is written to a temp name, checked (:func:`check_onnx_model`) and parity-gated against the PyTorch
    FP32 model (:func:`~nst_export.parity.check_parity`); only then is it renamed to ``out`` and its sidecar
    (``out + ".json"``, with the parity numbers) written. On any failure nothing is left at ``out``.
    Raises :class:`CheckpointError`, :class:`ParityError`, :class:`ModelFileError`, :class:`UsageError`.
    """
    from nst_runtime.artifact import file_sha256
    from nst_train.checkpoint import checkpoint_sha256, load_checkpoint

    out = Path(out)
    ckpt = load_checkpoint(checkpoint)  # a loaded Checkpoint is used as it is
    net = ckpt.model()
    log.info("exporting %s to ONNX (opset %d, dynamic N/H/W)", ckpt.path, opset)
    model = export_onnx_model(net, opset=opset)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(out)
    names = style_names_of(ckpt)
    try:
        save_model(model, tmp, final=out)
        report = check_parity_styles(tmp, lambda weights: torch_reference(net) if weights is None
                                     else torch_reference(net, weights), style_names=names,
                                     style_input=STYLE_NAME, precision="fp32", reference_name="pytorch-fp32",
                                     tolerance=tolerance, shapes=parity_shapes, label=str(out))
        log.info("FP32 parity: %s", report.summary())
        meta = onnx_sidecar(precision="fp32", opset=opset, artifact_sha256=file_sha256(tmp),
                            checkpoint_sha256=checkpoint_sha256(ckpt), onnx_sha256=None,
                            parity=report, architecture=ckpt.metadata.architecture,
                            style=style_input_of(names), gflop_per_mpx=network_gflop_per_mpx(ckpt))
        return publish(tmp, out, meta)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def style_names_of(ckpt: Any) -> tuple[str, ...]:
    """A multi-style checkpoint's style names (its metadata's, else the indices); empty for one style."""
    styles = ckpt.shape.styles
    if styles == 1:
        return ()
    names = tuple(str(n) for n in (ckpt.metadata.style_names or ()))
    return names if len(names) == styles and len(set(names)) == styles else tuple(str(i) for i in range(styles))


def style_input_of(names: Sequence[str]) -> StyleInput | None:
    return StyleInput(name=STYLE_NAME, size=len(names), names=tuple(names)) if names else None


def network_gflop_per_mpx(ckpt: Any) -> float:
    """The checkpoint's network cost, GFLOP per megapixel (nst_train.model.gflop_per_megapixel), 1 decimal."""
    from nst_train.model import gflop_per_megapixel

    return round(gflop_per_megapixel(ckpt.shape), 1)
