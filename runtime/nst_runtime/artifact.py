"""Checks on a model file made from its sidecar alone, before any backend deserializes it.

A mismatched engine is the one failure that crashes deep inside TensorRT instead of failing cleanly, so
every check that can be made from metadata is made here first: file kind, I/O contract, content hash,
TensorRT version (and, in the TensorRT backend, the GPU's compute capability).
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .errors import BackendUnavailableError, ModelFileError
from .sidecar import Sidecar, read_sidecar, sidecar_path

logger = logging.getLogger(__name__)

ONNX_SUFFIXES = (".onnx",)
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
ArtifactKind = Literal["onnx", "tensorrt"]


@dataclass(frozen=True)
class ModelArtifact:
    """A model file and its sidecar, checked against each other."""

    path: Path
    kind: ArtifactKind
    sidecar: Sidecar


def kind_from_path(path: Path) -> ArtifactKind:
    suffix = path.suffix.lower()
    if suffix in ONNX_SUFFIXES:
        return "onnx"
    if suffix in ENGINE_SUFFIXES:
        return "tensorrt"
    raise ModelFileError(
        f"{path}: expected an ONNX file (.onnx) or a TensorRT engine ({', '.join(ENGINE_SUFFIXES)}), "
        f"got {suffix or 'no suffix'!r}. Fix: pass the file nst-export wrote."
    )


def file_sha256(path: Path, *, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def onnx_fallback_for(path: Path) -> Path | None:
    """The ONNX file an engine was built from, if it lies beside it (``m.fp16.engine`` -> ``m.fp16.onnx``)."""
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    candidates = [path.with_name(stem + ".onnx")]
    if stem.endswith(".fp16"):
        candidates.append(path.with_name(stem[: -len(".fp16")] + ".onnx"))
    for cand in candidates:
        if cand.is_file() and sidecar_path(cand).is_file():
            return cand
    return None


def fallback_hint(path: Path) -> str:
    onnx = onnx_fallback_for(path)
    if onnx is not None:
        return f" Or run the ONNX file instead, which works anywhere: {onnx} (--backend onnxruntime)."
    return " Or run the engine's ONNX file with --backend onnxruntime, which works anywhere."


def open_artifact(path: str | os.PathLike[str], *, verify_hash: bool = True) -> ModelArtifact:
    """Find ``path`` and its sidecar and check them against each other (no backend involved)."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"{path}: no such model file. Fix: check the path (an .onnx file or an engine).")
    if path.is_dir():
        raise ModelFileError(f"{path}: is a folder; expected an .onnx file or a TensorRT engine.")
    kind = kind_from_path(path)
    meta = read_sidecar(path)
    if meta.kind != kind:
        raise ModelFileError(
            f"{path}: the sidecar {sidecar_path(path).name} describes a {meta.kind!r} artifact, but the file "
            f"name says {kind!r}. Fix: the sidecar belongs to another file; re-export."
        )
    for role, spec in (("input", meta.input), ("output", meta.output)):
        if spec.dtype != "uint8" or spec.layout != "NHWC" or spec.channels != "RGB":
            raise ModelFileError(
                f"{path}: the {role} {spec.name!r} is {spec.dtype} {spec.layout} {spec.channels}; this runtime "
                "expects uint8 NHWC RGB (the nst deployment contract). Fix: re-export with nst-export."
            )
    if meta.min_size < 1:
        raise ModelFileError(f"{path}: sidecar min_size {meta.min_size} must be >= 1. Fix: re-export.")
    if verify_hash:
        if meta.artifact_sha256 is None:
            logger.warning("%s: the sidecar holds no artifact_sha256; the file cannot be verified", path)
        else:
            actual = file_sha256(path)
            if actual != meta.artifact_sha256:
                raise ModelFileError(
                    f"{path}: content hash {actual[:12]}… does not match the sidecar's "
                    f"{meta.artifact_sha256[:12]}…: the file was changed, truncated or replaced after export. "
                    "Fix: re-export it (or restore the matching sidecar)."
                    + (fallback_hint(path) if kind == "tensorrt" else "")
                )
    return ModelArtifact(path, kind, meta)


def parse_version(text: str) -> tuple[int, ...]:
    parts: list[int] = []
    for piece in text.split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def check_tensorrt_version(path: Path, meta: Sidecar, installed: str) -> None:
    """Refuse an engine the installed TensorRT cannot deserialize.

    A plain engine needs the same major.minor.patch it was built with. A version-compatible engine (built
    for ``tensorrt_lean``) runs on the same major version, the build's or a newer one.
    """
    if not meta.tensorrt_version:
        raise ModelFileError(
            f"{path}: the sidecar does not say which TensorRT built the engine. Fix: re-export with nst-export."
            + fallback_hint(path)
        )
    built, have = parse_version(meta.tensorrt_version), parse_version(installed)
    if meta.version_compatible:
        ok = bool(built) and bool(have) and built[0] == have[0] and have >= built
        rule = f"TensorRT {built[0] if built else '?'}.x at least {meta.tensorrt_version}"
    else:
        ok = built[:3] == have[:3]
        rule = f"exactly TensorRT {'.'.join(map(str, built[:3]))}"
    if not ok:
        raise BackendUnavailableError(
            f"{path}: built with TensorRT {meta.tensorrt_version}"
            f"{' (version-compatible)' if meta.version_compatible else ''}; this machine has {installed}, and "
            f"the engine needs {rule}. Fix: rebuild the engine here (nst-export engine …)." + fallback_hint(path)
        )


def check_compute_capability(path: Path, meta: Sidecar, device_cc: str, device_name: str) -> None:
    """Refuse an engine built for another GPU architecture (engines are not portable across them)."""
    if meta.compute_capability is None:
        raise ModelFileError(
            f"{path}: the sidecar does not say which GPU architecture the engine was built for. "
            "Fix: re-export with nst-export." + fallback_hint(path)
        )
    if meta.compute_capability != device_cc:
        raise BackendUnavailableError(
            f"{path}: built for compute capability {meta.compute_capability}"
            f"{f' ({meta.gpu_name})' if meta.gpu_name else ''}; this GPU is {device_name} with compute "
            f"capability {device_cc}. Engines only run on the architecture they were built for. Fix: rebuild "
            "the engine on this GPU (nst-export engine …)." + fallback_hint(path)
        )


def fp16_sibling(path: Path) -> Path | None:
    """``model.onnx`` -> ``model.fp16.onnx`` when it exists with a sidecar (used on GPU providers)."""
    if path.name.endswith(".fp16.onnx"):
        return None
    cand = path.with_name(path.name[: -len(".onnx")] + ".fp16.onnx")
    return cand if cand.is_file() and sidecar_path(cand).is_file() else None
