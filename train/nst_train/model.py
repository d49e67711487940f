"""TransformerNet: Johnson et al. 2016 with instance normalization and resize-convolution upsampling.

Parameter names, layer order and the input/output scale (float RGB in [0, 255], NCHW) follow
pytorch/examples' ``fast_neural_style`` ``TransformerNet`` so that checkpoints trained there load here and
give the same output. The layers: c9s1-32, d64, d128, five residual blocks of 128, u64, u32, c9s1-3, with
reflection padding everywhere.

The network downsamples twice by stride 2, so for a height or width that is not a multiple of 4 its raw
output is larger than its input; :meth:`TransformerNet.stylize` pads by reflection to a multiple of 4 and
crops back, which is what the exported graph and the runtime do too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ARCHITECTURE = "transformer_net/johnson2016-in-v1"
#: the spatial size of the input must be a multiple of this for the output to have the same size
SIZE_MULTIPLE = 4


class ConvLayer(nn.Module):
    """Reflection padding then a convolution (no zero padding, which shows as dark borders)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.reflection_pad = nn.ReflectionPad2d(kernel_size // 2)
        self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2d(self.reflection_pad(x))


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with instance norm and a skip (He et al. 2016, as in Johnson et al.)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = ConvLayer(channels, channels, kernel_size=3, stride=1)
        self.in1 = nn.InstanceNorm2d(channels, affine=True)
        self.conv2 = ConvLayer(channels, channels, kernel_size=3, stride=1)
        self.in2 = nn.InstanceNorm2d(channels, affine=True)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.in1(self.conv1(x)))
        return self.in2(self.conv2(out)) + x


class UpsampleConvLayer(nn.Module):
    """Nearest-neighbour upsampling then a convolution: avoids the checkerboard of transposed convolutions."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int, upsample: int | None = None
    ) -> None:
        super().__init__()
        self.upsample = upsample
        self.reflection_pad = nn.ReflectionPad2d(kernel_size // 2)
        self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.upsample:
            x = F.interpolate(x, mode="nearest", scale_factor=self.upsample)
        return self.conv2d(self.reflection_pad(x))


class TransformerNet(nn.Module):
    """The image transformation network. Input and output: float RGB NCHW in [0, 255] (output unclamped)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = ConvLayer(3, 32, kernel_size=9, stride=1)
        self.in1 = nn.InstanceNorm2d(32, affine=True)
        self.conv2 = ConvLayer(32, 64, kernel_size=3, stride=2)
        self.in2 = nn.InstanceNorm2d(64, affine=True)
        self.conv3 = ConvLayer(64, 128, kernel_size=3, stride=2)
        self.in3 = nn.InstanceNorm2d(128, affine=True)
        self.res1 = ResidualBlock(128)
        self.res2 = ResidualBlock(128)
        self.res3 = ResidualBlock(128)
        self.res4 = ResidualBlock(128)
        self.res5 = ResidualBlock(128)
        self.deconv1 = UpsampleConvLayer(128, 64, kernel_size=3, stride=1, upsample=2)
        self.in4 = nn.InstanceNorm2d(64, affine=True)
        self.deconv2 = UpsampleConvLayer(64, 32, kernel_size=3, stride=1, upsample=2)
        self.in5 = nn.InstanceNorm2d(32, affine=True)
        self.deconv3 = ConvLayer(32, 3, kernel_size=9, stride=1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.in1(self.conv1(x)))
        y = self.relu(self.in2(self.conv2(y)))
        y = self.relu(self.in3(self.conv3(y)))
        y = self.res5(self.res4(self.res3(self.res2(self.res1(y)))))
        y = self.relu(self.in4(self.deconv1(y)))
        y = self.relu(self.in5(self.deconv2(y)))
        return self.deconv3(y)

    def stylize(self, x: torch.Tensor) -> torch.Tensor:
        """Run on any H x W (>= 1): reflect-pad to a multiple of 4, run, crop back. Output in [0, 255]."""
        h, w = x.shape[-2:]
        pad_h, pad_w = (-h) % SIZE_MULTIPLE, (-w) % SIZE_MULTIPLE
        if pad_h or pad_w:
            x = pad_to_multiple(x, pad_h, pad_w)
        return self(x)[..., :h, :w].clamp(0.0, 255.0)


def pad_to_multiple(x: torch.Tensor, pad_h: int, pad_w: int) -> torch.Tensor:
    """Reflection-pad bottom/right; falls back to edge replication where the image is too small to reflect."""
    h, w = x.shape[-2:]
    mode = "reflect" if pad_h < h and pad_w < w else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)


def count_flops(height: int, width: int) -> int:
    """Multiply-accumulates x 2 of every convolution for one image of height x width (a multiple of 4).

    Normalization, activations and padding are ignored: they are a fraction of a percent of the total.
    """
    net = TransformerNet()
    flops = 0
    h, w = height, width
    for name, module in net.named_modules():
        if not isinstance(module, nn.Conv2d):
            continue
        if name.startswith("deconv1") or name.startswith("deconv2"):
            h, w = h * 2, w * 2
        stride = module.stride[0]
        oh, ow = (h - 1) // stride + 1, (w - 1) // stride + 1
        k = module.kernel_size[0] * module.kernel_size[1]
        flops += 2 * module.in_channels * module.out_channels * k * oh * ow
        h, w = oh, ow
    return flops
