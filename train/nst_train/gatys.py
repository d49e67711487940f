"""The Gatys et al. 2016 baseline: optimise the pixels of one image against VGG perceptual losses.

Two recipes (:mod:`nst_train.recipes`): ``johnson2016-baseline`` uses the very losses the TransformerNet is
trained with (VGG-16), which is the comparison Johnson et al. make in their Table 1: per image, the
optimisation needs hundreds of VGG forward and backward passes where the feed-forward network needs one pass
of its own. ``gatys2016`` is the paper's objective on VGG-19 with jcjohnson/neural-style's weights.

**One iteration is one forward and one backward pass through VGG-16** (one evaluation of the loss and its
gradient). For L-BFGS that is one ``optimizer.step`` with ``max_iter=1`` and no line search: torch's
L-BFGS then evaluates the closure exactly once per step while keeping its curvature history across steps.
So per-iteration times of the two optimisers are comparable, and ``iterations=500`` costs 500 VGG passes.

The loss recorded for iteration *i* is that of the image before the *i*-th update (it is what the pass
evaluates); the returned image has had all ``iterations`` updates and is clamped to [0, 255] only at the end
(clamping between L-BFGS steps would corrupt its curvature pairs).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from nst_runtime.errors import UsageError
from tqdm.auto import tqdm

from .losses import LossWeights, gram_matrix, perceptual_loss
from .recipes import GatysSettings
from .vgg import VGGFeatures, load_vgg

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_LR", "GATYS_WEIGHTS", "GatysResult", "IterationRecord", "gatys_stylize", "load_gatys_images",
           "load_gatys_vgg"]

#: The training objective (content 1e5 at relu2_2, style 1e10 over relu1_2..relu4_3, Grams normalised by
#: C*H*W, inputs in [0, 255]) so the baseline optimises exactly what the TransformerNet minimises (Johnson et
#: al. compare the two on this objective). Starting from the content image, the content term begins at 0 and
#: the style term dominates, so the result moves towards the style; raise ``content`` to keep more of the photo.
GATYS_WEIGHTS = LossWeights()

#: L-BFGS: a unit step (its first step is rescaled by torch to 1/|g|_1). Adam: 10 grey levels per step in the
#: [0, 255] pixel space, the usual choice for pixel optimisation at this scale (0.04 in [0, 1] units).
DEFAULT_LR = {"lbfgs": 1.0, "adam": 10.0}


@dataclass(frozen=True)
class IterationRecord:
    """One iteration: weighted losses of the evaluated image and the wall time since the call started."""

    iteration: int
    loss: float
    content: float
    style: float
    tv: float
    #: seconds since :func:`gatys_stylize` began (targets included), synchronised on CUDA; the time of one
    #: iteration is the difference of consecutive records
    elapsed_s: float


@dataclass(frozen=True)
class GatysResult:
    #: 1x3xHxW float in [0, 255], on the device of the inputs
    image: torch.Tensor
    history: list[IterationRecord]
    #: wall time of the whole call (targets, all iterations, final clamp), synchronised on CUDA
    seconds: float


def _check_image(name: str, t: torch.Tensor) -> None:
    if not isinstance(t, torch.Tensor) or t.dim() != 4 or t.shape[0] != 1 or t.shape[1] != 3:
        shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise UsageError(f"{name}: expected a 1x3xHxW float tensor in [0, 255], got {shape}.")
    if not t.is_floating_point():
        raise UsageError(f"{name}: expected a float tensor in [0, 255], got dtype {t.dtype}; call .float().")
    if min(t.shape[-2:]) < 16:
        raise UsageError(f"{name}: {tuple(t.shape[-2:])} is too small for the VGG loss network (needs >= 16 px).")


def gatys_stylize(
    content: torch.Tensor,
    style: torch.Tensor,
    *,
    vgg: VGGFeatures,
    iterations: int = 300,
    optimizer: Literal["lbfgs", "adam"] = "lbfgs",
    init: Literal["content", "noise"] = "content",
    weights: LossWeights | None = None,
    lr: float | None = None,
    seed: int = 0,
    progress: bool = True,
    callback: Callable[[IterationRecord], None] | None = None,
    lbfgs_history: int = 100,
) -> GatysResult:
    """Stylise ``content`` (1x3xHxW, [0, 255]) after ``style`` (any size) by optimising its pixels.

    ``weights`` defaults to :data:`GATYS_WEIGHTS`, ``lr`` to :data:`DEFAULT_LR` of the optimiser. ``init="noise"``
    starts from uniform noise in [0, 255] drawn with ``seed``. ``callback`` gets every :class:`IterationRecord`.
    If the loss stops being finite the optimisation ends early with a logged error (the history is shorter).
    """
    _check_image("content", content)
    _check_image("style", style)
    if iterations < 1:
        raise UsageError(f"iterations must be at least 1, got {iterations}.")
    if optimizer not in DEFAULT_LR:
        raise UsageError(f"optimizer must be 'lbfgs' or 'adam', got {optimizer!r}.")
    if init not in ("content", "noise"):
        raise UsageError(f"init must be 'content' or 'noise', got {init!r}.")
    if content.device != style.device:
        raise UsageError(f"content is on {content.device}, style on {style.device}; move both to one device.")
    weights = weights or GATYS_WEIGHTS
    lr = DEFAULT_LR[optimizer] if lr is None else lr
    device = content.device
    if device.type == "cuda":
        sync: Callable[[], None] = torch.cuda.synchronize
    elif device.type == "mps":
        sync = torch.mps.synchronize
    else:
        sync = lambda: None  # noqa: E731

    sync()
    start = time.perf_counter()
    with torch.no_grad():
        # float32, or float64 when given (the tests check the objective at float64 rounding)
        dtype = torch.float64 if content.dtype == torch.float64 else torch.float32
        content_target = vgg(content.to(dtype), (weights.content_layer,))[weights.content_layer]
        style_grams = {k: gram_matrix(v) for k, v in vgg(style.to(dtype), weights.style_layers).items()}
    if init == "content":
        image = content.detach().to(dtype).clone()
    else:
        gen = torch.Generator().manual_seed(seed)
        image = (torch.rand(content.shape, generator=gen, dtype=dtype) * 255.0).to(device)
    image.requires_grad_(True)
    layers = weights.layers

    if optimizer == "lbfgs":
        opt: torch.optim.Optimizer = torch.optim.LBFGS([image], lr=lr, max_iter=1, history_size=lbfgs_history,
                                                       tolerance_grad=0.0, tolerance_change=0.0)
    else:
        opt = torch.optim.Adam([image], lr=lr)

    history: list[IterationRecord] = []
    last_terms: list[torch.Tensor] = []

    def closure() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        terms = perceptual_loss(vgg(image, layers), content_target, style_grams, image, weights)
        total = terms.total
        total.backward()
        last_terms[:] = [total.detach(), terms.content.detach(), terms.style.detach(), terms.tv.detach()]
        return total

    bar = tqdm(range(1, iterations + 1), desc=f"gatys/{optimizer}", unit="it", disable=not progress, leave=False)
    for i in bar:
        if optimizer == "lbfgs":
            opt.step(closure)
        else:
            closure()
            opt.step()
        total, c, s, tv = (float(v) for v in torch.stack(last_terms).tolist())  # .tolist() syncs the device
        sync()
        record = IterationRecord(iteration=i, loss=total, content=c, style=s, tv=tv,
                                 elapsed_s=time.perf_counter() - start)
        history.append(record)
        if callback is not None:
            callback(record)
        if i == 1 or i % 10 == 0:
            bar.set_postfix(loss=f"{total:.4g}", refresh=False)
        if not math.isfinite(total):
            log.error("Gatys loss became %s at iteration %d; stopping. Lower lr (now %g) or the loss weights.",
                      total, i, lr)
            break
    bar.close()
    result = image.detach().clamp(0.0, 255.0)
    sync()
    return GatysResult(image=result, history=history, seconds=time.perf_counter() - start)


def load_gatys_vgg(settings: GatysSettings, *, device: torch.device | str = "cpu") -> VGGFeatures:
    """The loss network of a Gatys recipe, built only as deep as its deepest layer."""
    return load_vgg(settings.vgg_arch, settings.vgg_weights, preprocessing=settings.vgg_preprocessing,  # type: ignore[arg-type]
                    last_layer=settings.deepest_layer, device=device)


def load_gatys_images(content: str | os.PathLike[str], style: str | os.PathLike[str], settings: GatysSettings, *,
                      device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """The content and style images as 1x3xHxW [0, 255] tensors, sized as the recipe says: ``image_size``
    pixels on the ``size_side`` (``shorter``: nst's resampling; ``longer``: bilinear, as neural-style's
    ``image.scale``), 0 for the file's size; the style at ``style_size`` (default: the same)."""
    from .imageio import load_image_tensor

    fit = "shorter-side" if settings.size_side == "shorter" else "longer-side"
    size = settings.image_size or None
    style_size = settings.style_size or size
    return (load_image_tensor(content, size=size, fit=fit, device=device),
            load_image_tensor(style, size=style_size, fit=fit, device=device))
