"""Perceptual losses of Johnson et al. 2016 / Gatys et al. 2016: content, Gram-matrix style, total variation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .vgg import STYLE_LAYERS


@dataclass(frozen=True)
class LossWeights:
    """Weights of the three terms. Defaults follow pytorch/examples' fast_neural_style (inputs in [0, 255])."""

    content: float = 1e5
    style: float = 1e10
    tv: float = 0.0
    content_layer: str = "relu2_2"
    style_layers: tuple[str, ...] = field(default=STYLE_LAYERS)

    @property
    def layers(self) -> tuple[str, ...]:
        """Every VGG layer the losses need, in network order."""
        return tuple(sorted(set(self.style_layers) | {self.content_layer}, key=STYLE_LAYERS.index))


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """Gram matrix normalised by C*H*W, computed in float32 even under autocast (fp16 overflows here)."""
    b, c, h, w = features.shape
    f = features.float().reshape(b, c, h * w)
    with torch.autocast(device_type=f.device.type, enabled=False):
        return torch.bmm(f, f.transpose(1, 2)) / (c * h * w)


def content_loss(output_features: torch.Tensor, target_features: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(output_features.float(), target_features.float())


def style_loss(output_features: Mapping[str, torch.Tensor], style_grams: Mapping[str, torch.Tensor],
               layers: Sequence[str]) -> torch.Tensor:
    """Sum over layers of the MSE between Gram matrices; ``style_grams`` may have batch 1 (broadcast)."""
    total = output_features[layers[0]].new_zeros((), dtype=torch.float32)
    for name in layers:
        g = gram_matrix(output_features[name])
        target = style_grams[name].expand_as(g)
        total = total + F.mse_loss(g, target)
    return total


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between neighbouring pixels (anisotropic TV), per pixel."""
    x = images.float()
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()


@dataclass(frozen=True)
class LossTerms:
    content: torch.Tensor
    style: torch.Tensor
    tv: torch.Tensor

    @property
    def total(self) -> torch.Tensor:
        return self.content + self.style + self.tv


def perceptual_loss(
    output_features: Mapping[str, torch.Tensor],
    content_features: torch.Tensor,
    style_grams: Mapping[str, torch.Tensor],
    output_images: torch.Tensor,
    weights: LossWeights,
) -> LossTerms:
    """The weighted terms. ``content_features`` is the target at ``weights.content_layer``."""
    c = weights.content * content_loss(output_features[weights.content_layer], content_features)
    s = weights.style * style_loss(output_features, style_grams, weights.style_layers)
    tv = weights.tv * total_variation(output_images) if weights.tv else c.new_zeros(())
    return LossTerms(content=c, style=s, tv=tv)
