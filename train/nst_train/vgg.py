"""VGG loss networks (VGG-16 and VGG-19), defined here: torchvision does not import on the CPU torch we target.

The layout of ``features`` matches torchvision's ``vgg16().features`` / ``vgg19().features`` index for index,
so torchvision's published ImageNet checkpoints and the Caffe conversions of jcjohnson/pytorch-vgg (the same
key names) load directly. Only the part up to the deepest layer a caller needs is built.

Two input conventions exist, and the weights decide which one is right (:data:`PREPROCESSING`):

* ``torchvision``: RGB scaled to [0, 1], minus the ImageNet mean, divided by the ImageNet std (torchvision's
  ``IMAGENET1K_V1`` weights; pytorch/examples' ``utils.normalize_batch``);
* ``caffe``: BGR in [0, 255] minus the Caffe mean pixel, no std (the original VGG release and every Torch7
  style-transfer code: jcjohnson/fast-neural-style ``preprocess.vgg``, jcjohnson/neural-style).

Every network here takes RGB in [0, 255] (the TransformerNet's scale) and does its preprocessing inside.
Named weights (:data:`KNOWN_WEIGHTS`) are found by name or recognised by the SHA-256 prefix their file names
carry; a file with a known name but another hash is refused.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from nst_runtime.errors import UsageError, WeightsUnavailableError
from torch import nn

log = logging.getLogger(__name__)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "KNOWN_WEIGHTS",
    "LAYER_INDEX",
    "PREPROCESSING",
    "STYLE_LAYERS",
    "KnownWeights",
    "VGG16Features",
    "VGGFeatures",
    "layer_index",
    "layer_order",
    "load_vgg",
    "load_vgg16",
]

# ImageNet statistics, RGB, for inputs in [0, 1] (torchvision's weights).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: the Caffe VGG mean pixel, **BGR**, in [0, 255] (jcjohnson/pytorch-vgg README; Simonyan & Zisserman's release)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)

Preprocessing = Literal["torchvision", "caffe"]
PREPROCESSING: dict[str, str] = {
    "torchvision": "RGB / 255, minus ImageNet mean (0.485, 0.456, 0.406), divided by std (0.229, 0.224, 0.225)",
    "caffe": "RGB -> BGR, [0, 255], minus the mean pixel (103.939, 116.779, 123.68), no std",
}

#: channels per convolution, "M" for a 2x2 max pool: torchvision's configurations "D" and "E"
CONFIGS: dict[str, list[int | str]] = {
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"],
}
#: the deepest layer built by default (what the perceptual and Gatys losses use)
DEFAULT_LAST_LAYER = {"vgg16": "relu4_3", "vgg19": "relu5_1"}
#: pytorch/examples' and Johnson et al.'s style layers of VGG-16
STYLE_LAYERS: tuple[str, ...] = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")

RANDOM_WEIGHTS_WARNING = (
    "VGG-16 loss network is RANDOMLY INITIALISED (--vgg-weights random): losses and gradients are real "
    "but stylization quality is meaningless. Use it for tests and offline smoke runs only."
)

WeightsSpec = Literal["imagenet", "caffe", "random"] | str | os.PathLike[str]


def _layer_table(arch: str) -> dict[str, int]:
    """``{"conv1_1": 0, "relu1_1": 1, ..., "pool1": 4, ...}``: features index of every named layer."""
    table: dict[str, int] = {}
    block, conv, i = 1, 0, 0
    for v in CONFIGS[arch]:
        if v == "M":
            table[f"pool{block}"] = i
            block, conv, i = block + 1, 0, i + 1
        else:
            conv += 1
            table[f"conv{block}_{conv}"] = i
            table[f"relu{block}_{conv}"] = i + 1
            i += 2
    return table


_TABLES = {arch: _layer_table(arch) for arch in CONFIGS}
#: VGG-16 features index of each ReLU output the perceptual losses use (kept for callers of the old API)
LAYER_INDEX = {name: _TABLES["vgg16"][name] for name in STYLE_LAYERS}


def layer_index(arch: str, name: str) -> int:
    """The ``features`` index that produces the named layer (``relu4_2``, ``conv4_2``, ``pool3``...)."""
    if arch not in _TABLES:
        raise UsageError(f"unknown VGG architecture {arch!r}; expected one of {sorted(_TABLES)}.")
    try:
        return _TABLES[arch][name]
    except KeyError:
        raise UsageError(f"{arch} has no layer {name!r}; expected names like relu1_2, conv4_2 or pool3 "
                         f"({', '.join(n for n in _TABLES[arch] if n.startswith('relu'))}).") from None


def layer_order(name: str) -> tuple[int, int, int]:
    """A sort key putting layer names in network order (conv before its relu, pool after its block)."""
    m = re.fullmatch(r"(conv|relu)(\d+)_(\d+)|pool(\d+)", name)
    if m is None:
        raise UsageError(f"{name!r} is not a VGG layer name (expected e.g. relu2_2, conv4_2, pool3).")
    if m.group(4):
        return int(m.group(4)), 99, 0
    return int(m.group(2)), int(m.group(3)), 0 if m.group(1) == "conv" else 1


@dataclass(frozen=True)
class KnownWeights:
    """A published VGG checkpoint: where it comes from, its hash, and the preprocessing it was trained with."""

    name: str
    arch: str
    url: str
    #: first hex digits of the file's SHA-256 (the suffix of its file name, as torch.hub checks it)
    sha256_prefix: str
    preprocessing: Preprocessing
    origin: str

    @property
    def filename(self) -> str:
        return Path(self.url).name


KNOWN_WEIGHTS: dict[tuple[str, str], KnownWeights] = {
    ("vgg16", "imagenet"): KnownWeights(
        "imagenet", "vgg16", "https://download.pytorch.org/models/vgg16-397923af.pth", "397923af", "torchvision",
        "torchvision VGG16_Weights.IMAGENET1K_V1"),
    ("vgg16", "caffe"): KnownWeights(
        "caffe", "vgg16", "https://web.eecs.umich.edu/~justincj/models/vgg16-00b39a1b.pth", "00b39a1b", "caffe",
        "the Caffe VGG-16 of Simonyan & Zisserman, converted by jcjohnson/pytorch-vgg"),
    ("vgg19", "imagenet"): KnownWeights(
        "imagenet", "vgg19", "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth", "dcbb9e9d", "torchvision",
        "torchvision VGG19_Weights.IMAGENET1K_V1"),
    ("vgg19", "caffe"): KnownWeights(
        "caffe", "vgg19", "https://web.eecs.umich.edu/~justincj/models/vgg19-d01eb7cb.pth", "d01eb7cb", "caffe",
        "the Caffe VGG-19 of Simonyan & Zisserman, converted by jcjohnson/pytorch-vgg"),
}


class VGGFeatures(nn.Module):
    """Frozen VGG ``features`` up to ``last_layer``. Takes RGB in [0, 255]; returns a dict of named outputs.

    The preprocessing of the weights (``torchvision`` or ``caffe``) happens inside, so callers pass the same
    [0, 255] RGB tensors the TransformerNet produces. Reusable as an encoder (e.g. VGG-19 up to relu4_1).
    """

    def __init__(self, arch: str = "vgg16", preprocessing: Preprocessing = "torchvision",
                 last_layer: str | None = None) -> None:
        super().__init__()
        if preprocessing not in PREPROCESSING:
            raise UsageError(f"VGG preprocessing {preprocessing!r}: expected one of {sorted(PREPROCESSING)}.")
        self.arch = arch
        self.preprocessing: Preprocessing = preprocessing
        self.last_layer = last_layer or DEFAULT_LAST_LAYER[arch]
        last = layer_index(arch, self.last_layer)
        layers: list[nn.Module] = []
        in_ch = 3
        for v in CONFIGS[arch]:
            if len(layers) > last:
                break
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(in_ch, int(v), kernel_size=3, padding=1), nn.ReLU(inplace=False)]
                in_ch = int(v)
        self.features = nn.Sequential(*layers[:last + 1])
        # [0, 1] RGB statistics: the same arithmetic as pytorch/examples' normalize_batch (x / 255 - mean) / std
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("caffe_mean", torch.tensor(CAFFE_MEAN_BGR).view(1, 3, 1, 1), persistent=False)
        self.is_random = True
        #: what the weights are ("random", "imagenet", "caffe", or a path): for logs and metadata
        self.weights_name = "random"

    @property
    def default_layers(self) -> tuple[str, ...]:
        return STYLE_LAYERS if self.arch == "vgg16" else ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """RGB [0, 255] -> the network's input convention."""
        if self.preprocessing == "caffe":
            return x.flip(1) - self.caffe_mean.to(x.dtype)
        return (x / 255.0 - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def forward(self, x: torch.Tensor, layers: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        wanted = {layer_index(self.arch, name): name for name in (layers or self.default_layers)}
        last = max(wanted)
        if last >= len(self.features):
            raise UsageError(f"layer {wanted[last]!r} is deeper than this {self.arch} (built up to "
                             f"{self.last_layer}); build it with last_layer={wanted[last]!r}.")
        out: dict[str, torch.Tensor] = {}
        h = self.preprocess(x)
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in wanted:
                out[wanted[i]] = h
            if i == last:
                break
        return out

    def freeze(self) -> VGGFeatures:
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)
        return self


class VGG16Features(VGGFeatures):
    """Frozen VGG-16 up to relu4_3 (the perceptual losses of pytorch/examples and Johnson et al.)."""

    def __init__(self, preprocessing: Preprocessing = "torchvision") -> None:
        super().__init__("vgg16", preprocessing, "relu4_3")


def _pretty(arch: str) -> str:
    return arch.upper().replace("VGG", "VGG-")  # vgg16 -> VGG-16


def _load_state(path: Path, arch: str) -> dict[str, torch.Tensor]:
    from .checkpoint import torch_load_plain

    # a corrupt file or a pickle that would run code: CheckpointError (exit 3), like every other .pth
    state = torch_load_plain(path, what=f"{_pretty(arch)} weights")
    if not isinstance(state, dict):
        raise WeightsUnavailableError(f"{path}: expected a {arch} state dict, found {type(state).__name__}.")
    return state


def _features(state: dict, n_layers: int) -> dict[str, torch.Tensor]:
    """``features.N.*`` tensors with N < n_layers (the files also hold the classifier and deeper layers)."""
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        parts = k.split(".") if isinstance(k, str) else []
        if len(parts) >= 3 and parts[0] == "features" and parts[1].isdigit() and int(parts[1]) < n_layers \
                and isinstance(v, torch.Tensor):
            out[k] = v
    return out


def _identify(path: Path, arch: str) -> KnownWeights | None:
    """The known checkpoint this file is (by its SHA-256 prefix); refuses a known file name with another hash."""
    from .checkpoint import file_sha256

    digest = file_sha256(path)
    for known in KNOWN_WEIGHTS.values():
        if digest.startswith(known.sha256_prefix):
            if known.arch != arch:
                raise WeightsUnavailableError(
                    f"{path}: this is {known.origin} ({known.arch}), but a {arch} is needed here. Pass the "
                    f"{arch} weights, e.g. {KNOWN_WEIGHTS[(arch, known.name)].filename}.")
            return known
    for known in KNOWN_WEIGHTS.values():
        if path.name == known.filename:
            raise WeightsUnavailableError(
                f"{path}: SHA-256 starts {digest[:8]}, but {known.filename} must start {known.sha256_prefix}: "
                f"the file is damaged or incomplete. Download {known.url} again.")
    return None


def _fetch_known(known: KnownWeights) -> Path:
    """The cached file of ``known`` ($TORCH_HOME/hub/checkpoints), downloaded once and hash-checked."""
    cache = Path(torch.hub.get_dir()) / "checkpoints" / known.filename
    if not cache.is_file():
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            # torch.hub writes to a temp file, checks the SHA-256 prefix, then renames: no partial file remains
            torch.hub.download_url_to_file(known.url, str(cache), hash_prefix=known.sha256_prefix, progress=True)
        except Exception as exc:
            raise WeightsUnavailableError(
                f"cannot obtain the {known.arch} '{known.name}' weights ({known.origin}; {type(exc).__name__}: "
                f"{exc}). Fix: download {known.url} on a connected machine and pass --vgg-weights PATH, or put "
                f"it at {cache}; for tests and offline smoke runs only, pass --vgg-weights random."
            ) from exc
    return cache


def load_vgg(arch: str = "vgg16", weights: WeightsSpec = "imagenet", *,
             preprocessing: Preprocessing | None = None, last_layer: str | None = None,
             device: torch.device | str = "cpu") -> VGGFeatures:
    """Build a frozen VGG loss network.

    ``weights``: a name of :data:`KNOWN_WEIGHTS` (``"imagenet"``: torchvision's; ``"caffe"``: the Caffe model
    converted by jcjohnson/pytorch-vgg), downloaded once through ``torch.hub``'s cache and hash-checked; a path
    to a ``.pth`` state dict with torchvision's key names (a file of a known checkpoint is recognised by its
    hash); or ``"random"``, which warns loudly because a random network's losses do not measure style.

    ``preprocessing`` is used for weights whose own convention is unknown (a foreign path, random weights;
    default ``torchvision``). Known weights always get the preprocessing they were trained with.
    """
    if arch not in CONFIGS:
        raise UsageError(f"unknown VGG architecture {arch!r}; expected one of {sorted(CONFIGS)}.")
    spec = str(weights)
    known: KnownWeights | None = None
    if spec == "random":
        warnings.warn(RANDOM_WEIGHTS_WARNING.replace("VGG-16", _pretty(arch)), stacklevel=2)
        log.warning(RANDOM_WEIGHTS_WARNING.replace("VGG-16", _pretty(arch)))
        state = None
    elif (arch, spec) in KNOWN_WEIGHTS:
        known = KNOWN_WEIGHTS[(arch, spec)]
        path = _fetch_known(known)
        if _identify(path, arch) is not known:
            raise WeightsUnavailableError(
                f"{path}: the cached file does not have the SHA-256 prefix {known.sha256_prefix} of {known.url}; "
                "delete it and run again to download it anew.")
        state = _load_state(path, arch)
    else:
        path = Path(weights)
        if not path.is_file():
            raise WeightsUnavailableError(
                f"{path}: no such {_pretty(arch)} weights file. Pass --vgg-weights "
                f"{' / '.join(n for (a, n) in KNOWN_WEIGHTS if a == arch)}, a path, or random.")
        known = _identify(path, arch)
        state = _load_state(path, arch)
    chosen: Preprocessing = known.preprocessing if known else (preprocessing or "torchvision")
    if known and preprocessing and preprocessing != known.preprocessing:
        log.warning("the VGG weights are %s, trained with %s preprocessing: using that, not %s", known.origin,
                    known.preprocessing, preprocessing)
    net = VGGFeatures(arch, chosen, last_layer)
    if state is not None:
        try:
            missing, _unexpected = net.load_state_dict(_features(state, len(net.features)), strict=False)
        except RuntimeError as exc:  # a tensor of the wrong shape
            first = (str(exc).strip().splitlines() or [""])[-1].strip()[:200]
            raise WeightsUnavailableError(
                f"{arch} weights {weights}: do not fit {arch} ({first}); expected torchvision's {arch} state dict."
            ) from exc
        if missing:
            raise WeightsUnavailableError(
                f"{_pretty(arch)} weights {weights}: missing {len(missing)} tensors (first: "
                f"{missing[0]}); expected torchvision's {arch} state dict (keys features.N.weight/bias)."
            )
        bad = next((k for k, v in net.state_dict().items() if not torch.isfinite(v).all()), None)
        if bad is not None:
            raise WeightsUnavailableError(f"{arch} weights {weights}: tensor {bad} holds NaN or Inf values.")
        net.is_random = False
        net.weights_name = known.name if known and spec == known.name else spec
    return net.freeze().to(device)


def load_vgg16(weights: WeightsSpec = "imagenet", *, device: torch.device | str = "cpu",
               preprocessing: Preprocessing | None = None) -> VGGFeatures:
    """VGG-16 up to relu4_3: :func:`load_vgg` with ``arch="vgg16"``."""
    return load_vgg("vgg16", weights, preprocessing=preprocessing, device=device)
