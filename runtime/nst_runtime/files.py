"""Reading files named by the user without trusting them: regular files only, small files capped.

A path may name a FIFO, a device (``/dev/zero``, ``/dev/stdin``) or a socket, directly or through a symlink:
reading one blocks for ever or never ends. Files are therefore opened non-blocking and checked with
``fstat`` on the open descriptor (no window between the check and the read) before a byte is read.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

from .errors import NstError


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def open_regular(path: str | os.PathLike[str], *, what: str, error: type[NstError]) -> BinaryIO:
    """Open ``path`` for binary reading if it is a regular file (symlinks followed), else raise ``error``
    naming the file, what it is and that ``what`` must be a regular file. Never blocks on a FIFO."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise error(f"{path}: no such file; {what} was expected here.") from None
    except OSError as exc:
        raise error(f"{path}: cannot open {what} ({exc.strerror or exc}).") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise error(f"{path}: is {_kind(mode)}; {what} must be a regular file. Fix: pass the file itself "
                        "(a copy on disk), not a pipe or device.")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def check_regular(path: str | os.PathLike[str], *, what: str, error: type[NstError]) -> None:
    """Raise ``error`` unless ``path`` is a regular file (checked by opening it, never blocking)."""
    open_regular(path, what=what, error=error).close()


def read_capped(path: str | os.PathLike[str], *, max_bytes: int, what: str, error: type[NstError]) -> bytes:
    """The bytes of the regular file ``path``, refused with ``error`` when it holds more than ``max_bytes``
    (read no further than that)."""
    with open_regular(path, what=what, error=error) as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise error(f"{path}: {what} larger than {max_bytes // 1024} KiB; refused unread (no nst file of this "
                    "kind is that large). Fix: re-export it.")
    return data
