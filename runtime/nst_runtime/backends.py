"""Which backend runs which artifact on which device: one table, in order of preference.

``Stylizer.open(backend="auto")`` walks :data:`PREFERENCE` for the artifact's kind and the device and takes
the first backend that is present; an explicit ``backend=`` is checked against the same table, so every
refusal names what would work instead. :func:`choose_backend` returns the whole walk (:class:`BackendChoice`),
which ``nst-stylize -v`` prints, so the choice is never a mystery.

The order, and why (numbers in docs/runtime.md and benchmarks/results/):

====  ==============  ==========  =============================================================================
 #    backend         artifact    device and reason
====  ==============  ==========  =============================================================================
 1    tensorrt        engine      NVIDIA GPU: the only backend that runs an engine, and the fastest
 2    onnxruntime     onnx        NVIDIA GPU: ONNX Runtime's TensorRT/CUDA providers (onnxruntime-gpu)
 3    openvino        onnx        x86 CPU, when the openvino package is installed: faster than ONNX Runtime on
                                  nst's graph, runs INT8 QDQ files with integer kernels, and needs less memory
 4    onnxruntime     onnx        any CPU: always there (the runtime's one required engine)
====  ==============  ==========  =============================================================================

``device``: ``"cpu"`` keeps rows 3–4; ``"cuda"``/``"cuda:N"`` keeps rows 1–2 and refuses when none of them
is present; ``"auto"`` (and a bare GPU index, the older form) tries the GPU rows, then the CPU rows.
"""

from __future__ import annotations

import importlib.util
import logging
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from .devices import Device, parse_device
from .errors import BackendUnavailableError, UsageError

logger = logging.getLogger(__name__)

BackendName = Literal["tensorrt", "onnxruntime", "openvino"]
BACKEND_NAMES: tuple[str, ...] = ("auto", "tensorrt", "onnxruntime", "openvino")
Place = Literal["cuda", "cpu"]
X86_MACHINES = frozenset({"x86_64", "amd64", "i386", "i686", "x86"})


@dataclass(frozen=True)
class BackendEntry:
    """One row of the table: ``backend`` runs ``artifact`` files on ``place``; ``why`` it sits where it does."""

    backend: BackendName
    artifact: Literal["onnx", "tensorrt"]
    place: Place
    why: str


#: the order of preference (first present wins)
PREFERENCE: tuple[BackendEntry, ...] = (
    BackendEntry("tensorrt", "tensorrt", "cuda", "engines run only on TensorRT; fastest on NVIDIA GPUs"),
    BackendEntry("onnxruntime", "onnx", "cuda", "ONNX Runtime's TensorRT/CUDA providers on NVIDIA GPUs"),
    BackendEntry("openvino", "onnx", "cpu", "x86 CPUs: faster than ONNX Runtime on nst's graph, integer "
                                            "kernels for INT8 files, less memory"),
    BackendEntry("onnxruntime", "onnx", "cpu", "any CPU; always installed with the runtime"),
)


@dataclass(frozen=True)
class Candidate:
    """A row of the table as found on this machine."""

    backend: str
    place: Place
    present: bool
    reason: str


@dataclass(frozen=True)
class BackendChoice:
    """The backend chosen for an artifact and a device, with every row considered (for ``-v`` output)."""

    backend: BackendName
    place: Place
    candidates: tuple[Candidate, ...]
    requested: str

    def summary(self) -> str:
        """``backend openvino on cpu (auto: tensorrt – not an engine; …; openvino ✓; onnxruntime ✓)``."""
        walk = "; ".join(f"{c.backend}/{c.place} " + ("✓" if c.present else f"– {c.reason}")
                         for c in self.candidates)
        return f"backend {self.backend} on {self.place} ({self.requested}; order: {walk})"


def _gpu_providers() -> list[str]:
    """ONNX Runtime's GPU providers in this build ([] when onnxruntime is absent or CPU-only)."""
    if importlib.util.find_spec("onnxruntime") is None:
        return []
    from .onnxruntime_backend import GPU_PROVIDERS, _ort

    return [p for p in _ort().get_available_providers() if p in GPU_PROVIDERS]


