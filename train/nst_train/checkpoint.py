"""Checkpoint format: the TransformerNet state dict plus metadata, read without unrestricted unpickling.

A ``.pth`` file holds ``{"format": "nst-checkpoint", "version": 1, "architecture": ..., "metadata": {...},
"state_dict": {...}}`` and is read with ``torch.load(weights_only=True)``. A ``.safetensors`` file holds the
tensors with the metadata as JSON in its header. Plain state dicts from pytorch/examples'
``fast_neural_style`` load too, including old ones carrying InstanceNorm ``running_mean``/``running_var``.
A checkpoint with a NaN or Inf weight is refused, naming the tensor (it would export, run and output black).
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from nst_runtime.errors import CheckpointError, NstError, UsageError

from .atomic import atomic_write
from .model import ARCHITECTURE, NetShape, TransformerNet

FORMAT = "nst-checkpoint"
FORMAT_VERSION = 1
_STALE_NORM_KEY = re.compile(r"in\d+\.running_(mean|var)$|\.num_batches_tracked$")


@dataclass(frozen=True)
class CheckpointMetadata:
    """What a checkpoint says about how it was made. Every field is optional for imported checkpoints."""

    architecture: str = ARCHITECTURE
    style_image_sha256: str | None = None
    loss_weights: dict[str, Any] = field(default_factory=dict)
    image_size: int | None = None
    steps: int | None = None
    vgg_weights: str | None = None
    nst_version: str = "0.1.0"
    source: str = "nst"
    #: the training recipe (``nst_train.recipes``) and every effective setting of the run
    recipe: str | None = None
    training: dict[str, Any] = field(default_factory=dict)
    #: the weights the run started from (``--init``): path, sha256, their source
    init: dict[str, Any] | None = None
    #: multi-style networks: one name per style, in the order of the style vector (the style files' stems)
    style_names: list[str] = field(default_factory=list)
    #: a distilled network: the teacher checkpoint (path, sha256, architecture)
    teacher: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CheckpointMetadata:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass(frozen=True)
class Checkpoint:
    state_dict: dict[str, torch.Tensor]
    metadata: CheckpointMetadata
    path: Path | None = None
    #: SHA-256 of the file it was read from (what artifacts record as their checkpoint_sha256)
    sha256: str | None = None

    @property
    def shape(self) -> NetShape:
        """The network's shape, from the recorded architecture (checked against the tensors at load)."""
        return NetShape.from_architecture(self.metadata.architecture)

    def model(self, device: torch.device | str = "cpu") -> TransformerNet:
        net = TransformerNet.from_shape(self.shape)
        net.load_state_dict(self.state_dict)
        return net.to(device).eval()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file (nst_runtime.artifact.file_sha256: regular files only)."""
    from nst_runtime.artifact import file_sha256 as _file_sha256

    return _file_sha256(Path(path))


def checkpoint_sha256(checkpoint: str | os.PathLike[str] | Checkpoint) -> str:
    """SHA-256 of a checkpoint file, or of the file a loaded :class:`Checkpoint` was read from."""
    if isinstance(checkpoint, Checkpoint):
        if checkpoint.sha256 is None:
            raise CheckpointError("a checkpoint built in memory has no file hash; save it first (save_checkpoint).")
        return checkpoint.sha256
    return file_sha256(checkpoint)


def save_checkpoint(path: str | os.PathLike[str], model: TransformerNet | dict[str, torch.Tensor],
                    metadata: CheckpointMetadata) -> Path:
    """Write atomically; ``.safetensors`` by suffix, otherwise a ``torch.save`` file."""
    path = Path(path)
    if isinstance(model, TransformerNet) and metadata.architecture != model.architecture:
        metadata = dataclasses.replace(metadata, architecture=model.architecture)
    state = model.state_dict() if isinstance(model, torch.nn.Module) else model
    state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save as st_save

        blob = st_save(state, metadata={"format": FORMAT, "version": str(FORMAT_VERSION),
                                        "metadata": json.dumps(metadata.to_dict())})
        with atomic_write(path) as f:
            f.write(blob)
    else:
        payload = {"format": FORMAT, "version": FORMAT_VERSION, "architecture": metadata.architecture,
                   "metadata": metadata.to_dict(), "state_dict": state}
        buf = io.BytesIO()
        torch.save(payload, buf)
        with atomic_write(path) as f:
            f.write(buf.getvalue())
    return path


def _check_architecture(path: Path, state: dict[str, torch.Tensor],
                        shape: NetShape | None = None) -> dict[str, torch.Tensor]:
    state = {k: v for k, v in state.items() if not _STALE_NORM_KEY.search(k)}
    shape = shape or NetShape()
    expected = TransformerNet.from_shape(shape).state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        raise CheckpointError(
            f"{path}: not a TransformerNet ({shape.architecture}) checkpoint: parameter names differ, "
            f"{'; '.join(parts)}. Expected an nst checkpoint or a pytorch/examples fast_neural_style state dict."
        )
    for k, ref in expected.items():
        if tuple(state[k].shape) != tuple(ref.shape):
            raise CheckpointError(
                f"{path}: parameter {k} has shape {tuple(state[k].shape)}, TransformerNet expects "
                f"{tuple(ref.shape)}: another architecture or width."
            )
        if not state[k].is_floating_point():
            raise CheckpointError(f"{path}: parameter {k} has dtype {state[k].dtype}, expected a float tensor.")
    out = {k: state[k].float() for k in expected}
    for k, t in out.items():
        finite = torch.isfinite(t)
        if not bool(finite.all()):
            nan, inf = int(torch.isnan(t).sum()), int(torch.isinf(t).sum())
            raise CheckpointError(
                f"{path}: parameter {k} holds {nan} NaN and {inf} Inf values of {t.numel()}: the network diverged "
                "(or the file is damaged) and would output garbage. Use an earlier checkpoint or retrain with a "
                "lower learning rate.")
    return out


def _describe_load_error(exc: BaseException) -> str:
    """One line for a failed ``torch.load(weights_only=True)`` (torch's own messages run to many lines and
    end by suggesting ``weights_only=False``, which is exactly what must not be done with an unknown file)."""
    text = str(exc)
    if "Weights only load failed" in text or "WeightsUnpickler" in text or "GLOBAL" in text:
        detail = next((line.strip() for line in text.splitlines()
                       if "GLOBAL" in line or line.strip().startswith(("Unsupported", "Trying to load"))), "")
        detail = detail or next((line.split("WeightsUnpickler error:", 1)[1].strip() for line in text.splitlines()
                                 if "WeightsUnpickler error:" in line), "")
        return ("refused: its pickle holds more than tensors and plain values"
                + (f" ({detail.rstrip('.')})" if detail else "")
                + "; nst never unpickles arbitrary objects, since that could run code")
    if isinstance(exc, EOFError):
        return "unexpected end of file (truncated?)"
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if "central directory" in text or "zip archive" in text:
        return f"corrupt or truncated file ({first[:160]})"
    return f"not a readable PyTorch file ({type(exc).__name__}: {first[:160]})" if first else (
        f"not a readable PyTorch file ({type(exc).__name__})")


def torch_load_plain(path: Path, *, what: str = "checkpoint", error: type[NstError] = CheckpointError) -> Any:
    """``torch.load(weights_only=True)`` on CPU; any failure becomes one ``error`` line naming the file.

    Only tensors, containers and plain values are unpickled: a file whose pickle would call a function or
    build an object is refused before anything in it runs.
    """
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about pickle protocols it was not written with
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise error(f"{path}: cannot load {what}: {_describe_load_error(exc)}.") from exc


def load_checkpoint(path: str | os.PathLike[str] | Checkpoint) -> Checkpoint:
    """Read an nst checkpoint or a pytorch/examples state dict. Raises :class:`CheckpointError` with the file
    name and the problem for anything else; never runs code from the file. A :class:`Checkpoint` already
    loaded is returned as it is (callers read a file once and pass the result down)."""
    if isinstance(path, Checkpoint):
        return path
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file.")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the file is empty (an interrupted copy or download?).")
    meta: dict[str, Any] = {}
    if path.suffix == ".safetensors":
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                header = f.metadata() or {}
                state = {k: f.get_tensor(k) for k in f.keys()}
            if "metadata" in header:
                meta = json.loads(header["metadata"])
        except Exception as exc:
            raise CheckpointError(f"{path}: cannot read as safetensors ({type(exc).__name__}: {exc}).") from exc
    else:
        obj = torch_load_plain(path, what="checkpoint")
        if not isinstance(obj, dict):
            raise CheckpointError(f"{path}: expected a state dict, found {type(obj).__name__}.")
        if obj.get("format") == FORMAT:
            if obj.get("version") != FORMAT_VERSION:
                raise CheckpointError(
                    f"{path}: checkpoint format version {obj.get('version')!r}; this nst reads {FORMAT_VERSION}."
                )
            _shape_of(path, obj.get("architecture"))  # refuses an architecture this nst does not build
            meta = obj.get("metadata") or {}
            if isinstance(meta, dict):
                meta = {**meta, "architecture": obj.get("architecture")}
            state = obj.get("state_dict")
            if not isinstance(state, dict):
                raise CheckpointError(f"{path}: nst checkpoint without a state_dict.")
        else:
            state = obj
            meta = {"source": "pytorch/examples fast_neural_style (plain state dict)"}
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise CheckpointError(f"{path}: the state dict holds entries that are not named tensors.")
    if isinstance(meta, dict) and "architecture" not in meta:  # a plain state dict: its tensors tell the shape
        meta = {**meta, "architecture": NetShape.from_state_dict(state).architecture}
    metadata = _metadata(path, meta)
    state = _check_architecture(path, state, _shape_of(path, metadata.architecture))
    return Checkpoint(state_dict=state, metadata=metadata, path=path, sha256=file_sha256(path))


def _shape_of(path: Path, architecture: Any) -> NetShape:
    if isinstance(architecture, str) and architecture.startswith("adain/"):
        raise CheckpointError(f"{path}: an AdaIN decoder checkpoint ({architecture}); it is read by "
                              "nst_train.adain.load_adain_checkpoint (nst-export exports it).")
    try:
        return NetShape.from_architecture(architecture)
    except (ValueError, UsageError) as exc:
        raise CheckpointError(f"{path}: architecture {architecture!r}, which this nst does not build ({exc}).") from None


def _metadata(path: Path, meta: Any) -> CheckpointMetadata:
    """The metadata of a checkpoint; malformed metadata is a CheckpointError, not a crash."""
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: checkpoint metadata is a {type(meta).__name__}, expected a mapping.")
    try:
        return CheckpointMetadata.from_dict(meta)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: malformed checkpoint metadata ({exc}).") from exc
