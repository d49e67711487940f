"""TransformerNet: Johnson et al. 2016 with instance normalization and resize-convolution upsampling.

Parameter names, layer order and the input/output scale (float RGB in [0, 255], NCHW) follow
pytorch/examples' ``fast_neural_style`` ``TransformerNet`` so that checkpoints trained there load here and
give the same output. The layers: c9s1-32, d64, d128, five residual blocks of 128, u64, u32, c9s1-3, with
reflection padding everywhere.

One configurable class serves every family of :mod:`nst_train.registry`: ``channels`` is the width of the
residual trunk (Johnson et al.: 128; the outer layers have a quarter and a half of it), ``res_blocks`` the
number of residual blocks (5), and ``styles`` > 1 replaces every instance norm's affine parameters by one row
per style (conditional instance normalization, Dumoulin et al. 2017): the network then takes a second input,
a weight vector over the styles, and its norms scale and shift by the weighted sum of the rows (one style is
a one-hot vector; a blend any convex combination). :attr:`TransformerNet.architecture` names the shape, and
checkpoints record it.

The network downsamples twice by stride 2, so for a height or width that is not a multiple of 4 its raw
output is larger than its input; :meth:`TransformerNet.stylize` pads by reflection to a multiple of 4 and
crops back, which is what the exported graph and the runtime do too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from nst_runtime.errors import UsageError
from torch import nn

ARCHITECTURE = "transformer_net/johnson2016-in-v1"
#: the spatial size of the input must be a multiple of this for the output to have the same size
SIZE_MULTIPLE = 4
#: Johnson et al.'s trunk width and residual blocks (pytorch/examples' TransformerNet)
DEFAULT_CHANNELS, DEFAULT_RES_BLOCKS = 128, 5
_ARCH_RE = re.compile(r"^transformer_net/(?P<family>[a-z0-9_]+)-c(?P<channels>\d+)-r(?P<res>\d+)"
                      r"(?:-cin(?P<styles>\d+))?-v1$")


@dataclass(frozen=True)
class NetShape:
    """The shape of a TransformerNet: trunk width, residual blocks, styles; ``family`` is the registry name it
    was made under (kept in the architecture string, so a checkpoint says which preset it is)."""

    channels: int = DEFAULT_CHANNELS
    res_blocks: int = DEFAULT_RES_BLOCKS
    styles: int = 1
    family: str = "johnson2016"

    def __post_init__(self) -> None:
        if self.channels < 4 or self.channels % 4:
            raise UsageError(f"--channels {self.channels}: the trunk width must be a multiple of 4 (its outer "
                             "layers have a quarter and a half of it), e.g. 32, 64, 128.")
        if not 0 <= self.res_blocks <= 64:
            raise UsageError(f"--res-blocks {self.res_blocks}: expected 0..64 residual blocks.")
        if not 1 <= self.styles <= 4096:
            raise UsageError(f"{self.styles} styles: expected 1..4096.")

    @property
    def architecture(self) -> str:
        if (self.channels, self.res_blocks, self.styles) == (DEFAULT_CHANNELS, DEFAULT_RES_BLOCKS, 1):
            return ARCHITECTURE  # every checkpoint before the registry says this; they stay loadable
        styles = f"-cin{self.styles}" if self.styles > 1 else ""
        return f"transformer_net/{self.family}-c{self.channels}-r{self.res_blocks}{styles}-v1"

    @classmethod
    def from_architecture(cls, text: str) -> NetShape:
        """The shape an architecture string names; :class:`ValueError` for a string no TransformerNet has."""
        if text == ARCHITECTURE:
            return cls()
        m = _ARCH_RE.match(text or "")
        if not m:
            raise ValueError(f"architecture {text!r} is not a TransformerNet this nst builds "
                             f"({ARCHITECTURE!r} or transformer_net/FAMILY-cN-rN[-cinN]-v1)")
        return cls(channels=int(m["channels"]), res_blocks=int(m["res"]), styles=int(m["styles"] or 1),
                   family=m["family"])

    @classmethod
    def from_state_dict(cls, state: Mapping[str, torch.Tensor]) -> NetShape:
        """The shape a state dict's tensors imply (plain pytorch/examples state dicts carry no architecture)."""
        trunk = state.get("conv3.conv2d.weight")  # the trunk's width: its output channels
        norm = state.get("in1.weight")
        if trunk is None or norm is None or trunk.dim() != 4 or int(trunk.shape[0]) % 4:
            return cls()  # not a TransformerNet: the check against the default names what differs
        res = sum(1 for k in state if re.fullmatch(r"res\d+\.conv1\.conv2d\.weight", k))
        styles = int(norm.shape[0]) if norm.dim() == 2 else 1
        channels = int(trunk.shape[0])
        family = "johnson2016" if (channels, res) == (DEFAULT_CHANNELS, DEFAULT_RES_BLOCKS) else "custom"
        return cls(channels=channels, res_blocks=res, styles=styles, family=family)


