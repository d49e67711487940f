"""Arbitrary style transfer with adaptive instance normalization (Huang & Belongie 2017, "AdaIN").

A fixed encoder ``f`` (VGG-19 up to relu4_1, the same in-project VGG-19 as the Gatys recipe), the AdaIN layer and
a trained decoder ``g``::

    t = AdaIN(f(c), f(s)) = sigma(f(s)) * (f(c) - mu(f(c))) / sigma(f(c)) + mu(f(s))        (paper eq. 8)
    t' = alpha * t + (1 - alpha) * f(c)                                                     (eq. 14, 0 <= alpha <= 1)
    output = g(t')

``mu``/``sigma`` are per image and channel over the spatial positions (sigma with ``eps`` under the root). The
normalization of ``f(c)`` is exactly instance normalization, so the export writes it as the ONNX
``InstanceNormalization`` op (native in TensorRT, kept FP32 by the FP16 conversion). Interpolating styles
(``a.jpg:0.7,b.jpg:0.3``, paper section 7.3: a weighted sum of the AdaIN outputs) is the same as weighting the
styles' ``mu``/``sigma``, because AdaIN is affine in them; so a style, or a blend, is just the two vectors.

Training (:func:`train_adain`) uses the paper's losses (sections 4.2-4.3), as the authors' code computes them
(mean squared errors; the paper writes Euclidean norms):

* content: MSE(f(g(t)), t), the relu4_1 features of the output against the AdaIN target ``t`` (not f(c));
* style: sum over relu1_1, relu2_1, relu3_1, relu4_1 of MSE(mu(phi_i(g(t))), mu(phi_i(s))) +
  MSE(sigma(phi_i(g(t))), sigma(phi_i(s)));
* total: content + ``style_weight`` x style (the paper's lambda = 10).

The decoder mirrors the encoder (nearest-neighbour upsampling, reflection padding, no normalization), as in the
authors' release. The VGG-19 weights cannot be downloaded here: tests use random ones and check mechanics and
the formulas, never how a stylization looks.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from nst_runtime.errors import CheckpointError, UsageError
from torch import nn

from .vgg import VGGFeatures

log = logging.getLogger(__name__)

ARCHITECTURE = "adain/vgg19-relu4_1-v1"
ENCODER_LAYER = "relu4_1"
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")
#: channels of relu4_1 (the AdaIN layer's width)
CHANNELS = 512
#: the encoder pools three times: images are padded to a multiple of this and the decoder's output cropped
SIZE_MULTIPLE = 8
EPS = 1e-5


def mean_std(features: torch.Tensor, eps: float = EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image and channel: the mean and sqrt(biased variance + eps) over the spatial positions, [N, C]."""
    f = features.reshape(features.shape[0], features.shape[1], -1)
    mean = f.mean(dim=2)
    std = torch.sqrt(f.var(dim=2, unbiased=False) + eps)
    return mean, std


def adain(content: torch.Tensor, style_mean: torch.Tensor, style_std: torch.Tensor, eps: float = EPS
          ) -> torch.Tensor:
    """AdaIN of content features [N, C, H, W] to the style statistics [N or 1, C]: instance norm, then scale
    and shift."""
    normalized = F.instance_norm(content, eps=eps)
    return normalized * style_std[:, :, None, None] + style_mean[:, :, None, None]


def blend_features(content: torch.Tensor, target: torch.Tensor, alpha: torch.Tensor | float) -> torch.Tensor:
    """alpha * target + (1 - alpha) * content (paper eq. 14): alpha 1 is the full style, 0 the content."""
    return alpha * target + (1 - alpha) * content


class AdaINDecoder(nn.Module):
    """g: relu4_1 features (512 channels, 1/8 size) -> RGB [0, 255] (unclamped), mirroring VGG-19."""

    def __init__(self) -> None:
        super().__init__()

        def conv(cin: int, cout: int, relu: bool = True) -> list[nn.Module]:
            layers: list[nn.Module] = [nn.ReflectionPad2d(1), nn.Conv2d(cin, cout, 3)]
            return layers + ([nn.ReLU()] if relu else [])

        up = [nn.Upsample(scale_factor=2, mode="nearest")]
        self.layers = nn.Sequential(
            *conv(512, 256), *up,
            *conv(256, 256), *conv(256, 256), *conv(256, 256), *conv(256, 128), *up,
            *conv(128, 128), *conv(128, 64), *up,
            *conv(64, 64), *conv(64, 3, relu=False),
        )
        # a fresh decoder's output sits near 0; start it at mid-grey so the first steps are not all clamped
        with torch.no_grad():
            last = self.layers[-1]
            assert isinstance(last, nn.Conv2d)
            last.bias.fill_(127.5)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.layers(t)


