"""VGG-16 loss network, defined here (torchvision does not import on the CPU torch we target).

The layout of ``features`` matches torchvision's ``vgg16().features`` index for index, so torchvision's
published ImageNet checkpoint (IMAGENET1K_V1) loads directly. Only the part up to relu4_3 is kept.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from nst_runtime.errors import WeightsUnavailableError
from torch import nn

log = logging.getLogger(__name__)

#: torchvision's IMAGENET1K_V1 weights; the file name carries the first 8 hex digits of its SHA-256,
#: which ``torch.hub`` checks when ``check_hash=True``.
VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
VGG16_SHA256_PREFIX = "397923af"

# ImageNet statistics, RGB, for inputs in [0, 1].
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# (kind, out_channels) in torchvision's order, up to relu4_3 (features index 22).
_CFG: list[int | str] = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512]
#: features index -> name of the ReLU output it produces
LAYER_INDEX = {"relu1_2": 3, "relu2_2": 8, "relu3_3": 15, "relu4_3": 22}
STYLE_LAYERS: tuple[str, ...] = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")

RANDOM_WEIGHTS_WARNING = (
    "VGG-16 loss network is RANDOMLY INITIALISED (--vgg-weights random): losses and gradients are real "
    "but stylization quality is meaningless. Use it for tests and offline smoke runs only."
)

WeightsSpec = Literal["imagenet", "random"] | str | os.PathLike[str]


class VGG16Features(nn.Module):
    """Frozen VGG-16 up to relu4_3. Takes RGB in [0, 255]; returns a dict of named ReLU outputs.

    ImageNet normalization happens inside, so callers pass the same [0, 255] tensors the
    TransformerNet produces.
    """

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for v in _CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                assert isinstance(v, int)
                layers += [nn.Conv2d(in_ch, v, kernel_size=3, padding=1), nn.ReLU(inplace=False)]
                in_ch = v
        self.features = nn.Sequential(*layers)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.is_random = True

    def forward(self, x: torch.Tensor, layers: Sequence[str] = STYLE_LAYERS) -> dict[str, torch.Tensor]:
        wanted = {LAYER_INDEX[name]: name for name in layers}
        last = max(wanted)
        out: dict[str, torch.Tensor] = {}
        h = (x - self.mean) / self.std
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in wanted:
                out[wanted[i]] = h
            if i == last:
                break
        return out

    def freeze(self) -> VGG16Features:
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)
        return self


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    from .checkpoint import torch_load_plain

    # a corrupt file or a pickle that would run code: CheckpointError (exit 3), like every other .pth
    state = torch_load_plain(path, what="VGG-16 weights")
    if not isinstance(state, dict):
        raise WeightsUnavailableError(f"{path}: expected a VGG-16 state dict, found {type(state).__name__}.")
    return state


def _features(state: dict, n_layers: int) -> dict[str, torch.Tensor]:
    """``features.N.*`` tensors with N < n_layers (torchvision's file also has the classifier and deeper layers)."""
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        parts = k.split(".") if isinstance(k, str) else []
        if len(parts) >= 3 and parts[0] == "features" and parts[1].isdigit() and int(parts[1]) < n_layers \
                and isinstance(v, torch.Tensor):
            out[k] = v
    return out


def load_vgg16(weights: WeightsSpec = "imagenet", *, device: torch.device | str = "cpu") -> VGG16Features:
    """Build the frozen loss network.

    ``weights``: ``"imagenet"`` (torchvision's checkpoint through ``torch.hub``, hash-checked and cached),
    a path to a ``.pth`` holding a VGG-16 state dict (torchvision key names), or ``"random"``, which warns
    loudly because the losses of a random network do not measure style.
    """
    net = VGG16Features()
    if str(weights) == "random":
        warnings.warn(RANDOM_WEIGHTS_WARNING, stacklevel=2)
        log.warning(RANDOM_WEIGHTS_WARNING)
    else:
        if str(weights) == "imagenet":
            try:
                state = torch.hub.load_state_dict_from_url(
                    VGG16_URL, map_location="cpu", check_hash=True, progress=True, weights_only=True
                )
            except Exception as exc:
                cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(VGG16_URL).name
                raise WeightsUnavailableError(
                    f"cannot obtain the ImageNet VGG-16 weights ({type(exc).__name__}: {exc}). "
                    f"Fix: download {VGG16_URL} on a connected machine and pass --vgg-weights PATH, or put it "
                    f"at {cache}; for tests and offline smoke runs only, pass --vgg-weights random."
                ) from exc
        else:
            path = Path(weights)
            if not path.is_file():
                raise WeightsUnavailableError(
                    f"{path}: no such VGG-16 weights file. Pass --vgg-weights imagenet, a path, or random."
                )
            state = _load_state(path)
        try:
            missing, _unexpected = net.load_state_dict(_features(state, len(net.features)), strict=False)
        except RuntimeError as exc:  # a tensor of the wrong shape
            first = (str(exc).strip().splitlines() or [""])[-1].strip()[:200]
            raise WeightsUnavailableError(
                f"VGG-16 weights {weights}: do not fit VGG-16 ({first}); expected torchvision's vgg16 state dict."
            ) from exc
        if missing:
            raise WeightsUnavailableError(
                f"VGG-16 weights {weights}: missing {len(missing)} tensors (first: {missing[0]}); expected "
                "torchvision's vgg16 state dict (keys features.N.weight/bias)."
            )
        net.is_random = False
    return net.freeze().to(device)