class ConvLayer(nn.Module):
    """Reflection padding then a convolution (no zero padding, which shows as dark borders)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.reflection_pad = nn.ReflectionPad2d(kernel_size // 2)
        self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2d(self.reflection_pad(x))


class ConditionalInstanceNorm2d(nn.Module):
    """Instance normalization whose scale and shift are chosen per call from one row per style (Dumoulin et al.
    2017): ``weight`` and ``bias`` are [styles, channels]; ``style`` is a weight vector [styles] (one-hot for one
    style), and the call uses ``style @ weight`` and ``style @ bias``. The normalization itself is the plain,
    non-affine InstanceNorm (exported as ONNX InstanceNormalization, kept FP32 by the FP16 conversion)."""

    def __init__(self, channels: int, styles: int) -> None:
        super().__init__()
        self.norm = nn.InstanceNorm2d(channels, affine=False)
        self.weight = nn.Parameter(torch.ones(styles, channels))
        self.bias = nn.Parameter(torch.zeros(styles, channels))

    def forward(self, x: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        if style is None:
            raise UsageError(f"this network holds {self.weight.shape[0]} styles: pass the style weights "
                             "(net(x, style) with a vector of that length).")
        style = style.to(self.weight.dtype)
        scale = (style @ self.weight).reshape(1, -1, 1, 1)
        shift = (style @ self.bias).reshape(1, -1, 1, 1)
        return self.norm(x) * scale.to(x.dtype) + shift.to(x.dtype)


def _norm(channels: int, styles: int) -> nn.Module:
    return nn.InstanceNorm2d(channels, affine=True) if styles == 1 else ConditionalInstanceNorm2d(channels, styles)


def _apply_norm(norm: nn.Module, x: torch.Tensor, style: torch.Tensor | None) -> torch.Tensor:
    return norm(x, style) if isinstance(norm, ConditionalInstanceNorm2d) else norm(x)


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with instance norm and a skip (He et al. 2016, as in Johnson et al.)."""

    def __init__(self, channels: int, styles: int = 1) -> None:
        super().__init__()
        self.conv1 = ConvLayer(channels, channels, kernel_size=3, stride=1)
        self.in1 = _norm(channels, styles)
        self.conv2 = ConvLayer(channels, channels, kernel_size=3, stride=1)
        self.in2 = _norm(channels, styles)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        out = self.relu(_apply_norm(self.in1, self.conv1(x), style))
        return _apply_norm(self.in2, self.conv2(out), style) + x


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
    """The image transformation network. Input and output: float RGB NCHW in [0, 255] (output unclamped).

    ``TransformerNet()`` is Johnson et al.'s (pytorch/examples' parameter names); ``channels``, ``res_blocks``
    and ``styles`` make the other shapes (see the module docstring). A multi-style network is called as
    ``net(x, style)`` with ``style`` a float vector of ``styles`` weights.
    """

    def __init__(self, channels: int = DEFAULT_CHANNELS, res_blocks: int = DEFAULT_RES_BLOCKS, styles: int = 1,
                 *, family: str = "johnson2016") -> None:
        super().__init__()
        self.shape = NetShape(channels=channels, res_blocks=res_blocks, styles=styles, family=family)
        c1, c2, c3 = channels // 4, channels // 2, channels
        self.conv1 = ConvLayer(3, c1, kernel_size=9, stride=1)
        self.in1 = _norm(c1, styles)
        self.conv2 = ConvLayer(c1, c2, kernel_size=3, stride=2)
        self.in2 = _norm(c2, styles)
        self.conv3 = ConvLayer(c2, c3, kernel_size=3, stride=2)
        self.in3 = _norm(c3, styles)
        for i in range(1, res_blocks + 1):  # res1..resN: pytorch/examples' names for N = 5
            setattr(self, f"res{i}", ResidualBlock(c3, styles))
        self.deconv1 = UpsampleConvLayer(c3, c2, kernel_size=3, stride=1, upsample=2)
        self.in4 = _norm(c2, styles)
        self.deconv2 = UpsampleConvLayer(c2, c1, kernel_size=3, stride=1, upsample=2)
        self.in5 = _norm(c1, styles)
        self.deconv3 = ConvLayer(c1, 3, kernel_size=9, stride=1)
        self.relu = nn.ReLU()

    @classmethod
    def from_shape(cls, shape: NetShape) -> TransformerNet:
        return cls(shape.channels, shape.res_blocks, shape.styles, family=shape.family)

    @property
    def architecture(self) -> str:
        return self.shape.architecture

    @property
    def styles(self) -> int:
        return self.shape.styles

    def forward(self, x: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        y = self.relu(_apply_norm(self.in1, self.conv1(x), style))
        y = self.relu(_apply_norm(self.in2, self.conv2(y), style))
        y = self.relu(_apply_norm(self.in3, self.conv3(y), style))
        for i in range(1, self.shape.res_blocks + 1):
            y = getattr(self, f"res{i}")(y, style)
        y = self.relu(_apply_norm(self.in4, self.deconv1(y), style))
        y = self.relu(_apply_norm(self.in5, self.deconv2(y), style))
        return self.deconv3(y)

    def stylize(self, x: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        """Run on any H x W (>= 1): reflect-pad to a multiple of 4, run, crop back. Output in [0, 255]."""
        h, w = x.shape[-2:]
        pad_h, pad_w = (-h) % SIZE_MULTIPLE, (-w) % SIZE_MULTIPLE
        if pad_h or pad_w:
            x = pad_to_multiple(x, pad_h, pad_w)
        return self(x, style)[..., :h, :w].clamp(0.0, 255.0)


def pad_to_multiple(x: torch.Tensor, pad_h: int, pad_w: int) -> torch.Tensor:
    """Reflection-pad bottom/right; falls back to edge replication where the image is too small to reflect."""
    h, w = x.shape[-2:]
    mode = "reflect" if pad_h < h and pad_w < w else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)


def conv_flops(net: nn.Module, *inputs: Any) -> int:
    """Multiply-accumulates x 2 of every convolution in one forward pass of ``net`` on ``inputs``: nst's one FLOP
    counter (every TransformerNet family, AdaIN's encoder and decoder). The pass runs on the meta device, shapes
    only, no arithmetic (on a copy of ``net`` unless it is there already); non-tensor inputs pass as they are.

    Normalization, activations and padding are not counted: they are a fraction of a percent of the total.
    """
    import copy

    on_meta = all(p.device.type == "meta" for p in net.parameters())
    meta = net if on_meta else copy.deepcopy(net).to("meta")
    flops = 0

    def hook(module: nn.Conv2d, args: Any, out: torch.Tensor) -> None:
        nonlocal flops
        k = module.kernel_size[0] * module.kernel_size[1]
        flops += 2 * module.in_channels * module.out_channels * k * out.shape[-2] * out.shape[-1] // module.groups

    handles = [m.register_forward_hook(hook) for m in meta.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.inference_mode():
            meta(*(x.to("meta") if isinstance(x, torch.Tensor) else x for x in inputs))
    finally:
        for h in handles:
            h.remove()
    return flops


def count_flops(height: int, width: int, shape: NetShape | None = None) -> int:
    """:func:`conv_flops` of Johnson et al.'s network (or ``shape``) for one image of height x width (a multiple
    of 4)."""
    shape = shape or NetShape()
    with torch.device("meta"):
        net = TransformerNet.from_shape(shape)
        style = (torch.full((shape.styles,), 1.0 / shape.styles),) if shape.styles > 1 else ()
        return conv_flops(net, torch.zeros(1, 3, height, width), *style)


def gflop_per_megapixel(shape: NetShape | None = None) -> float:
    """GFLOP (multiply-adds x 2) per million input pixels: measured on a 1024x1024 image (a multiple of 4)."""
    return count_flops(1024, 1024, shape) / (1024 * 1024) * 1e6 / 1e9
