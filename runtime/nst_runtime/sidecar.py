"""Artifact metadata: the JSON sidecar written next to every ONNX file and engine.

``model.fp16.engine`` gets ``model.fp16.engine.json``; ``model.onnx`` gets ``model.onnx.json``. The export
stage writes it (this dataclass, serialized); the runtime reads it before touching the artifact itself.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .errors import ModelFileError

SCHEMA_VERSION = 1
SIDECAR_SUFFIX = ".json"

Precision = Literal["fp32", "fp16"]
ArtifactKind = Literal["onnx", "tensorrt"]


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output. nst graphs take and return uint8 NHWC RGB in [0, 255]."""

    name: str
    dtype: str = "uint8"
    layout: str = "NHWC"
    channels: str = "RGB"
    value_range: tuple[float, float] = (0.0, 255.0)


@dataclass(frozen=True)
class ShapeProfile:
    """TensorRT optimization profile for the input, each shape as (N, H, W) (C is always 3)."""

    min: tuple[int, int, int]
    opt: tuple[int, int, int]
    max: tuple[int, int, int]


@dataclass(frozen=True)
class Sidecar:
    kind: ArtifactKind
    precision: Precision
    input: TensorSpec = field(default_factory=lambda: TensorSpec("input"))
    output: TensorSpec = field(default_factory=lambda: TensorSpec("output"))
    #: smallest H and W the graph accepts; the runtime pads smaller images on the host
    min_size: int = 8
    profile: ShapeProfile | None = None
    opset: int | None = None
    tensorrt_version: str | None = None
    version_compatible: bool = False
    #: built with EXCLUDE_LEAN_RUNTIME: a version-compatible plan without the lean runtime embedded; the host
    #: must load a tensorrt_lean library of the building TensorRT version (IRuntime.load_runtime)
    exclude_lean_runtime: bool = False
    gpu_name: str | None = None
    compute_capability: str | None = None
    artifact_sha256: str | None = None
    checkpoint_sha256: str | None = None
    onnx_sha256: str | None = None
    parity: dict[str, Any] = field(default_factory=dict)
    build_time_s: float | None = None
    architecture: str | None = None
    nst_version: str = "0.1.0"
    created_at: str | None = None
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Sidecar:
        if not isinstance(d, dict):
            raise ValueError(f"expected a JSON object, found {type(d).__name__}")
        version = d.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ValueError(f"schema_version {version!r}; this nst reads {SCHEMA_VERSION}")
        known = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        for key in ("input", "output"):
            if isinstance(kw.get(key), dict):
                spec = dict(kw[key])
                if "value_range" in spec:
                    spec["value_range"] = tuple(spec["value_range"])
                kw[key] = TensorSpec(**spec)
        if isinstance(kw.get("profile"), dict):
            kw["profile"] = ShapeProfile(**{k: tuple(v) for k, v in kw["profile"].items()})
        return cls(**kw)


def sidecar_path(artifact: str | os.PathLike[str]) -> Path:
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + SIDECAR_SUFFIX)


def read_sidecar(artifact: str | os.PathLike[str]) -> Sidecar:
    """Read the sidecar of ``artifact``; :class:`ModelFileError` naming the file if missing or malformed."""
    path = sidecar_path(artifact)
    if not path.is_file():
        raise ModelFileError(
            f"{artifact}: no sidecar {path.name} beside it. Re-export with nst-export, which writes both."
        )
    try:
        return Sidecar.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, TypeError) as exc:
        raise ModelFileError(f"{path}: malformed sidecar ({exc}). Re-export with nst-export.") from exc
