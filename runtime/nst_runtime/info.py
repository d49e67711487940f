"""``nst-info PATH``: what an artifact is, whether it is intact, and what on this machine can run it.

Reads the sidecar (never the model itself, so it is instant on a 100 MB engine except for the hash), checks the
file's SHA-256 against it, lists the files that travel with it (FP16 sibling, tiling graph, the ONNX an engine
was built from), and walks the runtime's table of backends (:mod:`nst_runtime.backends`) for the artifact's
kind on the CPU and on a GPU. A hash mismatch or a backend that cannot run it is reported, not raised: this is
the command to run when ``nst-stylize`` refuses a file.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .artifact import file_sha256, fp16_sibling, kind_from_path, onnx_fallback_for
from .errors import ModelFileError
from .sidecar import Sidecar, read_sidecar, sidecar_path

HashStatus = Literal["verified", "MISMATCH", "not recorded", "not checked"]


@dataclass(frozen=True)
class BackendRow:
    """One row of the backend table for this artifact: can ``backend`` on ``place`` run it here, and if not, why."""

    backend: str
    place: str
    can_run: bool
    reason: str = ""


@dataclass(frozen=True)
class ArtifactInfo:
    path: Path
    kind: str
    size_bytes: int
    sidecar: Sidecar
    hash_status: HashStatus
    sha256: str | None
    #: files that belong with this one: {"fp16 sibling": path, "tiling graph": path, "built from": path}
    companions: dict[str, str] = field(default_factory=dict)
    backends: tuple[BackendRow, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "kind": self.kind, "size_bytes": self.size_bytes,
                "hash": {"status": self.hash_status, "sha256": self.sha256,
                         "sidecar_sha256": self.sidecar.artifact_sha256},
                "companions": self.companions, "backends": [dataclasses.asdict(b) for b in self.backends],
                "sidecar": dataclasses.asdict(self.sidecar)}


def inspect_artifact(path: str | os.PathLike[str], *, verify_hash: bool = True) -> ArtifactInfo:
    """Everything ``nst-info`` prints, as data. Raises :class:`ModelFileError` only when there is nothing to
    describe (no file, not a model suffix, no readable sidecar)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file. Fix: check the path (an .onnx file or an engine).")
    kind = kind_from_path(path)
    meta = read_sidecar(path)
    sha = file_sha256(path) if verify_hash else None
    status: HashStatus = ("not checked" if sha is None else "not recorded" if meta.artifact_sha256 is None
                          else "verified" if sha == meta.artifact_sha256 else "MISMATCH")
    return ArtifactInfo(path=path, kind=kind, size_bytes=path.stat().st_size, sidecar=meta, hash_status=status,
                        sha256=sha, companions=_companions(path, kind), backends=tuple(_backend_rows(path, meta)))


def _companions(path: Path, kind: str) -> dict[str, str]:
    from .tiling import find_tiling_graph

    found: dict[str, str] = {}
    if kind == "onnx":
        sibling = fp16_sibling(path)
        if sibling is not None:
            found["fp16 sibling"] = f"{sibling} (used on GPU providers)"
    else:
        onnx = onnx_fallback_for(path)
        if onnx is not None:
            found["ONNX fallback"] = f"{onnx} (runs anywhere)"
    try:
        tiling = find_tiling_graph(path)
    except Exception:  # a damaged tiling sidecar is the tiling graph's problem, not this file's
        tiling = None
    if tiling is not None:
        found["tiling graph"] = f"{tiling} (whole-image statistics for large images)"
    return found


def _backend_rows(path: Path, meta: Sidecar) -> list[BackendRow]:
    from .backends import PREFERENCE, backend_present

    rows = []
    for entry in PREFERENCE:
        if entry.artifact != meta.kind:
            continue
        ok, why = backend_present(entry, providers=None)
        if ok and entry.backend == "tensorrt":
            ok, why = _engine_fits_here(path, meta)
        rows.append(BackendRow(entry.backend, entry.place, ok, why))
    return rows


def _engine_fits_here(path: Path, meta: Sidecar) -> tuple[bool, str]:
    """The engine's TensorRT version against the installed one (the GPU is checked when it is opened)."""
    from .artifact import check_tensorrt_version

    try:
        import tensorrt  # type: ignore[import-not-found]

        installed = tensorrt.__version__
    except ImportError:
        try:
            import tensorrt_lean as tensorrt  # type: ignore[import-not-found, no-redef]

            installed = tensorrt.__version__
        except ImportError:
            return False, "the tensorrt package is not installed"
    try:
        check_tensorrt_version(path, meta, installed)
    except Exception as exc:  # BackendUnavailableError / ModelFileError: report, do not raise
        return False, str(exc).split(". Fix")[0]
    return True, f"TensorRT {installed}; the GPU's compute capability must be {meta.compute_capability}"


def _fmt_shape(shape: Any) -> str:
    return "x".join(str(d) for d in shape) if shape else "-"


