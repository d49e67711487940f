"""Checks on a model file made from its sidecar alone, before any backend deserializes it.

A mismatched engine is the one failure that crashes deep inside TensorRT instead of failing cleanly, so
every check that can be made from metadata is made here first: file kind, I/O contract, content hash,
TensorRT version (and, in the TensorRT backend, the GPU's compute capability).
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from .errors import BackendUnavailableError, ModelFileError
from .files import check_regular, open_regular
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
    #: an engine's bytes, read once and checked against the sidecar's hash (``open_artifact(keep_bytes=True)``):
    #: the loader deserializes exactly these, without reading or hashing the file again
    verified_bytes: bytes | None = field(default=None, repr=False, compare=False)


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
    """SHA-256 of a regular file (a FIFO or device is refused, not read for ever)."""
    h = hashlib.sha256()
    with open_regular(path, what="a model file", error=ModelFileError) as f:
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


def open_artifact(path: str | os.PathLike[str], *, verify_hash: bool = True, role: str = "stylize",
                  keep_bytes: bool = False) -> ModelArtifact:
    """Find ``path`` and its sidecar and check them against each other (no backend involved).

    ``keep_bytes``: read the file once and keep the bytes whose hash was checked (``verified_bytes``; for an
    engine, which is deserialized from memory): the file is hashed once per open.

    ``role``: ``"stylize"`` for a model to run, ``"tiling"`` for the tiling graph beside it, ``"adain-style"``
    for an AdaIN model's style graph (its outputs are float statistics, not an image).
    """
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"{path}: no such model file. Fix: check the path (an .onnx file or an engine).")
    if path.is_dir():
        raise ModelFileError(f"{path}: is a folder; expected an .onnx file or a TensorRT engine.")
    kind = kind_from_path(path)
    check_regular(path, what="a model file", error=ModelFileError)  # before any read: a FIFO never ends
    meta = read_sidecar(path)
    if meta.kind != kind:
        raise ModelFileError(
            f"{path}: the sidecar {sidecar_path(path).name} describes a {meta.kind!r} artifact, but the file "
            f"name says {kind!r}. Fix: the sidecar belongs to another file; re-export."
        )
    if meta.role != role:
        fix = ("the tiling graph is found beside the model, not opened on its own. Fix: pass NAME.onnx or the "
               "engine." if meta.role == "tiling" else "Fix: re-export; nst-export writes NAME.tiling.onnx.")
        raise ModelFileError(f"{path}: its sidecar says role {meta.role!r}; expected {role!r}: {fix}")
    specs = [("input", meta.input)] + ([("output", meta.output)] if role != "adain-style" else [])
    for io, spec in specs:
        if spec.dtype != "uint8" or spec.layout != "NHWC" or spec.channels != "RGB":
            raise ModelFileError(
                f"{path}: the {io} {spec.name!r} is {spec.dtype} {spec.layout} {spec.channels}; this runtime "
                "expects uint8 NHWC RGB (the nst deployment contract). Fix: re-export with nst-export."
            )
    if meta.min_size < 1:
        raise ModelFileError(f"{path}: sidecar min_size {meta.min_size} must be >= 1. Fix: re-export.")
    data = None
    if verify_hash:
        if meta.artifact_sha256 is None:
            logger.warning("%s: the sidecar holds no artifact_sha256; the file cannot be verified", path)
        else:
            if keep_bytes:
                with open_regular(path, what="a model file", error=ModelFileError) as f:
                    data = f.read()
                actual = hashlib.sha256(data).hexdigest()
            else:
                actual = file_sha256(path)
            if actual != meta.artifact_sha256:
                raise ModelFileError(
                    f"{path}: content hash {actual[:12]}… does not match the sidecar's "
                    f"{meta.artifact_sha256[:12]}…: the file was changed, truncated or replaced after export. "
                    "Fix: re-export it (or restore the matching sidecar)."
                    + (fallback_hint(path) if kind == "tensorrt" else "")
                )
    if kind == "onnx":
        check_onnx_external_data(path)
    return ModelArtifact(path, kind, meta, data)


# --------------------------------------------------------------------------------------------------------------
# ONNX external data. A tensor may keep its bytes in another file named by ``external_data["location"]``; a
# hostile file could name ``../../home/user/.ssh/id_rsa`` or ``/etc/shadow`` and have the file's bytes read
# into weights (and so, through the output, leak them). onnxruntime >= 1.20 refuses such paths itself, but the
# runtime supports older ones and TensorRT's parser, and the sidecar hash does not cover external files, so the
# runtime checks every location itself, without importing onnx: a few protobuf messages are walked by field
# number (onnx.proto: ModelProto.graph=7, .training_info=20, .functions=25; GraphProto.node=1,
# .initializer=5, .sparse_initializer=15; NodeProto.attribute=5; AttributeProto.t=5, .g=6, .tensors=10,
# .graphs=11, .sparse_tensor=22, .sparse_tensors=23; SparseTensorProto.values=1, .indices=2;
# TensorProto.external_data=13; StringStringEntryProto.key=1, .value=2; TrainingInfoProto.initialization=1,
# .algorithm=2; FunctionProto.node=7, .attribute_proto=11).

_ONNX_CHILDREN: dict[str, dict[int, str]] = {
    "model": {7: "graph", 20: "training", 25: "function"},
    "training": {1: "graph", 2: "graph"},
    "function": {7: "node", 11: "attribute"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},
    "tensor": {13: "entry"},
}
_MAX_ONNX_DEPTH = 100  # protobuf's own default recursion limit: a deeper file fails to parse anyway


class _Malformed(Exception):
    pass


class _TooDeep(Exception):
    pass


def _varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise _Malformed("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _skip_group(buf: memoryview, pos: int, end: int, field: int, depth: int) -> int:
    if depth > _MAX_ONNX_DEPTH:
        raise _TooDeep(f"groups nested deeper than {_MAX_ONNX_DEPTH}")
    while pos < end:
        key, pos = _varint(buf, pos, end)
        inner, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _varint(buf, pos, end)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            length, pos = _varint(buf, pos, end)
            pos += length
        elif wire == 3:
            pos = _skip_group(buf, pos, end, inner, depth + 1)
        elif wire == 4 and inner == field:
            return pos
        else:
            raise _Malformed(f"wire type {wire} in a group")
    raise _Malformed("unterminated group")


def _walk(buf: memoryview, pos: int, end: int, kind: str, depth: int, found: list[str]) -> None:
    if depth > _MAX_ONNX_DEPTH:
        raise _TooDeep(f"messages nested deeper than {_MAX_ONNX_DEPTH}")
    children = _ONNX_CHILDREN.get(kind, {})
    entry: dict[int, bytes] = {}
    while pos < end:
        key, pos = _varint(buf, pos, end)
        field, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _varint(buf, pos, end)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 3:  # a group (legal for unknown fields, and protobuf's own parser skips it): skip it too
            pos = _skip_group(buf, pos, end, field, depth + 1)
        elif wire == 2:
            length, pos = _varint(buf, pos, end)
            if pos + length > end:
                raise _Malformed("a field runs past the end of its message")
            if kind == "entry" and field in (1, 2):
                entry[field] = bytes(buf[pos:pos + length])
            elif field in children:
                _walk(buf, pos, pos + length, children[field], depth + 1, found)
            pos += length
        else:  # an end-group without its start, or wire types 6/7: not protobuf
            raise _Malformed(f"wire type {wire}")
        if pos > end:
            raise _Malformed("a field runs past the end of its message")
    if kind == "entry" and entry.get(1) == b"location":
        found.append(entry.get(2, b"").decode("utf-8", "replace"))


def onnx_external_data_locations(path: Path) -> list[str]:
    """Every ``external_data`` location named in the ONNX file ``path``.

    The scan accepts everything protobuf's parser accepts (unknown fields, groups). A file that is not
    well-formed protobuf returns what was found before the damage: no parser can load such a file, so it
    cannot read external data either, and the backend reports it in its own words."""
    import mmap

    found: list[str] = []
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return found
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            view = memoryview(mm)
            try:
                _walk(view, 0, len(view), "model", 0, found)
            except _Malformed as exc:
                logger.debug("%s: not well-formed protobuf (%s); leaving the verdict to the backend", path, exc)
            except _TooDeep as exc:  # cannot be scanned to the end, so it cannot be cleared: refuse it
                raise ModelFileError(f"{path}: {exc}; refused (no exported model nests that deep). "
                                     "Fix: re-export with nst-export.") from None
            finally:
                view.release()
    return found


def check_onnx_external_data(path: Path) -> None:
    """Refuse an ONNX file whose tensors read external data from outside its own folder."""
    folder = path.resolve().parent
    for location in onnx_external_data_locations(path):
        if "\0" in location or not location:
            raise ModelFileError(f"{path}: a tensor names an invalid external data location {location[:80]!r}; "
                                 "the file is corrupt. Fix: re-export with nst-export.")
        target = Path(location)
        escapes = target.is_absolute() or location.startswith(("/", "\\")) or ":" in location[:3]
        if not escapes:
            try:
                resolved = (folder / target).resolve()
            except (OSError, RuntimeError, ValueError):  # symlink loops, names too long
                resolved = None
            escapes = resolved is None or (resolved != folder and folder not in resolved.parents)
        if escapes:
            raise ModelFileError(
                f"{path}: a tensor reads external data from {location!r}, outside the model's folder; refused "
                "(a model may only read data files beside it). Fix: re-export the model self-contained "
                "(nst-export never writes external data)."
            )
        logger.warning("%s: reads external data from %s, which the sidecar's hash does not cover", path, location)


def parse_version(text: str) -> tuple[int, ...]:
    parts: list[int] = []
    for piece in text.split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def check_tensorrt_version(path: Path, meta: Sidecar, installed: str) -> None:
    """Refuse an engine the installed TensorRT cannot deserialize, by TensorRT's own rules.

    * a plain engine: exactly the TensorRT (major.minor.patch) that built it;
    * a version-compatible engine that embeds the lean runtime (``VERSION_COMPATIBLE`` alone, nst's default
      for ``--version-compatible``): the same major version, the build's release or a newer one;
    * a version-compatible engine built with ``EXCLUDE_LEAN_RUNTIME``: only a lean runtime of the very
      version that built it (TensorRT's ``Runtime.load_runtime``: "built with the same version of TensorRT
      as the loaded runtime library"; trtexec ``--excludeLeanRuntime``), so exactly that version here too.
    """
    if not meta.tensorrt_version:
        raise ModelFileError(
            f"{path}: the sidecar does not say which TensorRT built the engine. Fix: re-export with nst-export."
            + fallback_hint(path)
        )
    built, have = parse_version(meta.tensorrt_version), parse_version(installed)
    exact = f"exactly TensorRT {'.'.join(map(str, built[:3]))}"
    if meta.version_compatible and not meta.exclude_lean_runtime:
        ok = bool(built) and bool(have) and built[0] == have[0] and have >= built
        rule = f"TensorRT {built[0] if built else '?'}.x, {meta.tensorrt_version} or newer"
        kind = " (version-compatible, lean runtime embedded)"
        fix = "Fix: install a TensorRT of that range, or rebuild the engine here (nst-export …)."
    elif meta.version_compatible:
        ok = len(built) >= 3 and built[:3] == have[:3]
        rule = f"{exact}: it was built without its lean runtime (--exclude-lean-runtime)"
        kind = " (version-compatible, lean runtime excluded)"
        fix = ("Fix: install that TensorRT version (or its tensorrt-lean), or rebuild the engine with "
               "--version-compatible alone, which embeds the lean runtime and runs on later releases.")
    else:
        ok = len(built) >= 3 and built[:3] == have[:3]
        rule, kind = exact, ""
        fix = "Fix: rebuild the engine here (nst-export …), or build it with --version-compatible."
    if not ok:
        raise BackendUnavailableError(
            f"{path}: built with TensorRT {meta.tensorrt_version}{kind}; this machine has {installed}, and the "
            f"engine needs {rule}. {fix}" + fallback_hint(path)
        )


def engine_needs_host_code(path: Path, meta: Sidecar, *, allow_engine_host_code: bool) -> bool:
    """Whether deserializing this engine runs code from the file on the host, refused unless allowed.

    A version-compatible plan that embeds TensorRT's lean runtime carries that runtime as host code, and
    TensorRT loads it only when ``IRuntime.engine_host_code_allowed`` is set. The sidecar's hash is a checksum
    the supplier chose, not a signature, so only the caller can decide to trust such a file:
    ``allow_engine_host_code=True`` (``--allow-engine-host-code``). Plans without it (plain, or built with
    ``EXCLUDE_LEAN_RUNTIME``) are deserialized with host code disallowed.
    """
    needs = meta.version_compatible and not meta.exclude_lean_runtime
    if needs and not allow_engine_host_code:
        raise ModelFileError(
            f"{path}: this version-compatible engine embeds TensorRT's lean runtime, i.e. executable code that "
            "runs on this machine when the file is loaded, and nst does not run code from a model file without "
            "being told to. Fix: if you trust where the file came from, pass --allow-engine-host-code "
            "(Stylizer.open(..., allow_engine_host_code=True)); or rebuild it without --version-compatible."
            + fallback_hint(path)
        )
    return needs


def check_engine_hash_present(path: Path, meta: Sidecar, *, verify_hash: bool) -> None:
    """Engines are executable artifacts: one whose sidecar holds no hash is not deserialized unverified."""
    if verify_hash and not meta.artifact_sha256:
        raise ModelFileError(
            f"{path}: the sidecar holds no artifact_sha256, so the engine cannot be verified, and a TensorRT "
            "engine is deserialized into native code paths. Fix: re-export it with nst-export (which records "
            "the hash), or, if you trust the file, pass --no-verify (Stylizer.open(..., verify_hash=False))."
            + fallback_hint(path)
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
