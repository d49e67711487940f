"""Atomic file writes (one implementation for every stage, in the torch-free runtime)."""

from nst_runtime.atomic import atomic_output, atomic_write

__all__ = ["atomic_output", "atomic_write"]