def backend_present(entry: BackendEntry, *, providers: Sequence[str] | None) -> tuple[bool, str]:
    """Whether ``entry``'s backend can run here, and why not (cheap: finds modules, imports onnxruntime)."""
    if entry.backend == "tensorrt":
        if importlib.util.find_spec("tensorrt") is None and importlib.util.find_spec("tensorrt_lean") is None:
            return False, "the tensorrt package is not installed"
        return True, ""
    if entry.backend == "openvino":
        machine = platform.machine().lower()
        if machine not in X86_MACHINES:
            return False, f"not an x86 CPU ({machine}); ONNX Runtime is preferred there"
        if importlib.util.find_spec("openvino") is None:
            return False, "openvino is not installed (pip install 'nst[openvino]')"
        return True, ""
    if importlib.util.find_spec("onnxruntime") is None:
        return False, "onnxruntime is not installed (pip install 'nst[runtime]')"
    if entry.place == "cuda":
        gpu = [p for p in (providers or _gpu_providers()) if p != "CPUExecutionProvider"]
        if not gpu:
            return False, "this onnxruntime build has no TensorRT/CUDA provider (install onnxruntime-gpu)"
    return True, ""


def _places(device: Device | int | str | None) -> tuple[Place, ...]:
    if isinstance(device, int) and not isinstance(device, bool):
        return ("cuda", "cpu")  # the older form: a GPU index, with the CPU as fallback
    parsed = parse_device(device)
    if parsed.kind == "cpu":
        return ("cpu",)
    if parsed.kind == "cuda":
        return ("cuda",)
    if parsed.kind == "auto":
        return ("cuda", "cpu")
    raise UsageError(f"device {parsed}: the runtime runs on cpu or cuda (mps is for training only).")


def choose_backend(
    artifact: Literal["onnx", "tensorrt"],
    *,
    device: Device | int | str | None = "auto",
    requested: str = "auto",
    providers: Sequence[str] | None = None,
) -> BackendChoice:
    """Walk :data:`PREFERENCE` for ``artifact`` on ``device``; the first present row wins.

    ``requested``: ``"auto"`` or a backend name, which must have a row for ``artifact`` on ``device``.
    ``providers``: ONNX Runtime providers the caller asked for (a GPU one there means the GPU row is wanted).

    Raises:
        UsageError: an unknown backend name, or one that cannot run this artifact (the message says which can).
        BackendUnavailableError: no row for this artifact and device is present (the message lists why each
            is not).
    """
    if requested not in BACKEND_NAMES:
        raise UsageError(f"backend {requested!r}: expected one of {', '.join(BACKEND_NAMES)}.")
    places = _places(device)
    if providers is not None and places == ("cuda", "cpu"):
        # explicit ONNX Runtime providers: CPU only when they name no GPU provider
        if not any(p != "CPUExecutionProvider" for p in providers):
            places = ("cpu",)
    if requested == "tensorrt" and artifact == "onnx":
        raise UsageError(
            "the tensorrt backend runs engines (.engine/.plan); this is an ONNX file. Fix: build an engine with "
            "nst-export, or use --backend onnxruntime (its TensorRT provider is used when available)."
        )
    if requested in ("onnxruntime", "openvino") and artifact == "tensorrt":
        raise UsageError(
            f"a TensorRT engine runs only on the tensorrt backend, not {requested}. Fix: pass the ONNX file for "
            f"--backend {requested}, or drop --backend."
        )
    if requested == "tensorrt" and "cuda" not in places:
        raise UsageError("the tensorrt backend needs a GPU; device='cpu' works with ONNX files only.")
    if requested == "openvino" and "cpu" not in places:
        raise UsageError(
            f"the openvino backend runs on the CPU in nst; device {device!r} asks for a GPU. Fix: --device cpu, "
            "or --backend onnxruntime for the GPU."
        )
    rows = [e for p in places for e in PREFERENCE if e.place == p and e.artifact == artifact
            and requested in ("auto", e.backend)]
    candidates = []
    for entry in rows:
        ok, why = backend_present(entry, providers=providers)
        candidates.append(Candidate(entry.backend, entry.place, ok, why))
    chosen = next((c for c in candidates if c.present), None)
    if chosen is None:
        tried = "; ".join(f"{c.backend} on {c.place}: {c.reason}" for c in candidates) or "no backend runs it"
        what = "an ONNX file" if artifact == "onnx" else "a TensorRT engine"
        raise BackendUnavailableError(
            f"no backend here can run {what} on {'/'.join(places)} (backend {requested}): {tried}. Fix: install "
            "what is named, or choose another --device/--backend."
        )
    choice = BackendChoice(backend=chosen.backend, place=chosen.place,  # type: ignore[arg-type]
                           candidates=tuple(candidates), requested=requested)
    logger.info("%s", choice.summary())
    return choice


def backends_present(artifact: Literal["onnx", "tensorrt"] = "onnx", *, place: Place = "cpu") -> list[str]:
    """Every backend that can run ``artifact`` on ``place`` here, in order of preference (tests use it)."""
    return [e.backend for e in PREFERENCE
            if e.artifact == artifact and e.place == place and backend_present(e, providers=None)[0]]
