"""nst training stage: TransformerNet, VGG-16 perceptual losses, the training loop and the Gatys baseline.

The names below are importable from here but loaded on first use, so ``import nst_train`` (and with it the
``nst-train``/``nst-gatys`` commands' ``--help``) needs no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ARCHITECTURE": "model",
    "Checkpoint": "checkpoint",
    "CheckpointMetadata": "checkpoint",
    "GatysResult": "gatys",
    "IterationRecord": "gatys",
    "LossWeights": "losses",
    # the function ``train`` stays in ``nst_train.train``: exporting it here would shadow that submodule
    "TrainConfig": "train",
    "TrainResult": "train",
    "TransformerNet": "model",
    "VGG16Features": "vgg",
    "count_flops": "model",
    "gatys_stylize": "gatys",
    "gram_matrix": "losses",
    "load_checkpoint": "checkpoint",
    "load_image_tensor": "imageio",
    "load_vgg16": "vgg",
    "perceptual_loss": "losses",
    "save_checkpoint": "checkpoint",
    "save_image_tensor": "imageio",
    "total_variation": "losses",
    "write_sample_content": "samples",
    "write_sample_style": "samples",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'nst_train' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