class AdaINNet(nn.Module):
    """Encoder + AdaIN + decoder. ``forward(content, style_mean, style_std, alpha)`` with RGB [0, 255] content;
    :meth:`style_stats` gives a style image's (mean, std)."""

    def __init__(self, encoder: VGGFeatures, decoder: AdaINDecoder) -> None:
        super().__init__()
        if encoder.arch != "vgg19" or encoder.last_layer != ENCODER_LAYER:
            raise UsageError(f"AdaIN needs the VGG-19 encoder up to {ENCODER_LAYER}; got {encoder.arch} up to "
                             f"{encoder.last_layer}.")
        self.encoder = encoder
        self.decoder = decoder

    @property
    def architecture(self) -> str:
        return ARCHITECTURE

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x, (ENCODER_LAYER,))[ENCODER_LAYER]

    def style_stats(self, style: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return mean_std(self.encode(style))

    def forward(self, content: torch.Tensor, style_mean: torch.Tensor, style_std: torch.Tensor,
                alpha: torch.Tensor | float = 1.0) -> torch.Tensor:
        fc = self.encode(content)
        return self.decoder(blend_features(fc, adain(fc, style_mean, style_std), alpha))

    def stylize(self, content: torch.Tensor, style: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
        """Any H x W: reflect-pad the content to a multiple of 8, run, crop back; output in [0, 255]."""
        h, w = content.shape[-2:]
        ph, pw = (-h) % SIZE_MULTIPLE, (-w) % SIZE_MULTIPLE
        x = F.pad(content, (0, pw, 0, ph), mode="reflect") if ph or pw else content
        mean, std = self.style_stats(style)
        return self(x, mean, std, alpha)[..., :h, :w].clamp(0.0, 255.0)


# ------------------------------------------------------------------------------------------------ losses
@dataclass(frozen=True)
class AdaINLossTerms:
    content: torch.Tensor
    style: torch.Tensor

    @property
    def total(self) -> torch.Tensor:
        return self.content + self.style


def adain_losses(encoder: VGGFeatures, output: torch.Tensor, target: torch.Tensor, style: torch.Tensor, *,
                 style_weight: float) -> AdaINLossTerms:
    """The paper's objective for a decoded batch ``output`` = g(t): content MSE(f(g(t)), t) and the weighted
    sum over :data:`STYLE_LAYERS` of the MSEs of the means and standard deviations against the style's."""
    out = encoder(output, STYLE_LAYERS)
    with torch.no_grad():
        ref = encoder(style, STYLE_LAYERS)
    content = F.mse_loss(out[ENCODER_LAYER], target)
    style_loss = output.new_zeros(())
    for name in STYLE_LAYERS:
        om, os_ = mean_std(out[name])
        sm, ss = mean_std(ref[name])
        style_loss = style_loss + F.mse_loss(om, sm) + F.mse_loss(os_, ss)
    return AdaINLossTerms(content=content, style=style_weight * style_loss)


# ------------------------------------------------------------------------------------------------ checkpoints
def save_adain_checkpoint(path: str | os.PathLike[str], net: AdaINNet, metadata: dict[str, Any]) -> Path:
    """The nst checkpoint format with architecture :data:`ARCHITECTURE`: the encoder's weights travel with the
    decoder's (the export needs both, and they cannot be downloaded where it runs)."""
    import io

    from .atomic import atomic_write
    from .checkpoint import FORMAT, FORMAT_VERSION
    from .train import first_nonfinite

    path = Path(path)
    bad = first_nonfinite(net)
    if bad is not None:
        raise CheckpointError(f"{path}: not written: the weight tensor {bad} holds NaN or Inf (a diverged run); "
                              "expected finite weights. Fix: train again with a lower --lr.")
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    payload = {"format": FORMAT, "version": FORMAT_VERSION, "architecture": ARCHITECTURE,
               "metadata": {**metadata, "architecture": ARCHITECTURE,
                            "encoder_preprocessing": net.encoder.preprocessing,
                            "encoder_weights": str(net.encoder.weights_name)},
               "state_dict": state}
    buf = io.BytesIO()
    torch.save(payload, buf)
    with atomic_write(path) as f:
        f.write(buf.getvalue())
    return path


@dataclass(frozen=True)
class AdaINCheckpoint:
    net: AdaINNet
    metadata: dict[str, Any]
    path: Path


def load_adain_checkpoint(path: str | os.PathLike[str]) -> AdaINCheckpoint:
    """Read an AdaIN checkpoint (weights only, never unrestricted unpickling); :class:`CheckpointError` for
    anything else, naming the file."""
    from .checkpoint import FORMAT, torch_load_plain

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file.")
    obj = torch_load_plain(path, what="AdaIN checkpoint")
    if not isinstance(obj, dict) or obj.get("format") != FORMAT or obj.get("architecture") != ARCHITECTURE:
        raise CheckpointError(f"{path}: not an AdaIN checkpoint (architecture {ARCHITECTURE!r} in nst's format).")
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    state = obj.get("state_dict")
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: AdaIN checkpoint without a state_dict.")
    encoder = VGGFeatures("vgg19", meta.get("encoder_preprocessing", "torchvision"), ENCODER_LAYER)
    encoder.weights_name = str(meta.get("encoder_weights", "unknown"))
    encoder.is_random = encoder.weights_name == "random"
    net = AdaINNet(encoder, AdaINDecoder())
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise CheckpointError(f"{path}: the tensors do not fit the AdaIN network ({first}).") from None
    bad = next((k for k, v in state.items() if not torch.isfinite(v).all()), None)
    if bad is not None:
        raise CheckpointError(f"{path}: tensor {bad} holds NaN or Inf values.")
    for p in net.encoder.parameters():
        p.requires_grad_(False)
    return AdaINCheckpoint(net=net.eval(), metadata=meta, path=path)


def is_adain_checkpoint(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is an AdaIN checkpoint (reads the file; False for anything unreadable)."""
    from .checkpoint import torch_load_plain

    try:
        obj = torch_load_plain(Path(path))
    except Exception:
        return False
    return isinstance(obj, dict) and obj.get("architecture") == ARCHITECTURE


# ------------------------------------------------------------------------------------------------ training
@dataclass(frozen=True)
class AdaINConfig:
    """An AdaIN decoder training run (the paper's settings by default: lambda 10, Adam 1e-4, batch 8, crops of
    256 from images resized to 512)."""

    content_dir: Path
    style_paths: tuple[Path, ...]
    out: Path
    steps: int = 160_000
    batch_size: int = 8
    lr: float = 1e-4
    #: the authors' code decays the rate as lr / (1 + lr_decay * step)
    lr_decay: float = 5e-5
    style_weight: float = 10.0
    image_size: int = 256
    #: images are resized to this on the shorter side before the random crop
    load_size: int = 512
    seed: int = 0
    device: str = "auto"
    vgg_weights: str = "imagenet"
    log_every: int = 100
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AdaINResult:
    checkpoint: Path
    steps: int
    seconds: float
    final_losses: dict[str, float]
    net: AdaINNet


def _random_crops(paths: Sequence[Path], count: int, *, load_size: int, size: int, rng: random.Random,
                  device: torch.device) -> torch.Tensor:
    from .imageio import load_image_tensor

    crops = []
    for _ in range(count):
        img = load_image_tensor(rng.choice(list(paths)), size=load_size, fit="shorter-side")
        h, w = img.shape[-2:]
        if h < size or w < size:
            img = F.interpolate(img, size=(max(h, size), max(w, size)), mode="bilinear", align_corners=False)
            h, w = img.shape[-2:]
        y, x = rng.randrange(h - size + 1), rng.randrange(w - size + 1)
        crops.append(img[0, :, y:y + size, x:x + size])
    return torch.stack(crops).to(device)


def train_adain(config: AdaINConfig, *, callback: Callable[[int, AdaINLossTerms], None] | None = None
                ) -> AdaINResult:
    """Train the decoder on content photos and style images; writes the checkpoint ``config.out``."""
    from .data import find_images
    from .distributed import DistContext, resolve_device
    from .train import TrainingDivergedError, first_nonfinite
    from .vgg import load_vgg

    if not config.style_paths:
        raise UsageError("AdaIN training needs style images: --style a.jpg b.jpg ... (or a folder of them).")
    for p in config.style_paths:
        if not p.is_file():
            raise UsageError(f"{p}: style image not found.")
    if config.image_size % SIZE_MULTIPLE or config.image_size < 32:
        raise UsageError(f"--image-size {config.image_size}: expected a multiple of {SIZE_MULTIPLE}, >= 32.")
    contents = find_images(config.content_dir, "recursive")
    if not contents:
        raise UsageError(f"{config.content_dir}: no content images found.")
    device = resolve_device(config.device, DistContext())
    rng = random.Random(config.seed)
    torch.manual_seed(config.seed)
    decoder = AdaINDecoder()
    encoder = load_vgg("vgg19", config.vgg_weights, last_layer=ENCODER_LAYER, device=device)
    net = AdaINNet(encoder, decoder).to(device)
    optimizer = torch.optim.Adam(decoder.parameters(), lr=config.lr)
    log.info("AdaIN decoder: %.1f M parameters; encoder VGG-19 to relu4_1 (%s, %s); %d content images, %d styles",
             sum(p.numel() for p in decoder.parameters()) / 1e6, encoder.weights_name, encoder.preprocessing,
             len(contents), len(config.style_paths))
    final: dict[str, float] = {}
    start = time.perf_counter()
    from tqdm.auto import tqdm

    def diverged(step: int, what: str) -> TrainingDivergedError:
        return TrainingDivergedError(
            f"AdaIN training diverged at step {step}: {what}. Nothing was written (AdaIN training keeps no "
            f"intermediate state: it writes {config.out} only at the end, from finite weights). "
            f"Fix: lower --lr (now {config.lr:g}) or --style-weight (now {config.style_weight:g}) and start again.",
            step=step, last_good_state=None)

    bar = tqdm(total=config.steps, desc="adain", unit="step", disable=not config.progress)
    window = torch.zeros(2, dtype=torch.float64)
    for step in range(1, config.steps + 1):
        for group in optimizer.param_groups:
            group["lr"] = config.lr / (1.0 + config.lr_decay * (step - 1))
        c = _random_crops(contents, config.batch_size, load_size=config.load_size, size=config.image_size, rng=rng,
                          device=device)
        s = _random_crops(config.style_paths, config.batch_size, load_size=config.load_size,
                          size=config.image_size, rng=rng, device=device)
        with torch.no_grad():
            fc = net.encode(c)
            mean, std = net.style_stats(s)
            t = adain(fc, mean, std)
        terms = adain_losses(encoder, decoder(t), t, s, style_weight=config.style_weight)
        if not torch.isfinite(terms.total):
            raise diverged(step, f"the loss is {float(terms.total.detach())}")
        optimizer.zero_grad(set_to_none=True)
        terms.total.backward()
        optimizer.step()
        window += torch.stack([terms.content.detach(), terms.style.detach()]).double().cpu()
        if callback is not None:
            callback(step, terms)
        bar.update(1)
        if step % config.log_every == 0 or step == config.steps:
            n = config.log_every if step % config.log_every == 0 else step % config.log_every
            cl, sl = (window / n).tolist()
            final = {"content": cl, "style": sl, "total": cl + sl}
            bar.set_postfix(content=f"{cl:.3g}", style=f"{sl:.3g}", refresh=False)
            window.zero_()
    bar.close()
    bad = first_nonfinite(decoder)
    if bad is not None:  # the last step's update is not covered by a loss check: never write such weights
        raise diverged(config.steps, f"the weight tensor {bad} holds NaN or Inf after the last step")
    seconds = time.perf_counter() - start
    metadata = {"steps": config.steps, "training": json.loads(json.dumps(dataclasses.asdict(config), default=str)),
                "final_losses": final, "style_count": len(config.style_paths), "source": "nst"}
    path = save_adain_checkpoint(config.out, net.cpu(), metadata)
    log.info("trained the AdaIN decoder %d steps in %.1f s; wrote %s", config.steps, seconds, path)
    return AdaINResult(checkpoint=path, steps=config.steps, seconds=seconds, final_losses=final, net=net.eval())
