"""The deployment I/O contract as a torch module: uint8 NHWC RGB in, uint8 NHWC RGB out.

Casting, layout, reflection padding to a multiple of 4, cropping back, rounding and clamping all happen in
the graph, so the host moves uint8 (a quarter of the bytes of float32) and does no per-pixel work.
"""

from __future__ import annotations

import torch
from nst_train.model import SIZE_MULTIPLE, TransformerNet
from torch import nn

INPUT_NAME = "input"
OUTPUT_NAME = "output"
#: smallest height/width the graph accepts (the 9x9 reflection pad needs more than 4 pixels; the runtime
#: pads anything smaller on the host)
MIN_SIZE = 8


class DeployWrapper(nn.Module):
    def __init__(self, net: TransformerNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.permute(0, 3, 1, 2).to(torch.float32)
        h, w = x.shape[2], x.shape[3]
        pad_h = (SIZE_MULTIPLE - h % SIZE_MULTIPLE) % SIZE_MULTIPLE
        pad_w = (SIZE_MULTIPLE - w % SIZE_MULTIPLE) % SIZE_MULTIPLE
        x = nn.functional.pad(x, (0, pad_w, 0, pad_h), mode="reflect")
        y = self.net(x)[:, :, :h, :w]
        y = torch.round(torch.clamp(y, 0.0, 255.0)).to(torch.uint8)
        return y.permute(0, 2, 3, 1)
