"""Atomic file writes: a temp file in the same folder, fsync, rename. A killed writer leaves the old file."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from nst_runtime.errors import write_error


def _read_umask() -> int:
    # os.umask can only be read by setting it, which races with other threads; read it once, at import
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO]:
    """Yield a file object; on success it replaces ``path`` atomically, on any error it is removed.

    An ``OSError`` while writing (a full disk, no permission) becomes a one-line
    :class:`~nst_runtime.errors.WriteError` (still an ``OSError``); the previous file is left as it was and
    no temp file remains. The new file gets the mode a plain ``open`` would give it (``mkstemp`` makes 0600).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise write_error(path, exc) from exc
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(OSError):
            os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
        with contextlib.suppress(OSError):  # persist the rename itself; not every filesystem allows it
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise write_error(path, exc) from exc
        raise