def format_info(info: ArtifactInfo) -> str:
    """The human-readable report (``nst-info PATH``)."""
    m = info.sidecar
    lines: list[tuple[str, str]] = [
        ("file", f"{info.path} ({info.size_bytes / 1e6:.1f} MB)"),
        ("sidecar", str(sidecar_path(info.path))),
        ("kind", f"{m.kind}, role {m.role}" + (f", architecture {m.architecture}" if m.architecture else "")),
        ("precision", m.precision),
        ("hash", {"verified": f"verified (sha256 {info.sha256})",
                  "MISMATCH": f"MISMATCH: the file is {info.sha256}, the sidecar says {m.artifact_sha256}; "
                              "the file was changed after export (nst-stylize refuses it; re-export)",
                  "not recorded": "not recorded in the sidecar (the file cannot be verified)",
                  "not checked": "not checked (--no-verify)"}[info.hash_status]),
        ("input", f"{m.input.name}: {m.input.dtype} {m.input.layout} {m.input.channels} in "
                  f"[{m.input.value_range[0]:g}, {m.input.value_range[1]:g}]"),
        ("output", f"{m.output.name}: {m.output.dtype} {m.output.layout} {m.output.channels} in "
                   f"[{m.output.value_range[0]:g}, {m.output.value_range[1]:g}]"),
        ("min size", f"{m.min_size} px (smaller images are padded)"),
    ]
    if m.style is not None:
        from .styles import style_names_text

        lines.append(("styles", f"{m.style.size} in one network, input {m.style.name!r} (float32 weights): "
                                f"{style_names_text(m.style)}; choose with --style NAME|INDEX|\"I:W,J:W\""))
    if m.adain is not None:
        lines.append(("style image", f"any (AdaIN): --style-image FILE; statistics from {m.adain.style_graph} "
                                     f"beside it ({m.adain.channels} channels), alpha = --strength"))
    if m.gflop_per_mpx is not None:
        lines.append(("cost", f"{m.gflop_per_mpx:.1f} GFLOP per megapixel"))
    if m.opset is not None:
        lines.append(("opset", str(m.opset)))
    if m.profile is not None:
        lines.append(("profile (NxHxW)", f"min {_fmt_shape(m.profile.min)}, opt {_fmt_shape(m.profile.opt)}, "
                                         f"max {_fmt_shape(m.profile.max)}"))
    if m.kind == "tensorrt":
        lines += [("TensorRT", f"{m.tensorrt_version or 'unknown'}"
                                 + (" (version-compatible)" if m.version_compatible else "")),
                  ("GPU", f"{m.gpu_name or 'unknown'}, compute capability {m.compute_capability or 'unknown'}")]
        if m.build_time_s is not None:
            lines.append(("build time", f"{m.build_time_s:.1f} s"))
    for label, value in (("checkpoint sha256", m.checkpoint_sha256), ("built from ONNX sha256", m.onnx_sha256)):
        if value:
            lines.append((label, value))
    p = m.parity or {}
    if p:
        psnr = p.get("min_psnr_db")
        lines.append(("parity", f"{'passed' if p.get('passed') else 'FAILED'}: max |diff| {p.get('max_abs_levels')} "
                                f"level(s), {'identical' if psnr is None else f'min PSNR {psnr:.1f} dB'} against "
                                f"{p.get('reference')} on {p.get('provider')}"))
        for image in p.get("images", []):
            ipsnr = image.get("psnr_db")
            lines.append(("", f"  {_fmt_shape(image.get('shape', [])[:3])}: max {image.get('max_abs_levels')} lvl, "
                              f"{'identical' if ipsnr is None else f'{ipsnr:.1f} dB'}"))
    else:
        lines.append(("parity", "not recorded"))
    if m.source:
        s = m.source
        lines.append(("source", f"{s.get('kind', '?')} {s.get('file', '')} (sha256 {s.get('sha256', '?')}), "
                                f"opset {s.get('opset', '?')}, input {_fmt_shape(s.get('input_shape'))} "
                                f"{s.get('layout', '')}, imported {s.get('mode', '?')}"))
        if s.get("catalog") or s.get("license"):  # a catalogue model (nst-models): where from, under which licence
            where = (f"{s.get('publisher', '')} {s['url']}" if s.get("url") else f"package {s['package']}"
                     if s.get("package") else f"added from {s.get('added_from', '?')}")
            lines.append(("origin", f"{s.get('catalog', '?')}: {where.strip()}; licence {s.get('license', 'unknown')}"))
        for reason in s.get("why_fixed", []):
            lines.append(("", f"  fixed size: {reason}"))
        for problem in s.get("tensorrt_lint", []):
            lines.append(("", f"  TensorRT lint: {problem}"))
    for label, where in info.companions.items():
        lines.append((label, where))
    lines.append(("created", f"{m.created_at or 'unknown'} by nst {m.nst_version} (sidecar schema "
                             f"{m.schema_version})"))
    lines.append(("backends here", "in the runtime's order of preference (nst_runtime.backends)"))
    first = next((r for r in info.backends if r.can_run), None)
    for row in info.backends:
        verdict = "can run it" + (" <- device auto picks this" if row is first else "") if row.can_run else "cannot"
        lines.append(("", f"  {row.backend} on {row.place}: {verdict}" + (f" ({row.reason})" if row.reason else "")))
    if not any(r.can_run for r in info.backends):
        lines.append(("", "  none: install what is named above, or use the ONNX file on another machine"))
    width = max(len(k) for k, _ in lines)
    return "\n".join(f"{k.ljust(width)}  {v}".rstrip() if k else f"{''.ljust(width)}  {v}" for k, v in lines)
