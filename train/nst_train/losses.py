"""Perceptual losses of Johnson et al. 2016 / Gatys et al. 2016: content, Gram-matrix style, total variation.

Reductions (the same in every reference this project reproduces): the content term is the mean squared
difference of the features, the style term is, per layer, the mean squared difference of Gram matrices
normalised by C*H*W, summed over the layers. The total-variation term has two forms (:data:`TV_FORMS`).
Everything is computed in float32, or float64 when the inputs are float64 (tests check the formulas there).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F

from .vgg import STYLE_LAYERS, layer_order

TvForm = Literal["mean-abs", "half-sum-sq"]
TV_FORMS: dict[str, str] = {
    "mean-abs": "mean |x[i,j+1]-x[i,j]| + mean |x[i+1,j]-x[i,j]| (anisotropic, per pixel)",
    "half-sum-sq": "1/2 * sum over the (H-1)x(W-1) corner and the batch of (x[i,j]-x[i,j+1])^2 + "
                   "(x[i,j]-x[i+1,j])^2 (Torch7 TotalVariation / TVLoss of jcjohnson)",
}


@dataclass(frozen=True)
class LossWeights:
    """Weights and layers of the three terms. Defaults follow pytorch/examples' fast_neural_style."""

    content: float = 1e5
    style: float = 1e10
    tv: float = 0.0
    content_layer: str = "relu2_2"
    style_layers: tuple[str, ...] = field(default=STYLE_LAYERS)
    tv_form: TvForm = "mean-abs"

    def __post_init__(self) -> None:
        if self.tv_form not in TV_FORMS:
            raise ValueError(f"tv_form must be one of {sorted(TV_FORMS)}, got {self.tv_form!r}")
        object.__setattr__(self, "style_layers", tuple(self.style_layers))

    @property
    def layers(self) -> tuple[str, ...]:
        """Every VGG layer the losses need, in network order."""
        return tuple(sorted(set(self.style_layers) | {self.content_layer}, key=layer_order))


def _compute_dtype(t: torch.Tensor) -> torch.Tensor:
    """float32 for half types (fp16 overflows in Gram sums), float64 kept."""
    return t if t.dtype == torch.float64 else t.float()


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """Gram matrix normalised by C*H*W, computed in float32 (or float64) even under autocast."""
    b, c, h, w = features.shape
    f = _compute_dtype(features).reshape(b, c, h * w)
    with torch.autocast(device_type=f.device.type, enabled=False):
        return torch.bmm(f, f.transpose(1, 2)) / (c * h * w)


def content_loss(output_features: torch.Tensor, target_features: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(_compute_dtype(output_features), _compute_dtype(target_features))


def style_loss(output_features: Mapping[str, torch.Tensor], style_grams: Mapping[str, torch.Tensor],
               layers: Sequence[str]) -> torch.Tensor:
    """Sum over layers of the MSE between Gram matrices; ``style_grams`` may have batch 1 (broadcast)."""
    total: torch.Tensor | None = None
    for name in layers:
        g = gram_matrix(output_features[name])
        term = F.mse_loss(g, style_grams[name].to(g.dtype).expand_as(g))
        total = term if total is None else total + term
    assert total is not None  # layers is never empty (LossWeights has style layers)
    return total


def total_variation(images: torch.Tensor, form: TvForm = "mean-abs") -> torch.Tensor:
    """Total variation of a batch of images (see :data:`TV_FORMS`)."""
    x = _compute_dtype(images)
    if form == "half-sum-sq":
        corner = x[..., :-1, :-1]
        dx = corner - x[..., :-1, 1:]
        dy = corner - x[..., 1:, :-1]
        return 0.5 * (dx.square().sum() + dy.square().sum())
    if form != "mean-abs":
        raise ValueError(f"tv form must be one of {sorted(TV_FORMS)}, got {form!r}")
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()


@dataclass(frozen=True)
class LossTerms:
    content: torch.Tensor
    style: torch.Tensor
    tv: torch.Tensor
    #: distillation only: the weighted MSE between the student's and the teacher's output images
    output: torch.Tensor | None = None

    @property
    def total(self) -> torch.Tensor:
        total = self.content + self.style + self.tv
        return total if self.output is None else total + self.output


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
    tv = weights.tv * total_variation(output_images, weights.tv_form) if weights.tv else c.new_zeros(())
    return LossTerms(content=c, style=s, tv=tv)


class PerceptualObjective:
    """The training objective for one style: the VGG loss network, the weights and the style's Gram targets.

    ``objective(y, x)`` returns the weighted :class:`LossTerms` of the stylized batch ``y`` against the content
    batch ``x`` (both RGB [0, 255]); the content target is computed without gradients.
    """

    def __init__(self, vgg: torch.nn.Module, weights: LossWeights, style_image: torch.Tensor) -> None:
        self.vgg = vgg
        self.weights = weights
        self.layers = weights.layers
        with torch.no_grad():
            feats = vgg(style_image, weights.style_layers)
            self.style_grams = {k: gram_matrix(v) for k, v in feats.items()}

    def __call__(self, y: torch.Tensor, x: torch.Tensor) -> LossTerms:
        out_feats = self.vgg(y, self.layers)
        with torch.no_grad():
            target = self.vgg(x, (self.weights.content_layer,))[self.weights.content_layer]
        return perceptual_loss(out_feats, target, self.style_grams, y, self.weights)


def output_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of two image batches in [0, 255] units (the distillation's output term)."""
    return F.mse_loss(_compute_dtype(student), _compute_dtype(teacher))


class DistillationObjective:
    """Train a network to reproduce a trained one (``nst-train --teacher``): the teacher's output ``t`` for the
    content batch is the target of everything, so no style image and no style weight is tuned again.

    * output: ``output_weight`` x MSE(y, t) in [0, 255] units;
    * content: ``weights.content`` x MSE of the VGG features at ``weights.content_layer`` of ``y`` and ``t``;
    * style: ``weights.style`` x the Gram-matrix loss of ``y`` against ``t``'s Grams (per image);
    * tv: as in training.
    """

    def __init__(self, vgg: torch.nn.Module, weights: LossWeights, output_weight: float) -> None:
        self.vgg = vgg
        self.weights = weights
        self.layers = weights.layers
        self.output_weight = output_weight

    def __call__(self, y: torch.Tensor, t: torch.Tensor) -> LossTerms:
        out_feats = self.vgg(y, self.layers)
        with torch.no_grad():
            target = self.vgg(t, self.layers)
            grams = {k: gram_matrix(target[k]) for k in self.weights.style_layers}
        terms = perceptual_loss(out_feats, target[self.weights.content_layer], grams, y, self.weights)
        return LossTerms(content=terms.content, style=terms.style, tv=terms.tv,
                         output=self.output_weight * output_loss(y, t))
