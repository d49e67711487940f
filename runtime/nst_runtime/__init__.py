"""nst lean runtime: run exported style networks without torch."""

from .errors import NstError

__all__ = ["NstError"]
