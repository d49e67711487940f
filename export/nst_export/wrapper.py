"""The deployment I/O contract as a torch module: uint8 NHWC RGB in, uint8 NHWC RGB out.

Casting, layout, reflection padding to a multiple of 4, cropping back, rounding and clamping all happen in
the graph, so the host moves uint8 (a quarter of the bytes of float32) and does no per-pixel work.

The order of the first and last steps is dictated by TensorRT: its ONNX parser accepts UINT8 only as a
network input or output, and every UINT8 input must feed a Cast directly (no Transpose, Reshape or Shape on
it; onnx-tensorrt ``docs/operators.md``, "UINT8 is only supported as network input or output tensor types";
NVIDIA/TensorRT#3985). So the graph casts first and transposes in float, and the uint8 Cast is its last node.
:func:`uint8_edges_only_at_casts` then moves the shape reads the exporter hangs on the uint8 input onto the
Cast's output, and :mod:`nst_export.trt_lint` checks the result.
"""

from __future__ import annotations

from typing import Any

import torch
from nst_train.model import SIZE_MULTIPLE, TransformerNet
from torch import nn

from .artifacts import INPUT_NAME, MIN_SIZE, OUTPUT_NAME, STYLE_NAME  # noqa: F401  (the contract's names)


class DeployWrapper(nn.Module):
    def __init__(self, net: TransformerNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        """``style``: a multi-style network's weights over its styles (float32 [styles])."""
        # cast first: TensorRT allows no layer but a Cast on a uint8 input (not even a Transpose)
        x = image.to(torch.float32).permute(0, 3, 1, 2)
        h, w = x.shape[2], x.shape[3]
        pad_h = (SIZE_MULTIPLE - h % SIZE_MULTIPLE) % SIZE_MULTIPLE
        pad_w = (SIZE_MULTIPLE - w % SIZE_MULTIPLE) % SIZE_MULTIPLE
        x = nn.functional.pad(x, (0, pad_w, 0, pad_h), mode="reflect")
        y = (self.net(x) if style is None else self.net(x, style))[:, :, :h, :w]
        # transpose in float, and the uint8 cast last: a uint8 intermediate tensor is a parser error
        y = torch.round(torch.clamp(y, 0.0, 255.0)).permute(0, 2, 3, 1)
        return y.to(torch.uint8)


def uint8_edges_only_at_casts(model: Any) -> Any:
    """Make every UINT8 graph input feed Cast nodes only, in place; returns ``model``.

    The dynamo exporter reads the symbolic sizes of the input with ``Shape`` nodes on the graph input itself,
    even when the module casts first. A Cast keeps the shape, so those nodes read the Cast's output instead,
    and the Cast moves to the front of the node list (its only input is the graph input, so the order stays
    topological). Anything else consuming a uint8 input is left for :mod:`nst_export.trt_lint` to report.
    """
    import onnx

    graph = model.graph
    for value in graph.input:
        if value.type.tensor_type.elem_type != onnx.TensorProto.UINT8:
            continue
        consumers = [n for n in graph.node if value.name in n.input]
        casts = [n for n in consumers if n.op_type == "Cast" and list(n.input) == [value.name]]
        if not casts:
            continue
        cast = casts[0]
        for node in consumers:
            if node.op_type == "Shape" and node.input[0] == value.name:
                node.input[0] = cast.output[0]
        nodes = [n for n in graph.node if n is not cast]
        del graph.node[:]
        graph.node.extend([cast, *nodes])
    return model
