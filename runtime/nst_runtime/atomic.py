"""Atomic file writes: a temp file in the destination folder, fsync, rename.

Whoever reads the destination sees the old file or the complete new one, even if the writer is killed or
the disk fills up. It lives in the runtime (no heavy dependencies) so every stage shares one implementation.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from .errors import write_error


def _read_umask() -> int:
    # os.umask can only be read by setting it, which races with other threads; read it once, at import
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # persist the rename itself; not every filesystem allows it
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], *, suffix: str = ".tmp") -> Iterator[str]:
    """Yield a temp file name beside ``path`` for writers that want a name (Pillow, PyAV); when the block
    ends without error the temp file is fsynced and renamed over ``path``.

    On any error the temp file is removed and an ``OSError`` (disk full, no permission) becomes a one-line
    :class:`~nst_runtime.errors.WriteError` (still an ``OSError``); the previous file is left as it was. The
    new file gets the mode a plain ``open`` would give it (``mkstemp`` makes 0600).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise write_error(path, exc) from exc
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise write_error(path, exc) from exc
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO]:
    """Like :func:`atomic_output`, yielding an open file object (``mode`` "wb" or "w")."""
    with atomic_output(path) as tmp, open(tmp, mode) as f:
        yield f
