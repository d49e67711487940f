"""The one exception hierarchy of nst.

It lives in the runtime (the package with no heavy dependencies) so that every stage can share it without
the runtime importing anything of the others. Messages say what was expected, what came, and how to fix it.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable

#: Every exit code of the nst commands and what it means (the exit_code of the class below, plus the
#: runner's own). Each command's ``--help`` prints the rows of the codes it can return; docs/robustness.md
#: shows the same table.
EXIT_CODES: dict[int, str] = {
    0: "success",
    1: "another error (a file system error nst did not anticipate)",
    2: "bad options or arguments (UsageError), e.g. an output that would replace an input",
    3: "a checkpoint, ONNX file or engine that cannot be used: unreadable, damaged, another kind",
    4: "an image or video that cannot be read (ImageError)",
    5: "the parity gate failed: the exported file differs from PyTorch and is not written",
    6: "a backend, GPU, nst stage or model download that is not available here; the message names what to install",
    7: "the VGG loss-network weights are not available",
    8: "some inputs of a batch failed; the others were written (BatchError)",
    9: "an output that cannot be written (no permission, disk full); the previous file is kept",
    130: "interrupted (Ctrl-C)",
    143: "stopped by SIGTERM (handled like Ctrl-C: cleanups run, no temp file is left)",
}


def exit_code_table(codes: Iterable[int] | None = None, *, indent: str = "  ") -> str:
    """The rows of :data:`EXIT_CODES` for ``codes`` (all when None), one ``code  meaning`` line each."""
    chosen = sorted(EXIT_CODES if codes is None else set(codes))
    width = max(len(str(c)) for c in chosen)
    return "\n".join(f"{indent}{c:>{width}}  {EXIT_CODES[c]}" for c in chosen)


class NstError(Exception):
    """Base of every error nst raises on purpose. Catch this to handle all of them."""

    #: process exit code the command-line tools use for this kind of error
    exit_code: int = 1


class UsageError(NstError):
    """A bad argument or option combination."""

    exit_code = 2


class CheckpointError(NstError):
    """A checkpoint that cannot be read, is corrupt, or holds another architecture."""

    exit_code = 3


class ModelFileError(NstError):
    """An ONNX file or engine that cannot be read, is corrupt, or does not match its sidecar."""

    exit_code = 3


class ImageError(NstError):
    """An image that cannot be decoded, has an unsupported format, or is too large."""

    exit_code = 4


class ParityError(NstError):
    """An exported artifact whose output differs from the PyTorch reference beyond the tolerance."""

    exit_code = 5


class BackendUnavailableError(NstError):
    """A backend (TensorRT, a GPU, ONNX Runtime's CUDA provider) that this machine does not have."""

    exit_code = 6


class WeightsUnavailableError(NstError):
    """Loss-network weights that could not be found or downloaded."""

    exit_code = 7


class DownloadError(NstError):
    """A catalogue model that could not be downloaded: a network error, a stalled server, a truncated transfer
    (``nst-models pull``). The message names the URL and how to add the file by hand (``nst-models add``)."""

    exit_code = 6


class ImageTooLargeError(ImageError):
    """An image over the pixel limit (the decompression-bomb guard): a kind of :class:`ImageError`, same exit
    code, told apart so that a service can answer it as "too large" (HTTP 413) rather than "bad" (400)."""


class MediaError(ImageError):
    """A video that cannot be decoded or encoded (a kind of :class:`ImageError`, same exit code)."""


class BatchError(NstError):
    """Some inputs of a batch (a folder, a list of files) failed; the others were written."""

    exit_code = 8


class WriteError(NstError, OSError):
    """An output file that could not be written (disk full, no permission, read-only filesystem).

    Writes are atomic, so the previous file at that path, if any, is left intact and no temp file remains.
    Also an :class:`OSError` (with ``errno`` set), so code that catches ``OSError`` keeps working.
    """

    exit_code = 9


def write_error(path: object, exc: OSError) -> WriteError:
    """The one-line :class:`WriteError` for an ``OSError`` raised while writing ``path``."""
    if isinstance(exc, WriteError):
        return exc
    why = exc.strerror or str(exc) or type(exc).__name__
    err = WriteError(f"{path}: cannot write ({why}); the previous file, if any, is unchanged. "
                     f"Fix: {_WRITE_FIXES.get(exc.errno, 'choose another output location')}.")
    err.errno = exc.errno
    return err


#: the fix a write failure calls for, by errno (a permission problem is not solved by freeing disk space)
_WRITE_FIXES: dict[int | None, str] = {
    errno.EACCES: "check the permissions of the folder, or choose another output location",
    errno.EPERM: "check the permissions of the folder, or choose another output location",
    errno.EROFS: "the file system is read-only: choose another output location",
    errno.ENOSPC: "free disk space or choose another output location",
    errno.EDQUOT: "free disk space (or raise your disk quota) or choose another output location",
    errno.EFBIG: "the file is larger than this file system allows: choose another output location",
}
