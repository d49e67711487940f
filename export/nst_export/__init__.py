"""nst export stage: checkpoint -> ONNX (FP32, FP16) -> parity gate -> TensorRT engine -> Triton repository.

The main functions are importable from here (loaded on first use, so ``import nst_export`` stays cheap):
:func:`onnx_from_checkpoint`, :func:`fp16_onnx_from_onnx`, :func:`engine_from_onnx`,
:func:`triton_repo_from_artifact`, :func:`check_parity` and :class:`ParityTolerance`.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "onnx_from_checkpoint": "onnx_export",
    "fp16_onnx_from_onnx": "fp16",
    "engine_from_onnx": "tensorrt_engine",
    "triton_repo_from_artifact": "triton",
    "check_parity": "parity",
    "ParityTolerance": "parity",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'nst_export' has no attribute {name!r}")
