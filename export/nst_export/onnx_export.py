"""Checkpoint -> ONNX with the uint8 NHWC contract and dynamic N/H/W. (Provisional; the export stage owns it.)"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from nst_runtime.sidecar import Sidecar, TensorSpec, sidecar_path
from nst_train.atomic import atomic_write
from nst_train.checkpoint import file_sha256, load_checkpoint

from .wrapper import INPUT_NAME, MIN_SIZE, OUTPUT_NAME, DeployWrapper

DEFAULT_OPSET = 17


def onnx_from_checkpoint(checkpoint: str | os.PathLike[str], out: str | os.PathLike[str], *,
                         opset: int = DEFAULT_OPSET) -> Path:
    ckpt = load_checkpoint(checkpoint)
    wrapper = DeployWrapper(ckpt.model()).eval()
    example = torch.zeros((1, 64, 64, 3), dtype=torch.uint8)
    out = Path(out)
    tmp = out.with_name(f".{out.name}.export.tmp")
    axes = {0: "batch", 1: "height", 2: "width"}
    torch.onnx.export(wrapper, (example,), str(tmp), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                      opset_version=opset, dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes}, dynamo=False)
    os.replace(tmp, out)
    meta = Sidecar(kind="onnx", precision="fp32", input=TensorSpec(INPUT_NAME), output=TensorSpec(OUTPUT_NAME),
                   min_size=MIN_SIZE, opset=opset, artifact_sha256=file_sha256(out),
                   checkpoint_sha256=file_sha256(checkpoint))
    with atomic_write(sidecar_path(out), "w") as f:
        f.write(meta.to_json())
    return out
