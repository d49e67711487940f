"""Import heavy, optional modules at the edge, with an error that says how to get them.

``import nst_runtime`` must stay cheap and torch-free, so onnxruntime, tensorrt, cuda-python and PyAV are
only imported by the function that needs them, through :func:`import_optional`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import BackendUnavailableError


def import_optional(name: str, *, purpose: str, install: str) -> ModuleType:
    """Import ``name`` or raise :class:`BackendUnavailableError` naming ``purpose`` and the ``install`` fix."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise BackendUnavailableError(
            f"{purpose} needs the Python package {name!r}, which cannot be imported here ({exc}). "
            f"Fix: {install}."
        ) from exc
