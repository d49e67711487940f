"""The resumable training state: everything ``--resume`` needs to continue a run bit for bit.

It is a separate file from the model checkpoint (``<run dir>/state.pth``), so ``model.pth`` stays a clean
checkpoint for :func:`nst_train.checkpoint.load_checkpoint`. The state holds the TransformerNet weights, the
Adam state, the grad-scaler state, the RNG states (torch CPU, CUDA, numpy, Python), the step, the epoch, the
number of batches of that epoch already consumed, and a *fingerprint* of the options that must not change
across a resume. Everything in it is a tensor or a plain Python value, so it is read with
``torch.load(weights_only=True)``; it is written atomically (temp file, fsync, rename).
"""

from __future__ import annotations

import io
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from nst_runtime.errors import CheckpointError

from .atomic import atomic_write
from .checkpoint import torch_load_plain

STATE_FORMAT = "nst-train-state"
STATE_VERSION = 1

__all__ = ["TrainingState", "capture_rng_state", "load_training_state", "restore_rng_state",
           "save_training_state"]


def capture_rng_state() -> dict[str, Any]:
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": np_name, "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
                  "pos": int(np_pos), "has_gauss": int(np_has_gauss), "cached_gaussian": float(np_gauss)},
        "python": random.getstate(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass(frozen=True)
class TrainingState:
    """A loaded training state (see the module docstring)."""

    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scaler: dict[str, Any]
    rng: dict[str, Any]
    step: int
    epoch: int
    batch_in_epoch: int
    fingerprint: dict[str, Any]
    path: Path


def save_training_state(path: str | os.PathLike[str], *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                        scaler: torch.amp.GradScaler, step: int, epoch: int, batch_in_epoch: int,
                        fingerprint: dict[str, Any]) -> Path:
    payload = {
        "format": STATE_FORMAT,
        "version": STATE_VERSION,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": capture_rng_state(),
        "step": int(step),
        "epoch": int(epoch),
        "batch_in_epoch": int(batch_in_epoch),
        "fingerprint": fingerprint,
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    path = Path(path)
    with atomic_write(path) as f:
        f.write(buf.getvalue())
    return path


def load_training_state(path: str | os.PathLike[str]) -> TrainingState:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"{path}: no training state to resume from (it is written every --checkpoint-every steps and on "
            "Ctrl-C). Start the run without --resume, or pass the --out of the run you want to continue."
        )
    obj = torch_load_plain(path, what="the training state")
    if not isinstance(obj, dict) or obj.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path}: not an nst training state (expected format {STATE_FORMAT!r}).")
    if obj.get("version") != STATE_VERSION:
        raise CheckpointError(f"{path}: training state version {obj.get('version')!r}; this nst reads "
                              f"{STATE_VERSION}. Resume with the nst version that wrote it.")
    try:
        state = TrainingState(model=obj["model"], optimizer=obj["optimizer"], scaler=obj["scaler"], rng=obj["rng"],
                              step=int(obj["step"]), epoch=int(obj["epoch"]),
                              batch_in_epoch=int(obj["batch_in_epoch"]), fingerprint=dict(obj["fingerprint"]),
                              path=path)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: training state lacks {exc}; it was written by another tool.") from exc
    if not (isinstance(state.model, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                  for k, v in state.model.items())):
        raise CheckpointError(f"{path}: the training state's model is not a state dict of named tensors.")
    for name in ("optimizer", "scaler", "rng"):
        if not isinstance(getattr(state, name), dict):
            raise CheckpointError(f"{path}: the training state's {name} entry is not a mapping.")
    if min(state.step, state.epoch, state.batch_in_epoch) < 0:
        raise CheckpointError(f"{path}: negative step, epoch or batch in the training state.")
    return state
