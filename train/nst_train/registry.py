"""One registry of network families: ``@register`` puts a small preset function under its name, and
:func:`create_model` builds a network by that name (the shape of timm's ``_registry``/``create_model``).

Presets are functions over one configurable class, not ``if arch == ...`` branches:

=============  ===========================================================  ===================================
name           network                                                      cost (GFLOP per megapixel)
=============  ===========================================================  ===================================
johnson2016    Johnson et al. 2016: trunk 128, 5 residual blocks            308
slim           the same layers with a 32-channel trunk, 5 residual blocks   25 (12x fewer)
adain          Huang & Belongie 2017: VGG-19 encoder to relu4_1 + decoder   any style image (:mod:`nst_train.adain`)
=============  ===========================================================  ===================================

Every TransformerNet preset takes ``channels``/``res_blocks`` (``nst-train --channels/--res-blocks``) and
``styles`` (``nst-train --style a.jpg b.jpg ...``: conditional instance norm over N styles, Dumoulin et al. 2017).
``nst-train`` prints the GFLOP per megapixel of the network it builds; the export writes it to the sidecar.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nst_runtime.errors import UsageError

from .model import DEFAULT_CHANNELS, DEFAULT_RES_BLOCKS, NetShape, TransformerNet, gflop_per_megapixel

__all__ = ["MODELS", "ModelEntry", "create_model", "describe", "model_names", "register", "shape_for"]


@dataclass(frozen=True)
class ModelEntry:
    name: str
    fn: Callable[..., Any]

    @property
    def summary(self) -> str:
        return (inspect.getdoc(self.fn) or "").splitlines()[0]

    @property
    def defaults(self) -> dict[str, Any]:
        return {k: p.default for k, p in inspect.signature(self.fn).parameters.items()
                if p.default is not inspect.Parameter.empty}


MODELS: dict[str, ModelEntry] = {}


def register(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Register ``fn`` under its name (underscores become hyphens) as a network family preset."""
    name = fn.__name__.replace("_", "-")
    if name in MODELS:
        raise ValueError(f"network family {name!r} is registered twice")
    MODELS[name] = ModelEntry(name, fn)
    return fn


def model_names() -> list[str]:
    return sorted(MODELS)


def _entry(name: str) -> ModelEntry:
    if name not in MODELS:
        raise UsageError(f"--arch {name}: unknown network family; expected one of {', '.join(model_names())}.")
    return MODELS[name]


def shape_for(name: str, **overrides: Any) -> NetShape:
    """The TransformerNet shape of preset ``name`` with ``overrides`` (None values ignored)."""
    entry = _entry(name)
    if "channels" not in entry.defaults:
        raise UsageError(f"--arch {name} is not a TransformerNet family; it has no trunk width or residual blocks.")
    given = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(given) - set(entry.defaults))
    if unknown:
        raise UsageError(f"--arch {name} takes {', '.join(sorted(entry.defaults))}, not {', '.join(unknown)}.")
    values = {**entry.defaults, **given}
    return NetShape(channels=int(values["channels"]), res_blocks=int(values["res_blocks"]),
                    styles=int(values.get("styles", 1)), family=name.replace("-", "_"))


def create_model(name: str, **overrides: Any) -> Any:
    """Build the network of family ``name``; ``overrides`` replace the preset's defaults one by one."""
    entry = _entry(name)
    given = {k: v for k, v in overrides.items() if v is not None}
    if "channels" in entry.defaults:
        return TransformerNet.from_shape(shape_for(name, **given))
    return entry.fn(**given)


def describe(shape: NetShape) -> str:
    """``slim (trunk 32, 5 residual blocks, 1 style): 25.1 GFLOP per megapixel``."""
    styles = f"{shape.styles} styles" if shape.styles > 1 else "1 style"
    return (f"{shape.family.replace('_', '-')} (trunk {shape.channels}, {shape.res_blocks} residual blocks, {styles}): "
            f"{gflop_per_megapixel(shape):.1f} GFLOP per megapixel")


@register
def johnson2016(channels: int = DEFAULT_CHANNELS, res_blocks: int = DEFAULT_RES_BLOCKS, styles: int = 1
                ) -> TransformerNet:
    """Johnson et al. 2016's TransformerNet (pytorch/examples' layers and names): trunk 128, 5 residual blocks."""
    return TransformerNet(channels, res_blocks, styles, family="johnson2016")


@register
def slim(channels: int = 32, res_blocks: int = 5, styles: int = 1) -> TransformerNet:
    """The same layers with a 32-channel trunk (outer layers 8 and 16): 12x fewer FLOPs than johnson2016."""
    return TransformerNet(channels, res_blocks, styles, family="slim")


@register
def adain(**options: Any) -> Any:
    """Huang & Belongie 2017: VGG-19 encoder to relu4_1, AdaIN, and a trained decoder; any image is the style."""
    from .adain import AdaINDecoder

    return AdaINDecoder(**options)
