"""ONNX Runtime backend: a loader (``SessionFromOnnx``) and a runner (``OnnxRuntimeRunner``).

Providers are tried TensorRT → CUDA → CPU, keeping those this onnxruntime build has. ``InferenceSession.run``
is thread-safe, so one session serves every thread.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._lazy import import_optional
from .errors import BackendUnavailableError, ModelFileError, UsageError
from .sidecar import Sidecar

logger = logging.getLogger(__name__)

PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
GPU_PROVIDERS = frozenset({"TensorrtExecutionProvider", "CUDAExecutionProvider"})
Device = int | str

ProviderSpec = str | tuple[str, dict[str, Any]]


def _ort() -> Any:
    return import_optional("onnxruntime", purpose="the ONNX Runtime backend",
                           install="pip install 'nst[runtime]' (or onnxruntime-gpu for CUDA)")


def select_providers(
    available: Sequence[str], *, device: Device = 0, requested: Sequence[str] | None = None
) -> list[ProviderSpec]:
    """Providers to use, best first, with the device id set on the GPU ones.

    ``device="cpu"`` keeps only the CPU provider. ``requested`` names providers explicitly (each must be
    available); otherwise TensorRT → CUDA → CPU, keeping the available ones.
    """
    if isinstance(device, str) and device.lower() != "cpu":
        raise UsageError(f"device {device!r}: expected a GPU index (0, 1, …) or 'cpu'.")
    if isinstance(device, int) and device < 0:
        raise UsageError(f"device {device}: expected a GPU index >= 0 or 'cpu'.")
    if requested:
        missing = [p for p in requested if p not in available]
        if missing:
            raise BackendUnavailableError(
                f"ONNX Runtime providers {missing} are not in this onnxruntime build (it has "
                f"{list(available)}). Fix: install onnxruntime-gpu for CUDA/TensorRT, or drop --providers."
            )
        names = list(requested)
    else:
        names = [p for p in PREFERENCE if p in available]
    if device == "cpu" or isinstance(device, str):
        names = [p for p in names if p not in GPU_PROVIDERS]
    if "CPUExecutionProvider" not in names:
        names.append("CPUExecutionProvider")
    return [(p, {"device_id": int(device)}) if p in GPU_PROVIDERS else p for p in names]


class SessionFromOnnx:
    """Loader: ONNX file → ``onnxruntime.InferenceSession`` (called lazily, on activation)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        providers: Sequence[ProviderSpec],
        intra_op_threads: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.providers = list(providers)
        self.intra_op_threads = intra_op_threads

    def __call__(self) -> Any:
        ort = _ort()
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if self.intra_op_threads:
            opts.intra_op_num_threads = self.intra_op_threads
        try:
            return ort.InferenceSession(str(self.path), sess_options=opts, providers=self.providers)
        except Exception as exc:  # onnxruntime raises its own pybind classes (InvalidProtobuf, Fail, …)
            raise ModelFileError(
                f"{self.path}: ONNX Runtime cannot load it ({type(exc).__name__}: {str(exc).strip()[:300]}). "
                "The file is corrupt or not an nst ONNX export. Fix: re-export with nst-export."
            ) from None


class OnnxRuntimeRunner:
    """Runner: uint8 NHWC batch in, uint8 NHWC batch out. A context manager; ``infer`` is thread-safe."""

    name = "onnxruntime"

    def __init__(self, load_session: SessionFromOnnx, *, sidecar: Sidecar) -> None:
        self._load = load_session
        self.sidecar = sidecar
        self._session: Any = None
        #: largest (N, H, W) one call takes; None: no limit but memory
        self.max_shape: tuple[int, int, int] | None = None

    @property
    def providers(self) -> list[str]:
        return list(self._session.get_providers()) if self._session is not None else []

    @property
    def on_gpu(self) -> bool:
        return any(p in GPU_PROVIDERS for p in self.providers)

    def activate(self) -> OnnxRuntimeRunner:
        if self._session is not None:
            return self
        session = self._load()
        inputs, outputs = session.get_inputs(), session.get_outputs()
        want_in, want_out = self.sidecar.input.name, self.sidecar.output.name
        if [i.name for i in inputs] != [want_in] or want_out not in [o.name for o in outputs]:
            raise ModelFileError(
                f"{self._load.path}: graph inputs {[i.name for i in inputs]} / outputs "
                f"{[o.name for o in outputs]}; the sidecar says {want_in!r} -> {want_out!r}. "
                "Fix: re-export with nst-export, which writes both together."
            )
        if inputs[0].type != "tensor(uint8)":
            raise ModelFileError(
                f"{self._load.path}: input {want_in!r} is {inputs[0].type}; expected tensor(uint8) "
                "(the uint8 NHWC contract). Fix: re-export with nst-export."
            )
        self._session = session
        logger.info("%s: onnxruntime providers %s", self._load.path.name, session.get_providers())
        return self

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Run one uint8 [N, H, W, 3] batch (H, W >= the sidecar's min_size)."""
        if self._session is None:
            raise UsageError("the runner is not active; use it inside `with` or call activate() first.")
        (out,) = self._session.run([self.sidecar.output.name], {self.sidecar.input.name: batch})
        return out

    def close(self) -> None:
        self._session = None

    def __enter__(self) -> OnnxRuntimeRunner:
        return self.activate()

    def __exit__(self, *exc: object) -> None:
        self.close()
